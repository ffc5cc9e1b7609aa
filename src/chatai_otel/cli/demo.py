"""``chatai-otel demo``: the example ChatAI backend and worker under the distro, a scripted workload, the result.

1. The backend starts as users start theirs, ``opentelemetry-instrument uvicorn
   chatai.main:app``; with Redis (``REDIS_URL``, or one answering on
   127.0.0.1:6379) the worker runs as its own process on a queue of this run's
   own, otherwise inside the backend on an in-process queue.
2. Both export OTLP to a receiver inside this command. When the configured
   endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, default localhost:4317) answers
   OTLP, every request is relayed there unchanged (with the configured headers);
   otherwise each is written to ``./telemetry/{traces,metrics,logs}.jsonl`` in
   the OTLP/JSON format the collector's ``otlpjsonfile`` receiver replays.
3. :mod:`chatai.workload` drives every feature, with a validation error, a
   wrong password, a forbidden action, a slow answer and a CRITICAL error whose
   alert goes to a webhook receiver started here.
4. With ``--browser`` (Node.js and Debian's Chromium present), the example frontend
   (``examples/frontend``, a Next.js static export) is served here first and its first steps
   (log in, open a dialog, send a message, upload a document) are clicked through in headless
   Chromium: the browser's telemetry goes through the backend's tunnel, and the upload's
   trace runs ``chatai-frontend -> chatai-backend -> chatai-worker``.
5. The apps stop (SIGTERM: they flush), and the terminal shows a waterfall of a
   few traces and a table of the metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.message import Message

from chatai_otel.cli.view import Collected, Style, pick_traces, render_metrics, render_trace
from chatai_otel.config import ConfigError, Settings, load_settings
from chatai_otel.export.forwarder import OTLPForwarder, probe
from chatai_otel.export.otlp_json import OTLPJsonWriter
from chatai_otel.testing.receiver import OTLPReceiver

__all__ = ["DemoOptions", "find_example", "run"]

EXAMPLE_ENV = "CHATAI_OTEL_EXAMPLE_DIR"
_SOURCE_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "chatai"


@dataclass
class DemoOptions:
    output: Path = Path("telemetry")
    redis: str = "auto"  # auto | off | a redis:// URL
    traces: int = 4
    example: Path | None = None
    browser: bool = False  # the frontend's first steps in headless Chromium first
    stream: TextIO = field(default_factory=lambda: sys.stdout)


def find_example(explicit: Path | None = None) -> Path | None:
    """The examples/chatai directory: given, from CHATAI_OTEL_EXAMPLE_DIR, or in the source tree."""
    for candidate in (explicit, os.environ.get(EXAMPLE_ENV), _SOURCE_EXAMPLE):
        if candidate and (Path(candidate) / "chatai" / "main.py").is_file():
            return Path(candidate).resolve()
    return None


# --- small local servers ------------------------------------------------------------------------


class AlertInbox:
    """A webhook receiver on loopback standing in for Slack/PagerDuty: keeps each alert it gets."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"text": body.decode(errors="replace")}
                with inbox._cond:
                    inbox.alerts.append(payload)
                    inbox._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def wait(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.alerts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(url: str, timeout: float = 0.5) -> bool:
    """PING over a plain socket: no client library, no side effects."""
    from urllib.parse import urlsplit

    parsed = urlsplit(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout
        ) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


# --- progress ------------------------------------------------------------------------------------


class Progress:
    """A one-line bar on a terminal; one line per step elsewhere (CI logs)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.style = Style(stream)

    def step(self, done: int, total: int, title: str) -> None:
        if not self.tty:
            print(f"  [{done:>2}/{total}] {title}", file=self.stream, flush=True)
            return
        width = 30
        filled = int(width * done / total)
        bar = (
            self.style.block * filled + "·" * (width - filled)
            if self.style.unicode
            else ("#" * filled + "." * (width - filled))
        )
        line = f"\r  {bar} {done:>2}/{total}  {title[:60]:<60}"
        self.stream.write(line)
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


# --- the run -------------------------------------------------------------------------------------


class Demo:
    def __init__(self, options: DemoOptions, settings: Settings, example: Path) -> None:
        self.options = options
        self.settings = settings
        self.example = example
        self.out = options.stream
        self.style = Style(self.out)
        self.collected = Collected()
        self.writer: OTLPJsonWriter | None = None
        self.forwarder: OTLPForwarder | None = None
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.requests = 0
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def on_request(self, signal_name: str, request: Message) -> None:
        """Every export request the apps send: kept for the view, then written or relayed."""
        with self._lock:
            self.requests += 1
        self.collected.add(signal_name, request)
        if self.forwarder is not None:
            self.forwarder.submit(signal_name, request)
        elif self.writer is not None:
            self.writer.write(signal_name, request)

    # --- processes --------------------------------------------------------------------------

    def start(self, name: str, args: list[str], env: dict[str, str], logs: Path, cwd: Path) -> None:
        log_path = logs / f"{name}.log"
        with log_path.open("wb") as sink:
            process = subprocess.Popen(
                args,
                cwd=str(cwd),
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((name, process, log_path))

    def wait_until(self, name: str, ready: Any, timeout: float) -> None:
        _, process, log_path = next(p for p in self.processes if p[0] == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the {name} exited with {process.returncode}:\n{_tail(log_path)}"
                )
            if ready(log_path):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the {name} was not ready after {timeout:.0f}s:\n{_tail(log_path)}")

    def stop_all(self, timeout: float = 20.0) -> None:
        for _name, process, _log in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process, _log in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"demo: the {name} did not stop in time; killed")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)

    # --- main -------------------------------------------------------------------------------

    def run(self) -> int:
        started = time.monotonic()
        style = self.style
        self.say(style.bold("chatai-otel demo") + " — the example ChatAI backend under the distro")

        target = probe("traces", self.settings.traces, timeout=1.5)
        output = self.options.output.resolve()
        logs_dir = output  # the apps' own stdout (their JSON log lines) goes here in both modes
        logs_dir.mkdir(parents=True, exist_ok=True)
        if target.ok:
            self.forwarder = OTLPForwarder(self.settings)
            self.say(f"  exporting to {target.endpoint} ({target.detail})")
        else:
            self.writer = OTLPJsonWriter(output)
            self.say(
                f"  no collector at {target.endpoint} ({_short(target.detail)}): "
                f"writing OTLP/JSON to {_relative(output)}/"
            )

        redis_url = self._redis_url()
        queue = f"chatai:demo:{uuid.uuid4().hex[:8]}:jobs"
        inbox = AlertInbox()
        database_dir = Path(tempfile.mkdtemp(prefix="chatai-demo-"))
        receiver = OTLPReceiver(keep=False, on_request=self.on_request).start()
        try:
            env = self._env(receiver, inbox, database_dir, redis_url, queue)
            store = output / "events.db"
            for stale in output.glob("events.db*"):
                stale.unlink()
            env.update(
                {
                    # the durable event store (chatai_otel.store.writer): every business event and
                    # error as a row, here in SQLite next to the files
                    "CHATAI_OTEL_STORE_URL": f"sqlite:///{store}",
                    "CHATAI_OTEL_STORE_CREATE_TABLES": "true",
                }
            )
            port = _free_port()
            browser = self._browser_tools() if self.options.browser else None
            page_port = _free_port()
            if browser is not None:
                env["CHATAI_FRONTEND_ORIGINS"] = f"http://127.0.0.1:{page_port}"
                env.setdefault("CHATAI_SIGNUP_CREDIT", "1")  # the browser's user can chat
            self.say(
                "  starting the backend: opentelemetry-instrument uvicorn chatai.main:app"
                + (f"; the worker on Redis list {queue}" if redis_url else "")
                + ("" if redis_url else " (no Redis: the worker runs inside the backend)")
            )
            self.start(
                "backend",
                [
                    *_script("opentelemetry-instrument"),
                    *_script("uvicorn"),
                    "chatai.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                ],
                {
                    **env,
                    "OTEL_SERVICE_NAME": "chatai-backend",
                    "CHATAI_OTEL_STORE_JOURNAL_DIR": str(database_dir / "journal-backend"),
                },
                logs_dir,
                database_dir,
            )
            base = f"http://127.0.0.1:{port}"
            self.wait_until("backend", lambda _p: _answers(base + "/health/live"), 60)
            if redis_url:
                self.start(
                    "worker",
                    [sys.executable, "-m", "chatai.worker"],
                    {
                        **env,
                        "OTEL_SERVICE_NAME": "chatai-worker",
                        "CHATAI_OTEL_STORE_JOURNAL_DIR": str(database_dir / "journal-worker"),
                    },
                    logs_dir,
                    database_dir,
                )
                self.wait_until("worker", lambda path: b"WORKER-READY" in path.read_bytes(), 60)

            if browser is not None:
                self._click_through(browser, base, page_port)
            self.say("  running the workload:")
            report = self._workload(base)
            alerted = inbox.wait(1, 10.0)
            self.say("  stopping the apps (they flush their telemetry on SIGTERM)")
            self.stop_all()
            time.sleep(0.3)
        finally:
            self.stop_all()
            receiver.stop()
            inbox.close()
            shutil.rmtree(database_dir, ignore_errors=True)
            if redis_url:
                _delete_queue(redis_url, queue)
        delivered = self._close_sinks()
        self._show(report, inbox, alerted, target.ok, output, delivered)
        took = time.monotonic() - started
        self.say(style.dim(f"demo finished in {took:.1f} s"))
        problems = list(report.failures) + ([] if alerted else ["no alert reached the webhook"])
        return 1 if problems else 0

    def _browser_tools(self) -> Any:
        """``tools/frontend.py`` of the source tree, or None (and why) when it cannot run."""
        tools = self.example.parents[1] / "tools" / "frontend.py"
        missing = [
            what
            for what, there in (
                ("Node.js (node, npm)", shutil.which("node") and shutil.which("npm")),
                ("Chromium (/usr/bin/chromium)", Path("/usr/bin/chromium").exists()),
                (f"the frontend's tools ({tools})", tools.is_file()),
            )
            if not there
        ]
        if missing:
            self.say(self.style.red(f"  --browser: skipped, missing {', '.join(missing)}"))
            return None
        import importlib.util

        spec = importlib.util.spec_from_file_location("chatai_frontend_tools", tools)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.say("  building the frontend (examples/frontend; cached after the first time)")
        try:
            module.build()
        except Exception as error:  # a failed npm ci or next build: say it, run the rest
            self.say(self.style.red(f"  --browser: skipped, {_first_line(str(error))}"))
            return None
        return module

    def _click_through(self, tools: Any, backend: str, port: int) -> None:
        """The workload's first steps done by clicking through the page in headless Chromium."""
        steps = [
            {"action": "goto"},
            {"action": "login", "email": "browser@example.com", "password": "browser-pass-1"},
            {"action": "openDialog"},
            {"action": "send", "text": "Hello from the browser"},
            {"action": "upload", "name": "browser-notes.txt"},
            {"action": "flush"},
        ]
        with tools.FrontendServer(tools.build(), backend, port=port) as page:
            self.say(f"  the frontend on {page.url}: clicking through it in headless Chromium")
            try:
                seen = tools.drive(page.url, steps)
            except Exception as error:
                self.say(self.style.red(f"  browser steps failed: {_first_line(str(error))}"))
                return
        for status in seen.get("statuses", []):
            self.say(f"    {status}")
        time.sleep(1.0)  # the upload's job runs in the worker meanwhile

    def _redis_url(self) -> str | None:
        choice = self.options.redis
        if choice == "off":
            return None
        if choice != "auto":
            return choice
        url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        return url if _redis_answers(url) else None

    def _env(
        self,
        receiver: OTLPReceiver,
        inbox: AlertInbox,
        database_dir: Path,
        redis_url: str | None,
        queue: str,
    ) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            # the apps talk to the embedded receiver; its relay applies the user's endpoint
            # settings (headers, TLS, compression) when forwarding
            if not key.startswith("OTEL_EXPORTER_OTLP_")
        }
        env.update(receiver.env("grpc"))
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(self.example), env.get("PYTHONPATH")) if p
                ),
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_BLRP_SCHEDULE_DELAY": "200",
                "CHATAI_OTEL_LOG_FORMAT": "json",
                "CHATAI_OTEL_ALERT_WEBHOOK_URL": inbox.url,
                # relative to the apps' working directory (database_dir): spans say chatai.db
                "DATABASE_URL": "sqlite:///chatai.db",
                "CHATAI_QUEUE": queue,
                "CHATAI_RATE_LIMIT_PREFIX": queue.removesuffix(":jobs") + ":rl",
            }
        )
        env.setdefault("CHATAI_OTEL_ENVIRONMENT", "demo")
        env.pop("DATABASE_SCHEMA", None)
        if redis_url:
            env["REDIS_URL"] = redis_url
        else:
            env.pop("REDIS_URL", None)
        return env

    def _show_store(self, path: Path) -> None:
        rows = _store_rows(path)
        if rows is None:
            self.say(self.style.red(f"Durable store: nothing in {_relative(path)}"))
            return
        events, errors = rows
        self.say(
            f"{self.style.bold('Durable store')} ({_relative(path)}, SQLite): "
            f"{sum(n for _t, n in events)} rows in business_event_log, "
            f"{sum(n for *_k, n in errors)} in error_log "
            f"({', '.join(f'{c}/{s} {n}' for c, s, n in errors)})"
        )

    def _workload(self, base: str) -> Any:
        sys.path.insert(0, str(self.example))
        try:
            from chatai.workload import Workload
        finally:
            sys.path.remove(str(self.example))
        progress = Progress(self.out)
        return Workload(base).run(progress.step)

    def _close_sinks(self) -> str:
        if self.forwarder is not None:
            complete = self.forwarder.close(15.0)
            forwarder = self.forwarder
            text = f"relayed {forwarder.forwarded} export requests"
            if forwarder.failed or forwarder.dropped or not complete:
                text += (
                    f" ({forwarder.failed} failed, {forwarder.dropped} dropped"
                    f"{'' if complete else ', gave up waiting'}; last error: {forwarder.last_error})"
                )
            return text
        if self.writer is not None:
            self.writer.close()
            lines = self.writer.lines
            return ", ".join(f"{lines[s]} {s} requests" for s in ("traces", "metrics", "logs"))
        return ""

    def _show(
        self,
        report: Any,
        inbox: AlertInbox,
        alerted: bool,
        relayed: bool,
        output: Path,
        delivered: str,
    ) -> None:
        style = self.style
        out = self.out
        spans = self.collected.spans()
        logs = self.collected.logs()
        print(file=out)
        status = (
            f"{report.requests} requests, all answered as the script expects"
            if not report.failures
            else style.red(f"{len(report.failures)} unexpected: " + "; ".join(report.failures))
        )
        self.say(f"{style.bold('Workload')}: {status}")
        self.say(
            f"{style.bold('Received')}: {len(spans)} spans, {len(logs)} log records, "
            f"{len(self.collected.metrics.names())} metrics in {self.requests} export requests"
        )
        print(file=out)
        for trace in pick_traces(spans, self.options.traces):
            render_trace(trace, out)
            print(file=out)
        render_metrics(self.collected.metrics, logs, out)
        self._show_store(output / "events.db")
        if inbox.alerts:
            alert = inbox.alerts[0]
            self.say(
                style.bold("Alert webhook")
                + f": {len(inbox.alerts)} received; the first says: "
                + _first_line(str(alert.get("text", alert)))
            )
        elif not alerted:
            self.say(style.red("Alert webhook: nothing arrived within 10 s"))
        print(file=out)
        if relayed:
            self.say(f"Telemetry: {delivered} to {self.settings.traces.endpoint}.")
            self.say(
                "  Open Jaeger (http://localhost:16686 with `./dev stack up` or "
                "`docker compose up`) to browse it."
            )
        else:
            rel = _relative(output)
            self.say(f"Telemetry: {delivered} in {rel}/ (OTLP/JSON, one request per line).")
            self.say(f"  chatai-otel view {rel}            the waterfall again, any trace")
            self.say(
                "  ./dev stack up (or docker compose up), then replay into Jaeger with "
                "collector/replay.yaml (docs/stack.md: Replaying the demo)"
            )
        self.say(
            f"  app logs: {_relative(output)}/backend.log"
            + (f", {_relative(output)}/worker.log" if len(self.processes) > 1 else "")
        )


def _store_rows(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]] | None:
    """Business events by type and errors by category/severity in the store's SQLite file."""
    import sqlite3

    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            events = conn.execute(
                "SELECT event_type, count(*) FROM business_event_log GROUP BY 1 ORDER BY 1"
            ).fetchall()
            errors = conn.execute(
                "SELECT category, severity, count(*) FROM error_log GROUP BY 1, 2 ORDER BY 1"
            ).fetchall()
        return events, errors
    except sqlite3.Error:
        return None


def _short(detail: str) -> str:
    """The gist of a probe failure for one line of output (doctor shows all of it)."""
    lowered = detail.lower()
    for gist in ("connection refused", "timed out", "deadline exceeded", "name resolution"):
        if gist in lowered:
            return gist
    return detail if len(detail) <= 80 else detail[:79] + "…"


def _script(name: str) -> list[str]:
    """A console script of this interpreter's environment (else on PATH; uvicorn via -m)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return [str(here)]
    found = shutil.which(name)
    if found:
        return [found]
    if name == "uvicorn":
        return [sys.executable, "-m", "uvicorn"]
    raise RuntimeError(f"{name} is not installed in this environment ({sys.executable})")


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) < 500
    except OSError:
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:160]


def _delete_queue(url: str, queue: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1)
        client.delete(queue)
        client.close()
    except Exception:
        pass


def run(options: DemoOptions) -> int:
    """Run the demo; 0 when the workload went as scripted and the alert arrived, 1 otherwise,
    2 for a configuration problem."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatai-otel: configuration error: {error}", file=sys.stderr)
        return 2
    example = find_example(options.example)
    if example is None:
        print(
            "chatai-otel demo: the example app (examples/chatai) was not found. It ships with the "
            "source: git clone the repository and run ./dev demo there, or point "
            f"{EXAMPLE_ENV} at an examples/chatai directory.",
            file=sys.stderr,
        )
        return 2
    missing = [m for m in ("fastapi", "uvicorn", "sqlalchemy", "aiosqlite") if not _importable(m)]
    if missing:
        print(
            f"chatai-otel demo: missing {', '.join(missing)}; install chatai-otel[example]",
            file=sys.stderr,
        )
        return 2
    try:
        return Demo(options, settings, example).run()
    except RuntimeError as error:
        print(f"chatai-otel demo: {error}", file=sys.stderr)
        return 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
