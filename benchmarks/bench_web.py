"""Web layer overhead: one FastAPI app four ways, side by side, interleaved rounds, medians.

Arms (``benchmarks/web_app.py``):

* ``bare``   — uvicorn, no telemetry;
* ``chatai`` — ``opentelemetry-instrument`` with chatai-otel: traces, metrics and logs
  over OTLP/gRPC to a local receiver in its own process, 100 % sampling, one access
  log line per request (stdout to a file);
* ``collector`` — the ``chatai`` arm exporting to ``otelcol-chatai``, our collector built
  from ``collector/builder-config.yaml``, running the bundled ``collector/otel-collector.yaml``
  (memory limiter, scrubbing, batching, spanmetrics, the Prometheus exporter); its Jaeger and
  Loki exporters point at a counting receiver, which counts what came through;
* ``stock``  — ``opentelemetry-instrument`` with the stock distro and configurator
  (``opentelemetry-distro``), in a separate virtualenv (``.venv-stock``) where
  chatai-otel is not even installed, exporting traces, metrics and logs the same way;
* ``seed``   — the seed's BaseHTTPMiddleware logging request start and completion as JSON.

Load: ``wrk`` from its own process (taskset: servers on CPU 0, wrk, the receivers and the
collector on CPU 1), uvicorn with one worker. All arms' servers run for the whole benchmark, idle
but for the one being measured; each round measures ``/ping`` and then ``/chat`` (one
SELECT through SQLAlchemy; SQLite, or PostgreSQL with ``--postgres``) on every arm back
to back in a rotated order. The table reports medians over rounds; the ratio to
``bare`` is the median of per-round ratios (measurements seconds apart, so a change in
the machine's load between rounds cancels out). Each telemetry arm exports to its own
receiver process, so what it delivered is counted exactly. The server's CPU time per
request (all its threads, from /proc) is reported beside req/s: it is what an arm costs
whatever share of the core it got while other work ran on the machine.

After the table: what scrubbing every span's attributes at export costs the export thread
(``OtlpSpanEncoder`` on 512 server spans with the attributes a request and app code put
there, against the same encoder with scrubbing replaced by the identity; in-process,
interleaved, medians). It is off the request path: the request thread only queues the span.

    python -m benchmarks web [--rounds N] [--seconds S] [--connections C] [--postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from benchmarks.receiver_process import receiver_counts, receiver_process

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
STOCK_VENV = ROOT / ".venv-stock"
ARMS = ("bare", "chatai", "collector", "stock", "seed")
TELEMETRY_ARMS = ("chatai", "collector", "stock")
ENDPOINTS = ("/ping", "/chat")
# What the stock arm installs, pinned to the versions of this virtualenv.
STOCK_PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "uvicorn",
    "h11",
    "sqlalchemy",
    "psycopg",
    "psycopg-binary",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-sqlalchemy",
    "opentelemetry-semantic-conventions",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _taskset(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def ensure_stock_venv() -> Path:
    """A virtualenv with the stock distro and the same library versions, without chatai-otel."""
    stamp = STOCK_VENV / ".bench-stock"
    pins = []
    for name in STOCK_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    pins.append(f"opentelemetry-distro=={metadata.version('opentelemetry-instrumentation')}")
    wanted = "\n".join(pins)
    if stamp.exists() and stamp.read_text() == wanted:
        return STOCK_VENV / "bin"
    print(f"bench_web: creating {STOCK_VENV} (stock opentelemetry-distro)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(STOCK_VENV)], check=True)
    subprocess.run(
        [str(STOCK_VENV / "bin" / "python"), "-m", "pip", "install", "-q", *pins], check=True
    )
    stamp.write_text(wanted)
    return STOCK_VENV / "bin"


def _receiver_on_cpu_1() -> contextlib.AbstractContextManager[dict[str, int]]:
    """A counting OTLP receiver in its own process, on the load generator's CPU."""
    return receiver_process(_taskset(1))


@contextlib.contextmanager
def _collector_on_cpu_1(receiver: dict[str, int], work: Path) -> Iterator[dict[str, int]]:
    """otelcol-chatai with the bundled config on CPU 1, its Jaeger and Loki exporters pointed
    at ``receiver``; yields the ports an app sends to (and the receiver's, for its counts)."""
    from tools.stack import Options, Ports, Stack

    ports = dataclasses.replace(Ports.free(), jaeger_otlp_grpc=receiver["grpc_port"])
    loki = f"http://127.0.0.1:{receiver['http_port']}"
    collector = Stack(ports, work / "collector", Options(loki_endpoint=loki))
    collector.start_collector(prefix=_taskset(1))
    try:
        deadline = time.monotonic() + 60
        while not collector.readiness()["otelcol"]:
            if time.monotonic() > deadline:
                sys.exit(f"otelcol-chatai did not start:\n{collector.log('otelcol')}")
            time.sleep(0.2)
        yield {"grpc_port": ports.otlp_grpc, "http_port": receiver["http_port"]}
    finally:
        collector.stop_collector()  # SIGTERM: it flushes what it holds to the receiver


def _server_command(arm: str, port: int, stock_bin: Path) -> list[str]:
    uvicorn_args = [
        "web_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if arm in ("chatai", "collector"):
        return [
            str(VENV_BIN / "opentelemetry-instrument"),
            str(VENV_BIN / "uvicorn"),
            *uvicorn_args,
        ]
    if arm == "stock":
        return [
            str(stock_bin / "opentelemetry-instrument"),
            str(stock_bin / "uvicorn"),
            *uvicorn_args,
        ]
    return [str(VENV_BIN / "uvicorn"), *uvicorn_args]


def _server_env(arm: str, ports: dict[str, int], db_url: str, table: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env.update(
        {
            "PYTHONPATH": str(HERE),
            "BENCH_MODE": arm,
            "BENCH_DB_URL": db_url,
            "BENCH_TABLE": table,
        }
    )
    if arm in TELEMETRY_ARMS:
        env.update(
            {
                "OTEL_SERVICE_NAME": f"bench-{arm}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc_port']}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
            }
        )
    if arm in ("chatai", "collector"):
        env.update(
            {
                "OTEL_PYTHON_DISTRO": "chatai_otel",
                "OTEL_PYTHON_CONFIGURATOR": "chatai_otel",
                "CHATAI_OTEL_LOG_FORMAT": "json",
            }
        )
    if arm == "stock":
        # the stock distro and configurator, explicitly (chatai-otel is not installed there)
        env.update({"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"})
    return env


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0, path: str = "/chat"
) -> None:
    """Until ``url + path`` answers 200; RuntimeError when the server exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + path, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


_WRK_LATENCY = re.compile(r"^\s*(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, seconds: float, connections: int, server_pid: int = 0) -> dict[str, float]:
    """req/s, p50 and p99 (ms) from one wrk run; with ``server_pid``, also the server's CPU
    µs per request (what the arm costs, whatever share of the core it got meanwhile)."""
    cpu_before = cpu_seconds(server_pid) if server_pid else float("nan")
    out = subprocess.run(
        [
            *_taskset(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {m[0]: float(m[1]) * _UNIT[m[2]] for m in _WRK_LATENCY.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (cpu_seconds(server_pid) - cpu_before) if server_pid else float("nan")
    return {
        "rps": rps,
        "p50": latency["50"],
        "p99": latency["99"],
        "cpu_us": cpu / max(requests, 1) * 1e6,
        "requests": requests,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench web", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="run /chat against PostgreSQL (default URL: the test database)",
    )
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench_web needs wrk (Debian: apt-get install wrk)")
    arms = [a for a in args.arms.split(",") if a]
    stock_bin = ensure_stock_venv() if "stock" in arms else VENV_BIN
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    table = f"bench_web_{os.getpid()}"
    db_url = args.postgres or f"sqlite:///{work / 'bench.db'}"
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    delivered: dict[str, dict[str, int]] = {}
    requests_served: dict[str, dict[str, int]] = {}
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        # One receiver per telemetry arm, so what each arm delivered is counted exactly.
        receivers = {
            arm: stack.enter_context(_receiver_on_cpu_1()) for arm in arms if arm in TELEMETRY_ARMS
        }
        collectors = stack.enter_context(contextlib.ExitStack())
        app_ports = dict(receivers)
        if "collector" in receivers:  # the app sends to the collector, which sends on to it
            app_ports["collector"] = collectors.enter_context(
                _collector_on_cpu_1(receivers["collector"], work)
            )
        servers = {
            arm: stack.enter_context(
                _server(arm, app_ports.get(arm, {}), db_url, table, stock_bin, work)
            )
            for arm in arms
        }
        # Every server runs the whole time (idle while another is measured); each round
        # measures every endpoint on every arm back to back, in a rotated order, so that
        # the ratio to bare compares measurements taken seconds apart.
        for round_number in range(args.rounds):
            for endpoint in ENDPOINTS:
                shift = round_number % len(arms)
                for arm in arms[shift:] + arms[:shift]:
                    port, proc = servers[arm]
                    url = f"http://127.0.0.1:{port}{endpoint}"
                    warmup = run_wrk(url, args.warmup, args.connections)
                    result = run_wrk(url, args.seconds, args.connections, proc.pid)
                    served = requests_served.setdefault(arm, {"/ping": 0, "/chat": 1})  # +probe
                    served[endpoint] += int(warmup["requests"] + result["requests"])
                    results.setdefault((arm, endpoint), []).append(result)
                    print(
                        f"round {round_number + 1} {arm:7} {endpoint:6} "
                        f"{result['rps']:8.0f} req/s  p50 {result['p50']:.2f} ms  "
                        f"p99 {result['p99']:.2f} ms  "
                        f"server CPU {result['cpu_us']:.0f} µs/req",
                        file=sys.stderr,
                        flush=True,
                    )
        for arm in list(servers):
            _stop(servers.pop(arm)[1])
        collectors.close()  # the collector flushes what it still batches
        time.sleep(0.5)
        for arm, ports in receivers.items():
            counts = receiver_counts(ports)
            delivered[arm] = {key: counts[key] for key in ("spans", "logs", "metric_points")}
    load_after = os.getloadavg()
    if args.postgres:
        with contextlib.suppress(Exception):
            from sqlalchemy import create_engine, text

            with create_engine(db_url).begin() as conn:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    access_lines = _count_lines(work / "chatai.out", "HTTP_REQUEST_COMPLETE")
    print_table(
        results, arms, args, delivered, access_lines, (load_before, load_after), requests_served
    )
    shutil.rmtree(work, ignore_errors=True)
    print_export_scrubbing()


def _server_spans(count: int) -> list[object]:
    """Finished SDK server spans as a FastAPI request and its handler leave them: route,
    method, status, url with a signed query, user agent, and what app code set."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for n in range(count):
        attributes = {
            "http.request.method": "GET",
            "http.route": "/documents/{document_id}",
            "http.response.status_code": 200,
            "url.path": f"/documents/{n % 50}",
            "url.query": f"page={n % 7}&sig=c2lnbmF0dXJl{n % 13}",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131",
            "client.address": "10.0.0.7",
            "enduser.id": f"user-{n % 100}",
            "app.tenant": "acme",
            "app.request_note": f"imported {n % 9} pages from https://files.example.com/x",
        }
        with tracer.start_as_current_span("GET /documents/{document_id}", kind=SpanKind.SERVER,
                                          attributes=attributes):  # fmt: skip
            pass
    return list(exporter.get_finished_spans())


def print_export_scrubbing(rounds: int = 15, batches: int = 20) -> None:
    """µs per span that attribute scrubbing adds to encoding a batch (export thread)."""
    from chatai_otel.export.spans import OtlpSpanEncoder

    spans = _server_spans(512)
    scrubbing, plain = OtlpSpanEncoder(), OtlpSpanEncoder()
    plain._scrub_value = lambda key, value: value  # type: ignore[method-assign]
    timings: dict[str, list[float]] = {"scrubbed": [], "not scrubbed": []}
    for _ in range(rounds):
        for name, encoder in (("scrubbed", scrubbing), ("not scrubbed", plain)):
            started = time.perf_counter()
            for _ in range(batches):
                encoder.encode(spans, None)  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
            timings[name].append(elapsed / (batches * len(spans)) * 1e6)
    with_scrub = statistics.median(timings["scrubbed"])
    without = statistics.median(timings["not scrubbed"])
    print(
        f"\nScrubbing span attributes at export ({rounds} interleaved rounds, {batches} batches "
        "of 512 server spans with 10 attributes each; export thread, not the request path):"
    )
    print("| encoder | µs per span | ratio |")
    print("|---|---:|---:|")
    print(f"| not scrubbed | {without:.2f} | 1.00x |")
    print(f"| scrubbed | {with_scrub:.2f} | {with_scrub / without:.2f}x |")


@contextlib.contextmanager
def _server(
    arm: str, ports: dict[str, int], db_url: str, table: str, stock_bin: Path, work: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """One arm's uvicorn on CPU 0, ready to serve; SIGTERM (and a flush) on the way out."""
    port = _free_port()
    with (work / f"{arm}.out").open("ab") as out:
        proc = subprocess.Popen(
            [*_taskset(0), *_server_command(arm, port, stock_bin)],
            env=_server_env(arm, ports, db_url, table),
            cwd=str(work),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc)
            yield port, proc
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _count_lines(path: Path, needle: str) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as lines:
        return sum(1 for line in lines if needle.encode() in line)


def print_table(
    results: dict[tuple[str, str], list[dict[str, float]]],
    arms: list[str],
    args: argparse.Namespace,
    delivered: dict[str, dict[str, int]],
    access_lines: int,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    served: dict[str, dict[str, int]],
) -> None:
    def median(arm: str, endpoint: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(arm, endpoint)])

    def ratio(arm: str, endpoint: str) -> float:
        """Median over rounds of this arm's req/s over bare's req/s in the same round."""
        pairs = zip(results[(arm, endpoint)], results[("bare", endpoint)], strict=True)
        return statistics.median(ours["rps"] / bare["rps"] for ours, bare in pairs)

    has_bare = "bare" in arms
    print(
        f"\n{args.rounds} interleaved rounds x {args.seconds:g} s per arm and endpoint, wrk -t1 "
        f"-c{args.connections}, uvicorn 1 worker; medians over rounds. Load average "
        f"(1/5/15 min) {_load(load[0])} before, {_load(load[1])} after."
    )
    print(
        "| arm | endpoint | req/s | p50 ms | p99 ms | ratio to bare | "
        "server CPU µs/req | CPU ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for endpoint in ENDPOINTS:
        bare_cpu = median("bare", endpoint, "cpu_us") if has_bare else float("nan")
        for arm in arms:
            cpu = median(arm, endpoint, "cpu_us")
            print(
                f"| {arm} | {endpoint} | {median(arm, endpoint, 'rps'):.0f} | "
                f"{median(arm, endpoint, 'p50'):.2f} | {median(arm, endpoint, 'p99'):.2f} | "
                f"{ratio(arm, endpoint) if has_bare else float('nan'):.2f}x | "
                f"{cpu:.0f} | {bare_cpu / cpu:.2f}x |"
            )
    if has_bare and "chatai" in arms and "collector" in arms:
        for endpoint in ENDPOINTS:
            print(
                f"\n{endpoint}: chatai to the counting receiver "
                f"{ratio('chatai', endpoint):.2f}x of bare, to otelcol-chatai "
                f"{ratio('collector', endpoint):.2f}x of bare",
                end="",
            )
        print()
    if has_bare and "chatai" in arms and "stock" in arms:
        for endpoint in ENDPOINTS:
            ours, stock = ratio("chatai", endpoint), ratio("stock", endpoint)
            print(
                f"\n{endpoint}: chatai {ours:.2f}x of bare, stock {stock:.2f}x: "
                f"chatai / stock = {ours / stock:.2f}x",
                end="",
            )
        print()
    for arm, counts in delivered.items():
        requests = served.get(arm, {"/ping": 0, "/chat": 0})
        total = requests["/ping"] + requests["/chat"]
        # a server span per request, plus the SELECT span of each /chat
        expected = ""
        if arm in ("chatai", "collector"):
            # one server span per request, one span per SELECT; wrk does not count the
            # requests still in flight when it stops, so this is a lower bound
            at_least = requests["/ping"] + 2 * requests["/chat"]
            expected = f" (one per request and per SELECT: at least {at_least})"
        print(
            f"\n{arm}: {total} requests served (warm-up included); delivered to its receiver: "
            f"{counts['spans']} spans{expected}, {counts['logs']} log records, "
            f"{counts['metric_points']} metric points",
            end="",
        )
    if "chatai" in arms:
        print(f"\nchatai: {access_lines} access log lines on stdout")
    print()


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)
