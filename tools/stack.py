"""The bundled stack on the local loopback, without Docker: the same configs as compose.

Processes: our collector distribution (``otelcol-chatai`` with ``collector/otel-collector.yaml``),
Jaeger v2 (``collector/jaeger/config.yaml``), Prometheus (Debian's server, with
``collector/prometheus/prometheus.yml`` and its rules, the targets moved to loopback),
Alertmanager (Debian's, with ``collector/alertmanager/alertmanager.yml``, its webhooks moved
to a local webhook that writes what it receives to ``alerts.jsonl``), the webhook itself, and
an OTLP/HTTP receiver standing in for Loki (Loki is not built here). The collector and Jaeger
configs read their addresses from ``${env:...}`` with the compose values as defaults, so the
files run unchanged; Prometheus' and Alertmanager's have no variables and are copied with
the compose host names replaced.

    ./dev stack up      on the compose ports (4317/4318, 16686, 9090, 9093), logs in .stack/
    ./dev stack down

The tests start a :class:`Stack` of their own on free ports (``Ports.free()``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools import binaries

ROOT = binaries.ROOT
COLLECTOR = ROOT / "collector"
STACK_FOLDER = ROOT / ".stack"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on; the defaults are the compose file's published ones."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    collector_health: int = 13133
    collector_zpages: int = 55679
    collector_metrics: int = 8889  # the prometheus exporter: the apps' metrics
    collector_telemetry: int = 8888  # the collector's own otelcol_* metrics
    jaeger_otlp_grpc: int = 4327
    jaeger_otlp_http: int = 4328
    jaeger_ui: int = 16686
    jaeger_grpc: int = 16685
    jaeger_health: int = 13134
    jaeger_telemetry: int = 8887
    prometheus: int = 9090
    alertmanager: int = 9093
    webhook: int = 9097
    loki: int = 3100

    @classmethod
    def free(cls) -> Ports:
        """A free loopback port for each (for tests that run beside a dev stack)."""
        sockets = []
        try:
            for _ in dataclasses.fields(cls):
                sock = socket.socket()
                sock.bind((HOST, 0))
                sockets.append(sock)
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()


@dataclass
class Options:
    """What a test run changes: faster intervals, extra rule files, where logs go."""

    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    spanmetrics_flush_interval: str = "15s"
    extra_rule_files: Sequence[Path] = ()
    loki_endpoint: str | None = None  # None: start the stand-in receiver
    collector_log_level: str = "info"
    extra_env: dict[str, str] = field(default_factory=dict)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.3):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(200 <= answer.status < 300)
    except OSError:
        return False


class Stack:
    """The stack's processes, started and stopped together; logs in ``folder``."""

    def __init__(self, ports: Ports, folder: Path, options: Options | None = None) -> None:
        self.ports = ports
        self.folder = folder
        self.options = options or Options()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.otelcol = binaries.build_otelcol()
        self.jaeger = binaries.build_jaeger()

    # --- addresses ---------------------------------------------------------------------

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.otlp_grpc}"

    @property
    def jaeger_url(self) -> str:
        return f"http://{HOST}:{self.ports.jaeger_ui}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.ports.alertmanager}"

    @property
    def alerts_file(self) -> Path:
        return self.folder / "alerts.jsonl"

    def collector_env(self) -> dict[str, str]:
        p = self.ports
        loki = self.options.loki_endpoint or f"http://{HOST}:{p.loki}"
        return {
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{HOST}:{p.otlp_grpc}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{HOST}:{p.otlp_http}",
            "OTELCOL_HEALTH_ENDPOINT": f"{HOST}:{p.collector_health}",
            "OTELCOL_ZPAGES_ENDPOINT": f"{HOST}:{p.collector_zpages}",
            "OTELCOL_PROMETHEUS_ENDPOINT": f"{HOST}:{p.collector_metrics}",
            "OTELCOL_TELEMETRY_PORT": str(p.collector_telemetry),
            "OTELCOL_HOST_ROOT": "/",
            "OTELCOL_LOG_LEVEL": self.options.collector_log_level,
            "OTELCOL_SPANMETRICS_FLUSH_INTERVAL": self.options.spanmetrics_flush_interval,
            "JAEGER_OTLP_ENDPOINT": f"{HOST}:{p.jaeger_otlp_grpc}",
            "LOKI_OTLP_ENDPOINT": loki,
            **self.options.extra_env,
        }

    def jaeger_env(self) -> dict[str, str]:
        p = self.ports
        return {
            "JAEGER_OTLP_GRPC_ENDPOINT": f"{HOST}:{p.jaeger_otlp_grpc}",
            "JAEGER_OTLP_HTTP_ENDPOINT": f"{HOST}:{p.jaeger_otlp_http}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"{HOST}:{p.jaeger_ui}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"{HOST}:{p.jaeger_grpc}",
            "JAEGER_HEALTH_ENDPOINT": f"{HOST}:{p.jaeger_health}",
            "JAEGER_TELEMETRY_PORT": str(p.jaeger_telemetry),
            "JAEGER_PROMETHEUS_URL": self.prometheus_url,
            # Jaeger traces its own query API to localhost:4317 unless told not to
            "OTEL_TRACES_SAMPLER": "always_off",
        }

    # --- configs without variables -------------------------------------------------------

    def prometheus_config(self) -> Path:
        """prometheus.yml with the compose host names moved to loopback ports."""
        p = self.ports
        moved = {
            "otel-collector:8889": p.collector_metrics,
            "otel-collector:8888": p.collector_telemetry,
            "jaeger:8888": p.jaeger_telemetry,
            "loki:3100": p.loki,
            "alertmanager:9093": p.alertmanager,
            "localhost:9090": p.prometheus,
        }
        config = yaml.safe_load((COLLECTOR / "prometheus" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = self.options.scrape_interval
        config["global"]["scrape_timeout"] = min(self.options.scrape_interval, "10s", key=_seconds)
        config["global"]["evaluation_interval"] = self.options.evaluation_interval
        config["rule_files"] = [
            str(COLLECTOR / "prometheus" / "rules" / "*.yml"),
            *(str(path) for path in self.options.extra_rule_files),
        ]
        for group in config["alerting"]["alertmanagers"]:
            for static in group["static_configs"]:
                static["targets"] = [f"{HOST}:{moved[t]}" for t in static["targets"]]
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [f"{HOST}:{moved[t]}" for t in static["targets"]]
        path = self.folder / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def alertmanager_config(self) -> Path:
        """alertmanager.yml with its webhook URLs moved to the local webhook."""
        text = (COLLECTOR / "alertmanager" / "alertmanager.yml").read_text()
        text = text.replace("http://alert-webhook.invalid/", f"http://{HOST}:{self.ports.webhook}/")
        path = self.folder / "alertmanager.yml"
        path.write_text(text)
        return path

    # --- processes ---------------------------------------------------------------------

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(ROOT),
            start_new_session=True,
        )
        log.close()

    def start_collector(self, prefix: Sequence[str] = ()) -> None:
        """The collector alone (``prefix`` wraps its command: ``taskset`` in the benchmarks)."""
        config = COLLECTOR / "otel-collector.yaml"
        self._start(
            "otelcol", [*prefix, str(self.otelcol), "--config", str(config)], self.collector_env()
        )

    def start_jaeger(self) -> None:
        """Jaeger alone, with collector/jaeger/config.yaml."""
        config = COLLECTOR / "jaeger" / "config.yaml"
        self._start("jaeger", [str(self.jaeger), "--config", str(config)], self.jaeger_env())

    def stop_collector(self, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop("otelcol", None)
        if process is not None:
            _stop(process, sig)

    def start(self, timeout: float = 60.0) -> Stack:
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.ports
        prometheus = shutil.which("prometheus") or "prometheus"
        alertmanager = (
            shutil.which("prometheus-alertmanager")
            or shutil.which("alertmanager")
            or "alertmanager"
        )
        self._start(
            "webhook",
            [sys.executable, __file__, "webhook", str(p.webhook), str(self.alerts_file)],
        )
        if self.options.loki_endpoint is None:
            self._start(
                "loki-standin",
                [sys.executable, "-m", "chatai_otel.testing.receiver", "--http-port", str(p.loki)],
            )
        self.start_jaeger()
        self.start_collector()
        self._start(
            "alertmanager",
            [alertmanager, f"--config.file={self.alertmanager_config()}",
             f"--storage.path={self.folder / 'alertmanager-data'}",
             f"--web.listen-address={HOST}:{p.alertmanager}", "--cluster.listen-address="],
        )  # fmt: skip
        self._start(
            "prometheus",
            [prometheus, f"--config.file={self.prometheus_config()}",
             f"--storage.tsdb.path={self.folder / 'prometheus-data'}",
             f"--web.listen-address={HOST}:{p.prometheus}", "--web.enable-lifecycle",
             "--enable-feature=exemplar-storage"],
        )  # fmt: skip
        self.wait_ready(timeout)
        return self

    def readiness(self) -> dict[str, bool]:
        p = self.ports
        return {
            "otelcol": _http_ok(f"http://{HOST}:{p.collector_health}/"),
            "jaeger": _http_ok(f"http://{HOST}:{p.jaeger_health}/status"),
            "prometheus": _http_ok(f"{self.prometheus_url}/-/ready"),
            "alertmanager": _http_ok(f"{self.alertmanager_url}/-/ready"),
            "webhook": _port_open(p.webhook),
        }

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.readiness()
            if all(states.values()):
                return
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}: {self.log(name)}")
            if time.monotonic() > deadline:
                waiting = [name for name, ok in states.items() if not ok]
                raise RuntimeError(f"not ready after {timeout:.0f} s: {waiting}")
            time.sleep(0.2)

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self) -> None:
        for name in list(self.processes)[::-1]:
            _stop(self.processes.pop(name))

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60}
    for unit in ("ms", "s", "m"):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    return float(duration)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


# --- the local webhook Alertmanager notifies -------------------------------------------------


def serve_webhook(port: int, out: Path) -> None:
    """Append every notification (one JSON document per POST) to ``out``, one per line."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                document = {"path": self.path, "body": json.loads(body)}
            except ValueError:
                document = {"path": self.path, "body": body.decode("utf-8", "replace")}
            with out.open("a") as handle:
                handle.write(json.dumps(document) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer((HOST, port), Handler).serve_forever()


def read_alerts(path: Path) -> Iterator[dict[str, Any]]:
    if path.exists():
        for line in path.read_text().splitlines():
            yield json.loads(line)


# --- ./dev stack up / down --------------------------------------------------------------------


def up() -> int:
    ports = Ports()
    busy = [
        f"{name}={port}" for name, port in dataclasses.asdict(ports).items() if _port_open(port)
    ]
    if busy:
        print(f"dev: ports in use: {', '.join(busy)} (./dev stack down, or stop what holds them)",
              file=sys.stderr)  # fmt: skip
        return 1
    STACK_FOLDER.mkdir(exist_ok=True)
    stack = Stack(ports, STACK_FOLDER)
    try:
        stack.start()
    except RuntimeError as error:
        stack.stop()
        print(f"dev: the stack did not start: {error}", file=sys.stderr)
        return 1
    (STACK_FOLDER / "pids.json").write_text(json.dumps(stack.pids()))
    print(
        "\n".join(
            [
                "the stack runs on loopback (logs in .stack/):",
                f"  OTLP         grpc {HOST}:{ports.otlp_grpc}  http {HOST}:{ports.otlp_http}",
                f"  Jaeger       {stack.jaeger_url}",
                f"  Prometheus   {stack.prometheus_url}",
                f"  Alertmanager {stack.alertmanager_url}  (notifications: .stack/alerts.jsonl)",
                "  ./dev demo relays into it; ./dev stack down stops it",
            ]
        )
    )
    return 0


def down() -> int:
    pids_file = STACK_FOLDER / "pids.json"
    if not pids_file.exists():
        print("dev: no stack is running (no .stack/pids.json)", file=sys.stderr)
        return 0
    for _name, pid in json.loads(pids_file.read_text()).items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    pids_file.unlink()
    print("the stack is stopped")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down")
    webhook = commands.add_parser("webhook")
    webhook.add_argument("port", type=int)
    webhook.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "up":
        return up()
    if args.command == "down":
        return down()
    serve_webhook(args.port, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
