"""``chatai-otel demo`` end to end: the example backend and worker under the distro, a scripted
workload, then OTLP/JSON files (no collector) or the collector (one answering).

The demo really starts ``opentelemetry-instrument uvicorn chatai.main:app`` and
``python -m chatai.worker`` on real Redis (a queue of its own), and its alert
goes to the webhook receiver it starts. The files are checked against the OTLP
specification's JSON encoding with the protobuf JSON mapping, and replayed
through rotel, an independent (Rust) collector that reads OTLP/JSON.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import rotel
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from chatai_otel.cli.view import Collected, group_traces
from chatai_otel.testing.receiver import OTLPReceiver, ReceivedSpan
from conftest import bin_path, free_port

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

ROOT = Path(__file__).resolve().parents[1]
ROTEL_AGENT = Path(rotel.__file__).parent / "rotel-agent"
SERVER, CONSUMER, PRODUCER = 2, 5, 4
REQUESTS = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
HEX_IDS = {"traceId": re.compile(r"[0-9a-f]{32}"), "spanId": re.compile(r"[0-9a-f]{16}")}
HEX_IDS["parentSpanId"] = HEX_IDS["spanId"]
ENUM_KEYS = {"kind", "code", "severityNumber", "aggregationTemporality"}


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def run_demo(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run(
        [bin_path("chatai-otel"), "demo", *args],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return done


def walk(value: Any, path: str = "") -> Any:
    """(path, key, value) for every key of every object in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, path)


def spec_parse(document: dict[str, Any], signal: str) -> Any:
    """The OTLP spec's reading: hex ids to bytes, the rest by the protobuf JSON mapping."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in HEX_IDS and isinstance(v, str)
                else convert(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return json_format.Parse(json.dumps(convert(document)), REQUESTS[signal]())


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """One demo run with no collector (a closed port), Redis available: worker in its own process."""
    cwd = tmp_path_factory.mktemp("demo-files")
    env = demo_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    done = run_demo(cwd, env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return cwd, done


def test_demo_without_a_collector_writes_otlp_json_files(file_run):
    cwd, done = file_run
    out = done.stdout
    assert "no collector at http://127.0.0.1:" in out
    assert "all answered as the script expects" in out
    assert "Alert webhook: 1 received" in out and "PaymentProviderError" in out
    assert re.search(r"demo finished in \d+\.\d s", out)  # how long: printed, not asserted
    files = {signal: cwd / "telemetry" / f"{signal}.jsonl" for signal in REQUESTS}
    for signal, path in files.items():
        lines = path.read_text().splitlines()
        assert lines, f"{path} is empty"
        for line in lines:
            document = json.loads(line)  # one complete JSON object per line
            assert list(document) == [
                {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}[
                    signal
                ]
            ]
            for where, key, value in walk(document):
                assert "_" not in key, f"{signal}: {where}.{key} is not lowerCamelCase"
                if key in HEX_IDS and value:
                    assert HEX_IDS[key].fullmatch(value), f"{where}.{key}={value!r} is not hex"
                if key in ENUM_KEYS:
                    assert isinstance(value, int), f"{where}.{key}={value!r} is not an integer"
            request = spec_parse(document, signal)
            assert request.ByteSize() > 0
    # the app logs are kept next to the telemetry
    assert (cwd / "telemetry" / "backend.log").stat().st_size > 0
    assert "WORKER-READY" in (cwd / "telemetry" / "worker.log").read_text()


def test_events_and_errors_are_rows_in_the_durable_store(file_run):
    """The demo turns chatai-otel's store on (SQLite next to the files): one row per event/error."""
    import sqlite3

    cwd, done = file_run
    with sqlite3.connect(cwd / "telemetry" / "events.db") as conn:
        events = dict(
            conn.execute("SELECT event_type, count(*) FROM business_event_log GROUP BY 1")
        )
        critical = conn.execute(
            "SELECT error_type, context, trace_id, service FROM error_log WHERE severity = 'critical'"
        ).fetchall()
    assert events["ai_response_generated"] == 4 and events["document_processed"] == 1
    assert events["user_registered"] == 2 and events["handoff_accepted"] == 1
    assert (
        "Durable store (telemetry/events.db, SQLite): 22 rows in business_event_log" in done.stdout
    )
    ((error_type, context, trace_id, service),) = critical
    assert error_type.endswith("PaymentProviderError") and service == "chatai-backend"
    assert json.loads(context)["payment_token"] == "[REDACTED]"
    server = [s for s in _spans_from_files(cwd) if s.trace_id == trace_id and s.kind == SERVER]
    assert server and server[0].attributes["http.route"] == "/balance/top-up"


def _spans_from_files(cwd: Path) -> list[ReceivedSpan]:
    collected = Collected()
    for line in (cwd / "telemetry" / "traces.jsonl").read_text().splitlines():
        collected.add("traces", spec_parse(json.loads(line), "traces"))
    return collected.spans()


def test_the_document_upload_and_its_job_are_one_trace(file_run):
    cwd, _done = file_run
    spans = _spans_from_files(cwd)
    upload = next(
        s for s in spans if s.kind == SERVER and s.attributes.get("http.route") == "/documents"
    )
    trace = [s for s in spans if s.trace_id == upload.trace_id]
    by_id = {s.span_id: s for s in trace}
    process = next(s for s in trace if s.kind == CONSUMER)
    assert process.resource["service.name"] == "chatai-worker"
    assert upload.resource["service.name"] == "chatai-backend"
    send = by_id[process.parent_span_id]
    assert send.kind == PRODUCER and by_id[send.parent_span_id] is upload
    assert process.attributes["messaging.system"] == "redis"
    names = {s.name for s in trace}
    assert {"document_processing", "embeddings chatai-local-embed"} <= names


def test_the_traces_show_every_scripted_case(file_run):
    cwd, _done = file_run
    spans = _spans_from_files(cwd)
    server = [s for s in spans if s.kind == SERVER]
    statuses = {
        (s.attributes["http.route"], s.attributes["http.response.status_code"]) for s in server
    }
    assert {
        ("/auth/register", 422),
        ("/auth/login", 401),
        ("/handoffs/{handoff_id}/accept", 403),
        ("/balance/top-up", 502),
        ("/dialogs/{dialog_id}/messages", 200),
    } <= statuses
    slow = [s for s in spans if s.name == "chat chatai-local-large"]
    assert len(slow) == 1 and (slow[0].end_ns - slow[0].start_ns) > 0.5e9
    critical = next(s for s in server if s.attributes["http.response.status_code"] == 502)
    event = next(e for e in critical.events if e["name"] == "exception")
    assert event["attributes"]["exception.type"] == "chatai.payments.PaymentProviderError"
    assert "tok_provider_down" not in json.dumps(
        [s.attributes for s in spans] + [e["attributes"] for s in spans for e in s.events]
    )
    # every trace starts at a request, or is the app's start-up (one trace, not one per
    # statement); the store's own writes and the worker's idle polling make no traces
    roots = [t.root for t in group_traces(spans)]
    assert sum(1 for r in roots if r.name == "create_tables") == 2  # backend and worker
    assert all(r.kind == SERVER or r.name == "create_tables" for r in roots), {
        r.name for r in roots
    }


def test_the_terminal_view_shows_waterfalls_and_metrics(file_run):
    _cwd, done = file_run
    out = done.stdout
    assert re.search(
        r"POST /documents  trace [0-9a-f]{32}  \d+ spans  chatai-backend -> chatai-worker", out
    )
    assert "process chatai:demo:" in out
    for title in (
        "Requests (http.server.request.duration)",
        "Errors by category (chatai.errors)",
        "Business events by type (chatai.business.events)",
        "AI usage by model",
    ):
        assert title in out
    assert re.search(
        r"external_service\s+critical\s+chatai\.payments\.PaymentProviderError\s+1", out
    )
    assert re.search(r"validation\s+low\s+\S*RequestValidationError\s+1", out)
    assert re.search(r"document_processed\s+1", out)
    assert re.search(r"chatai-local-large\s+chat\s+1\s+\d+\s+\d+", out)
    assert re.search(r"POST /auth/register\s+422\s+1", out)


def test_view_reads_the_files_again(file_run):
    cwd, _done = file_run
    viewed = subprocess.run(
        [bin_path("chatai-otel"), "view", "telemetry", "--limit", "10"],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert viewed.returncode == 0, viewed.stderr
    assert "POST /documents" in viewed.stdout and "Business events by type" in viewed.stdout
    trace_id = re.search(r"POST /documents  trace ([0-9a-f]{32})", viewed.stdout).group(1)
    one = subprocess.run(
        [
            bin_path("chatai-otel"),
            "view",
            "telemetry/traces.jsonl",
            "--trace",
            trace_id[:12],
            "--no-metrics",
        ],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one.returncode == 0 and f"trace {trace_id}" in one.stdout
    assert "Requests" not in one.stdout


def test_an_independent_collector_reads_the_files(file_run, tmp_path, receiver):
    """rotel accepts each line as an OTLP/JSON request and forwards the same ids over gRPC."""
    cwd, _done = file_run
    grpc_port, http_port = free_port(), free_port()
    output = tmp_path / "rotel.out"
    with output.open("w") as sink:
        agent = subprocess.Popen(
            [
                str(ROTEL_AGENT), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                "--exporter", "otlp",
                "--otlp-exporter-endpoint", receiver.grpc_endpoint,
                "--pid-file", str(tmp_path / "rotel.pid"),
                "--log-file", str(tmp_path / "rotel.log"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # "Starting Rotel" is printed before it listens
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        expected_spans: set[str] = set()
        expected_logs: set[tuple[str, str]] = set()
        for signal in ("traces", "logs", "metrics"):
            for line in (cwd / "telemetry" / f"{signal}.jsonl").read_text().splitlines():
                document = json.loads(line)
                for _where, key, value in walk(document):
                    if signal == "traces" and key == "spans":
                        expected_spans |= {f"{s['traceId']}/{s['spanId']}" for s in value}
                    if signal == "logs" and key == "logRecords":
                        expected_logs |= {
                            (r.get("traceId", ""), r.get("spanId", "")) for r in value
                        }
                request = urllib.request.Request(
                    f"http://127.0.0.1:{http_port}/v1/{signal}",
                    data=line.encode(),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        assert response.status == 200
                except urllib.error.HTTPError as refused:
                    raise AssertionError(f"rotel refused {signal}: {line[:2000]}") from refused
        spans = receiver.wait_for_spans(len(expected_spans))
        logs = receiver.wait_for_logs(1)
        time.sleep(0.5)
    finally:
        agent.terminate()
        agent.wait(10)
    assert {f"{s.trace_id}/{s.span_id}" for s in receiver.spans()} == expected_spans
    assert len(spans) == len(expected_spans)
    got_logs = {(r.trace_id, r.span_id) for r in receiver.logs()}
    assert {ids for ids in expected_logs if ids[0]} <= got_logs
    assert logs


def test_demo_relays_to_a_collector_that_answers(tmp_path, receiver):
    """With an OTLP endpoint answering, the telemetry arrives there and no files are written."""
    env = demo_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    done = run_demo(tmp_path, env, "--no-redis")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"exporting to {receiver.http_endpoint}/v1/traces" in done.stdout
    assert "relayed" in done.stdout and "failed" not in done.stdout.split("relayed", 1)[1][:80]
    assert not (tmp_path / "telemetry" / "traces.jsonl").exists()
    spans = receiver.wait_for_spans(
        1, lambda s: s.kind == SERVER and s.attributes.get("http.route") == "/documents"
    )
    upload = spans[0]
    # no Redis: the worker runs inside the backend, on the in-process queue, still one trace
    process = receiver.wait_for_spans(
        1, lambda s: s.kind == CONSUMER and s.trace_id == upload.trace_id
    )[0]
    assert process.resource["service.name"] == "chatai-backend"
    assert process.attributes["messaging.system"] == "in_process"
    assert receiver.wait_for_logs(1, lambda r: r.resource.get("service.name") == "chatai-backend")
    assert receiver.wait_for_metrics(
        1,
        lambda p: p.name == "chatai.business.events" and p.attributes["event.type"] == "user_login",
    )
    assert "Business events by type" in done.stdout  # the view still works from the relay's copy


def test_demo_exports_over_grpc_to_a_collector(tmp_path):
    """The default protocol: gRPC to the configured endpoint, worker in its own process."""
    with OTLPReceiver() as collector:
        env = demo_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint)
        done = run_demo(tmp_path, env, "--traces", "1")
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        for service in ("chatai-backend", "chatai-worker"):
            assert collector.wait_for_spans(
                1, lambda s, service=service: s.resource["service.name"] == service
            )
    assert not (tmp_path / "telemetry" / "traces.jsonl").exists()
