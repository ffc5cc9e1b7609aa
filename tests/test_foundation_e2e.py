"""Foundation end to end: real uvicorn/gunicorn processes exporting to a real OTLP receiver."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from chatai_otel.testing.receiver import OTLPReceiver, ReceivedSpan
from conftest import APPS, bin_path, free_port, telemetry_env, wait_until

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

SERVER = 2  # SpanKind.SERVER in OTLP


def is_server_span(route: str):
    return lambda span: span.kind == SERVER and span.attributes.get("http.route") == route


def uvicorn_under_instrument(port: int, *extra: str) -> list[str]:
    return [
        bin_path("opentelemetry-instrument"),
        bin_path("uvicorn"),
        "basic_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        *extra,
    ]


def stdout_json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_instrument_wrapper_exports_traces_metrics_and_correlated_logs(receiver, start_app):
    port = free_port()
    app = start_app(uvicorn_under_instrument(port), telemetry_env(receiver), port)
    app.wait_ready()
    for item in range(3):
        assert httpx.get(f"{app.url}/work/{item}").status_code == 200

    spans = receiver.wait_for_spans(3, is_server_span("/work/{item}"))
    span = spans[0]
    assert span.resource["service.name"] == "test-app"
    assert span.resource["telemetry.distro.name"] == "chatai-otel"
    assert re.fullmatch(r"[0-9a-f-]{36}", span.resource["service.instance.id"])
    assert "deployment.environment.name" in span.resource
    assert "process.command_args" not in span.resource  # may hold secrets
    # our distro excludes the ASGI send/receive internal spans
    assert not [s for s in receiver.spans() if s.name.endswith(("http send", "http receive"))]

    logs = receiver.wait_for_logs(3, lambda r: r.body == "work.done")
    by_item = {r.attributes["item"]: r for r in logs}
    trace_of_item = {}
    for log_record in logs:
        matching = [s for s in spans if s.trace_id == log_record.trace_id]
        assert matching, f"log {log_record} has no server span with its trace id"
        trace_of_item[log_record.attributes["item"]] = log_record.trace_id
    assert set(by_item) == {0, 1, 2}

    points = receiver.wait_for_metrics(
        1, lambda p: p.name in ("http.server.request.duration", "http.server.duration")
    )
    assert points[0].resource["service.name"] == "test-app"

    # stdout lines leave on the event loop's timer (CHATAI_OTEL_LOG_STDOUT_INTERVAL), the OTLP
    # records on the export thread: on a busy machine the records can arrive first
    def done_lines() -> list[dict]:
        found = [
            line for line in stdout_json_lines(app.stdout()) if line.get("message") == "work.done"
        ]
        return found if len(found) >= 3 else []

    lines = wait_until(done_lines, timeout=10, every=0.05)
    assert len(lines) == 3
    for line in lines:
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
        assert line["trace_id"] == trace_of_item[line["item"]]


def test_import_setup_in_a_worker_script(receiver):
    env = telemetry_env(receiver, OTEL_SERVICE_NAME="test-worker")
    done = subprocess.run(
        [sys.executable, str(APPS / "worker.py"), "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "WORKER-DONE" in done.stdout
    # everything was flushed at exit: nothing needed to wait for a schedule
    spans = receiver.wait_for_spans(4, lambda s: s.name == "job", timeout=5)
    logs = receiver.wait_for_logs(4, lambda r: r.body == "job.done", timeout=5)
    assert {s.trace_id for s in spans} == {r.trace_id for r in logs}
    assert {r.span_id for r in logs} == {s.span_id for s in spans}
    assert all(s.resource["service.name"] == "test-worker" for s in spans)
    points = receiver.wait_for_metrics(1, lambda p: p.name == "worker.jobs", timeout=5)
    assert points[-1].value == 4
    stdout_lines = [
        line for line in stdout_json_lines(done.stdout) if line["message"] == "job.done"
    ]
    assert len(stdout_lines) == 4
    assert {line["trace_id"] for line in stdout_lines} == {s.trace_id for s in spans}


def test_setup_import_and_wrapper_together_configure_once(receiver, start_app):
    """`import chatai_otel.setup` inside an app launched by opentelemetry-instrument."""
    port = free_port()
    args = [
        bin_path("opentelemetry-instrument"),
        bin_path("uvicorn"),
        "setup_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    app = start_app(args, telemetry_env(receiver), port)
    app.wait_ready()
    httpx.get(f"{app.url}/work/7")
    receiver.wait_for_logs(1, lambda r: r.body == "work.done")
    time.sleep(1.0)
    assert len([r for r in receiver.logs() if r.body == "work.done"]) == 1
    instance_ids = {s.resource["service.instance.id"] for s in receiver.spans()}
    assert len(instance_ids) == 1
    assert "Overriding of current" not in app.stderr()


def _flush_on_signal(receiver: OTLPReceiver, start_app, signum: int, count: int) -> None:
    port = free_port()
    env = telemetry_env(
        receiver,
        # nothing leaves before shutdown: only the shutdown flush can deliver it
        OTEL_BSP_SCHEDULE_DELAY="600000",
        OTEL_BLRP_SCHEDULE_DELAY="600000",
        OTEL_METRIC_EXPORT_INTERVAL="600000",
    )
    app = start_app(uvicorn_under_instrument(port), env, port)
    app.wait_ready()
    with httpx.Client() as client:
        for item in range(count):
            assert client.get(f"{app.url}/work/{item}").status_code == 200
    time.sleep(0.5)
    assert not [s for s in receiver.spans() if s.attributes.get("http.route") == "/work/{item}"]
    app.signal(signum)
    app.wait(timeout=15)
    receiver.wait_for_spans(count, is_server_span("/work/{item}"), timeout=5)
    logs = receiver.wait_for_logs(count, lambda r: r.body == "work.done", timeout=5)
    assert sorted(r.attributes["item"] for r in logs) == list(range(count))
    receiver.wait_for_metrics(1, lambda p: p.name.startswith("http.server"), timeout=5)


def test_sigterm_to_uvicorn_flushes_every_span_and_log(receiver, start_app):
    _flush_on_signal(receiver, start_app, signal.SIGTERM, 120)


def test_sigint_to_uvicorn_flushes_every_span_and_log(receiver, start_app):
    _flush_on_signal(receiver, start_app, signal.SIGINT, 40)


def _worker_identities(receiver: OTLPReceiver, pids: set[int]) -> dict[int, str]:
    """service.instance.id per process.pid, from metric exports (every worker exports metrics)."""

    def from_workers(point) -> bool:
        return point.resource.get("process.pid") in pids

    identities: dict[int, set[str]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        identities = {}
        for point in receiver.metrics():
            if from_workers(point):
                identities.setdefault(point.resource["process.pid"], set()).add(
                    point.resource["service.instance.id"]
                )
        if set(identities) == pids:
            break
        time.sleep(0.2)
    assert set(identities) == pids, f"metrics from {set(identities)}, workers {pids}"
    assert all(len(ids) == 1 for ids in identities.values()), identities
    return {pid: next(iter(ids)) for pid, ids in identities.items()}


def _drive_until_both_serve(app, receiver: OTLPReceiver, pids: set[int]) -> list[ReceivedSpan]:
    deadline = time.monotonic() + 30
    item = 0
    while time.monotonic() < deadline:
        for _ in range(10):
            with httpx.Client() as client:  # a new connection each time spreads the load
                client.get(f"{app.url}/work/{item}")
            item += 1
        spans = [s for s in receiver.spans() if s.attributes.get("http.route") == "/work/{item}"]
        if {s.resource["process.pid"] for s in spans} >= pids:
            return spans
        time.sleep(0.3)
    raise AssertionError("requests never reached both workers")


def test_gunicorn_preload_workers_each_export_with_their_own_instance_id(receiver, start_app):
    port = free_port()
    args = [
        bin_path("opentelemetry-instrument"),
        bin_path("gunicorn"),
        "basic_app:app",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--preload",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
    ]
    app = start_app(args, telemetry_env(receiver), port)
    app.wait_ready()
    deadline = time.monotonic() + 20
    pids: set[int] = set()
    while time.monotonic() < deadline and len(pids) < 2:
        # workers log this after fork, through the chatai-otel pipeline (JSON on stdout)
        pids = {
            int(p)
            for p in re.findall(r"Booting worker with pid: (\d+)", app.stdout() + app.stderr())
        }
        time.sleep(0.2)
    assert len(pids) == 2, app.output()
    identities = _worker_identities(receiver, pids)
    assert len(set(identities.values())) == 2
    master = [p for p in receiver.metrics() if p.resource.get("process.pid") == app.proc.pid]
    assert all(p.resource["service.instance.id"] not in identities.values() for p in master)
    for span in _drive_until_both_serve(app, receiver, pids):
        assert span.resource["service.instance.id"] == identities[span.resource["process.pid"]]
    app.signal(signal.SIGTERM)
    app.wait(timeout=30)


def test_a_process_forked_while_its_parent_exports_metrics_exports_its_own(receiver):
    """The cause of gunicorn --preload workers that exported no metrics: a fork while the
    parent's metric export waited on the network left the SDK reader's export lock held in
    the child for good. The receiver answers after 1 s, so the fork lands mid-export."""
    script = textwrap.dedent(
        """
        import os, time
        import chatai_otel.setup
        from opentelemetry import metrics, trace
        from chatai_otel import get_logger
        counter = metrics.get_meter("fork.test").create_counter("fork.test.count")
        counter.add(1)
        time.sleep(0.35)  # the reader's first export (at 0.1 s) waits for the answer
        pid = os.fork()
        if pid == 0:
            counter.add(1)
            with trace.get_tracer("fork.test").start_as_current_span("in.child"):
                get_logger("fork.test").info("in.child")
            time.sleep(4)
            os._exit(0)
        os.waitpid(pid, 0)
        print("CHILD", pid, flush=True)
        """
    )
    receiver.delay = 1.0
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=telemetry_env(receiver, OTEL_METRIC_EXPORT_INTERVAL="100"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    child = int(done.stdout.split("CHILD")[1].split()[0])
    receiver.delay = 0.0

    def from_child(item) -> bool:
        return item.resource.get("process.pid") == child

    assert receiver.wait_for_metrics(1, lambda p: from_child(p) and p.name == "fork.test.count")
    assert receiver.wait_for_spans(1, lambda s: from_child(s) and s.name == "in.child")
    assert receiver.wait_for_logs(1, lambda r: from_child(r) and r.body == "in.child")


def test_uvicorn_spawned_workers_each_export_with_their_own_instance_id(receiver, start_app):
    port = free_port()
    # uvicorn restarts a worker that misses its 5 s health check; start-up under
    # opentelemetry-instrument alone took 4-5 s at load 7-9 (README: fork and spawn)
    workers = ("--workers", "2", "--timeout-worker-healthcheck", "60")
    app = start_app(uvicorn_under_instrument(port, *workers), telemetry_env(receiver), port)
    app.wait_ready()
    deadline = time.monotonic() + 20
    pids: set[int] = set()
    while time.monotonic() < deadline and len(pids) < 2:
        # uvicorn's own lines come through the chatai-otel pipeline (JSON on stdout)
        pids = {
            int(p)
            for p in re.findall(r"Started server process \[(\d+)\]", app.stdout() + app.stderr())
        }
        time.sleep(0.2)
    assert len(pids) == 2, app.output()
    identities = _worker_identities(receiver, pids)
    assert len(set(identities.values())) == 2
    for span in _drive_until_both_serve(app, receiver, pids):
        assert span.resource["service.instance.id"] == identities[span.resource["process.pid"]]


def test_collector_down_never_breaks_requests_and_shutdown_meets_its_deadline(start_app):
    port = free_port()
    env = telemetry_env(None, CHATAI_OTEL_SHUTDOWN_TIMEOUT="3", OTEL_BSP_SCHEDULE_DELAY="100")
    app = start_app(uvicorn_under_instrument(port), env, port)
    app.wait_ready()
    with httpx.Client() as client:
        for item in range(200):
            assert client.get(f"{app.url}/work/{item}").status_code == 200
    time.sleep(3)  # several failed export rounds
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    app.wait(timeout=20)
    assert time.monotonic() - started < 3 + 3  # the deadline plus uvicorn's own shutdown
    stderr = app.stderr()
    assert "Traceback" not in stderr, stderr
    # failures are reported, but once per interval per kind, not once per batch or retry
    reports = [line for line in stderr.splitlines() if "exporting" in line.lower()]
    assert reports, stderr
    assert len(reports) <= 6, reports


def test_slow_or_refusing_collector_never_blocks_a_request(receiver, start_app):
    receiver.delay = 5.0  # every export hangs for 5 s
    port = free_port()
    app = start_app(uvicorn_under_instrument(port), telemetry_env(receiver), port)
    app.wait_ready()
    with httpx.Client() as client:
        for item in range(50):
            started = time.monotonic()
            assert client.get(f"{app.url}/work/{item}").status_code == 200
            assert time.monotonic() - started < 1.0
    receiver.delay = 0.0
    receiver.reject = True
    with httpx.Client() as client:
        for item in range(50):
            assert client.get(f"{app.url}/work/{item}").status_code == 200
    assert "Traceback" not in app.stderr()
