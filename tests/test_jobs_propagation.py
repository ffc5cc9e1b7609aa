"""Trace context inside job payloads: API -> Redis list -> worker is one trace, across processes."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from chatai_otel import context
from chatai_otel.integrations.jobs import CARRIER_KEY, consuming, extract, inject, job_log_context
from conftest import APPS, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

PRODUCER, CONSUMER = 4, 5
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7


def _active(span_context: SpanContext):
    return trace.use_span(NonRecordingSpan(span_context), end_on_exit=False)


def test_inject_writes_traceparent_and_the_log_context():
    job: dict = {"type": "work"}
    parent = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    with _active(parent), context.bound(request_id="req-1", user_id=9):
        assert inject(job) is job
    carrier = job[CARRIER_KEY]
    assert carrier["traceparent"] == f"00-{TRACE_ID:032x}-{SPAN_ID:016x}-01"
    assert carrier["request_id"] == "req-1" and carrier["user_id"] == "9"
    assert int(carrier["sent_at"]) > 0
    assert all(isinstance(v, str) for v in carrier.values())  # JSON-safe
    restored = trace.get_current_span(extract(job)).get_span_context()
    assert (restored.trace_id, restored.span_id, restored.is_remote) == (TRACE_ID, SPAN_ID, True)
    assert job_log_context(job) == {"request_id": "req-1", "user_id": "9"}


def test_no_active_span_means_no_traceparent():
    job = inject({})
    assert "traceparent" not in job[CARRIER_KEY]
    assert not trace.get_current_span(extract(job)).get_span_context().is_valid


@pytest.mark.parametrize(
    "job",
    [
        {},
        {CARRIER_KEY: "garbage"},
        {CARRIER_KEY: {"traceparent": "00-zzzz-yyyy-01"}},
        {CARRIER_KEY: {"traceparent": 42, 7: "x"}},
        {CARRIER_KEY: {"sent_at": "not-a-number", "request_id": ["list"]}},
        None,
    ],
)
def test_a_missing_or_malformed_carrier_starts_a_new_trace(job):
    assert not trace.get_current_span(extract(job)).get_span_context().is_valid
    with consuming(job or {}, queue="q") as span:  # never raises
        assert span is not None
    assert job_log_context(job) == {}


def test_the_job_exception_passes_through_unchanged():
    error = KeyError("missing")
    with pytest.raises(KeyError) as raised, consuming({"type": "x"}, queue="q"):
        raise error
    assert raised.value is error


def test_api_to_worker_is_one_trace_across_processes(receiver):
    key = f"test:propagation:{uuid.uuid4().hex}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        produced = subprocess.run(
            [sys.executable, str(APPS / "job_roundtrip.py"), "produce", key, "3"],
            env=telemetry_env(receiver, OTEL_SERVICE_NAME="job-producer"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert produced.returncode == 0, produced.stderr[-3000:]
        consumed = subprocess.run(
            [sys.executable, str(APPS / "job_roundtrip.py"), "consume", key, "3"],
            env=telemetry_env(receiver, OTEL_SERVICE_NAME="job-consumer"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert consumed.returncode == 0, consumed.stderr[-3000:]
    finally:
        client.delete(key)
        client.close()
    assert "RERAISED ValueError" in consumed.stdout
    trace_id = produced.stdout.split("PRODUCED ", 1)[1].split()[0]

    assert "ENQUEUE-FAILED" in produced.stdout
    sends = receiver.wait_for_spans(4, lambda s: s.name == f"send {key}")
    lost = next(s for s in sends if s.attributes["messaging.message.id"] == "job-lost")
    sends.remove(lost)
    assert lost.status_code == 2 and lost.attributes["error.type"] == "ConnectionError"
    (event,) = [e for e in lost.events if e["name"] == "exception"]  # once, and scrubbed
    assert "hunter2secretpw" not in event["attributes"]["exception.message"]
    processes = receiver.wait_for_spans(3, lambda s: s.name == f"process {key}")
    request = receiver.wait_for_spans(1, lambda s: s.name == "request")[0]
    assert request.trace_id == trace_id
    send_by_id = {s.span_id: s for s in sends}
    for send in sends:
        assert send.kind == PRODUCER and send.trace_id == trace_id
        assert send.parent_span_id == request.span_id
        assert send.resource["service.name"] == "job-producer"
        assert send.attributes["messaging.system"] == "redis"
        assert send.attributes["messaging.destination.name"] == key
        assert send.attributes["messaging.operation.type"] == "send"
    for process in processes:
        assert process.kind == CONSUMER and process.trace_id == trace_id
        assert process.resource["service.name"] == "job-consumer"
        assert process.parent_span_id in send_by_id  # child of the very send that queued it
        parent = send_by_id[process.parent_span_id]
        assert (
            parent.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
        )
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["chatai.job.wait_time"] >= 0
        assert process.attributes["user.id"] == "7"

    failed = next(p for p in processes if p.attributes["chatai.job.type"] == "fail")
    assert failed.status_code == 2 and failed.attributes["error.type"] == "ValueError"
    message = next(e for e in failed.events if e["name"] == "exception")["attributes"][
        "exception.message"
    ]
    assert "hunter2" not in message
    assert all(p.status_code != 2 for p in processes if p is not failed)

    handled = receiver.wait_for_logs(3, lambda r: r.body == "job.handled")
    by_span = {p.span_id for p in processes}
    for record in handled:
        assert record.trace_id == trace_id and record.span_id in by_span
        assert record.attributes["request_id"] == "req-42"  # the request that queued it
