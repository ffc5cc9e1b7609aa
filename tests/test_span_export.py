"""The OTLP span export path: the wire encoder, the bounded queue, both transports, fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from chatai_otel.export.spans import (
    SPAN_RECORD_FIELDS,
    OtlpSpanEncoder,
    SpanExportProcessor,
    grpc_span_exporter,
    http_span_exporter,
)
from chatai_otel.redaction import get_scrubber
from chatai_otel.testing.receiver import attributes_of
from conftest import free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

# --- the encoder against the SDK's own encoder, both read back by the official classes -------

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=70),
)
values = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3), st.lists(st.integers(0, 9)))
attribute_maps = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=6)
REMOTE_PARENT = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "x1"), ("other", "y")]),
)


def _sdk_spans(specs: list) -> list:
    """Finished SDK spans (ReadableSpan) built from the generated specs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "svc", "n": 1}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracers = [
        provider.get_tracer("lib.a", "1.0"),
        provider.get_tracer("lib.b", None, "https://schema", {"scope.attr": 3}),
    ]
    for index, (attributes, event_attributes, kind, status, remote, link) in enumerate(specs):
        tracer = tracers[index % 2]
        context = set_span_in_context(NonRecordingSpan(REMOTE_PARENT)) if remote else None
        links = [Link(REMOTE_PARENT, {"link.n": index})] if link else None
        span = tracer.start_span(
            f"span {index}", context=context, kind=kind, attributes=attributes, links=links
        )
        if event_attributes is not None:
            span.add_event("happened", event_attributes)
        if status == "error":
            span.set_status(Status(StatusCode.ERROR, "broken: retries=3"))  # no secret: kept
        elif status == "ok":
            span.set_status(StatusCode.OK)
        span.end()
    return list(exporter.get_finished_spans())


def _canonical(request: ExportTraceServiceRequest, scrub=dict) -> list:
    """What a backend reads from a request, independent of field order and empty defaults;
    ``scrub`` is applied to every attribute map (ours scrubs secrets at export, the SDK's
    encoder does not)."""
    out = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = (
                scope_spans.scope.name,
                scope_spans.scope.version,
                tuple(sorted(attributes_of(scope_spans.scope.attributes).items())),
                scope_spans.schema_url,
            )
            for span in scope_spans.spans:
                out.append(
                    {
                        "resource": resource,
                        "scope": scope,
                        "ids": (span.trace_id, span.span_id, span.parent_span_id),
                        "trace_state": span.trace_state,
                        "name": span.name,
                        "kind": span.kind,
                        "times": (span.start_time_unix_nano, span.end_time_unix_nano),
                        "attributes": scrub(attributes_of(span.attributes)),
                        "events": [
                            (e.name, e.time_unix_nano, scrub(attributes_of(e.attributes)))
                            for e in span.events
                        ],
                        "links": [
                            (
                                link.trace_id,
                                link.span_id,
                                scrub(attributes_of(link.attributes)),
                                link.flags & ~0xFF,
                            )
                            for link in span.links
                        ],
                        "status": (span.status.code, span.status.message),
                        "dropped": (
                            span.dropped_attributes_count,
                            span.dropped_events_count,
                            span.dropped_links_count,
                        ),
                        # the SDK leaves the W3C trace flags (low byte) out; we send them
                        "flags": span.flags & ~0xFF,
                    }
                )
    return sorted(out, key=lambda s: s["name"])


PLAIN = (SpanKind.INTERNAL, "unset", False, True)


def _scrubbed(attributes: dict) -> dict:
    """The attributes as our encoder sends them (sequences read back as lists)."""
    scrubbed = get_scrubber().scrub_attributes(attributes)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in scrubbed.items()}


spec = st.tuples(
    attribute_maps,
    st.one_of(st.none(), attribute_maps),
    st.sampled_from([SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.CONSUMER]),
    st.sampled_from(["unset", "ok", "error"]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(spec, min_size=1, max_size=5))
@example([({"api_key": "k", "tags": ["Bearer abcdefghijkl1234"]}, {"TOKEN": False}, *PLAIN)])
def test_encoder_reads_back_like_the_sdk_encoder(specs):
    spans = _sdk_spans(specs)
    resource = spans[0].resource
    encoder = OtlpSpanEncoder()
    want = _canonical(encode_spans(spans), _scrubbed)
    for _ in range(2):  # the second time through, keys, names and scopes come from the caches
        ours = ExportTraceServiceRequest.FromString(encoder.encode(spans, resource))
        assert _canonical(ours) == want
    flags = {s.context.span_id.to_bytes(8, "big"): int(s.context.trace_flags) for s in spans}
    for scope_spans in ours.resource_spans[0].scope_spans:
        for span in scope_spans.spans:
            assert span.flags & 0xFF == flags[span.span_id]  # sampled, random trace id


def test_both_span_record_producers_fill_the_named_fields():
    """record_of (SDK spans) and chatai_otel.export.cheap_spans (our own spans) build the same tuple."""
    from chatai_otel.export.cheap_spans import FastTracer
    from chatai_otel.export.spans import record_of

    sdk = record_of(_sdk_spans([({"a": 1}, None, SpanKind.SERVER, "unset", False, False)])[0])
    provider = TracerProvider()
    processor = SpanExportProcessor(InMemorySpanExporter())
    processor.attach(provider)
    submitted: list[tuple] = []
    processor.submit = submitted.append  # type: ignore[method-assign]
    with FastTracer("chatai_otel.test", "1", provider).start_as_current_span("ours"):
        pass
    assert len(submitted) == 1, "the fast path did not run"
    provider.shutdown()
    for record in (sdk, *submitted):
        named = dict(zip(SPAN_RECORD_FIELDS, record, strict=True))
        assert isinstance(named["scope"], InstrumentationScope)
        assert isinstance(named["name"], str) and named["end_ns"] >= named["start_ns"]


def test_records_and_sdk_spans_share_a_request():
    spans = _sdk_spans([({"a": 1}, None, SpanKind.SERVER, "unset", False, False)])
    scope = InstrumentationScope("chatai_otel.web", "0.1")
    record = (
        7,
        8,
        9,
        0x101,
        None,
        "GET /x",
        2,
        1000,
        2000,
        {"http.route": "/x", "http.response.status_code": 200, "big": 2**40},
        [("exception", 1500, {"exception.type": "ValueError"}, 0)],
        None,
        2,
        "bad",
        scope,
        (1, 0, 0),
    )
    encoder = OtlpSpanEncoder()
    request = ExportTraceServiceRequest.FromString(
        encoder.encode([record, *spans, record], spans[0].resource)
    )
    (resource_spans,) = request.resource_spans
    by_scope = {s.scope.name: list(s.spans) for s in resource_spans.scope_spans}
    assert len(by_scope["chatai_otel.web"]) == 2 and len(by_scope["lib.a"]) == 1
    span = by_scope["chatai_otel.web"][0]
    assert span.trace_id == (7).to_bytes(16, "big") and span.span_id == (8).to_bytes(8, "big")
    assert span.parent_span_id == (9).to_bytes(8, "big")
    assert (span.name, span.kind, span.start_time_unix_nano, span.end_time_unix_nano) == (
        "GET /x",
        2,
        1000,
        2000,
    )
    assert attributes_of(span.attributes) == {
        "http.route": "/x",
        "http.response.status_code": 200,
        "big": 2**40,
    }
    assert [(e.name, attributes_of(e.attributes)) for e in span.events] == [
        ("exception", {"exception.type": "ValueError"})
    ]
    assert (span.status.code, span.status.message) == (2, "bad")
    assert span.dropped_attributes_count == 1 and span.flags == 0x101


# --- the processor ---------------------------------------------------------------------------


QUEUE_SCOPE = InstrumentationScope("queue")


def _record(n: int):
    now = time.time_ns()
    return (n + 1, n + 1, 0, 0x101, None, "queued", 1, now, now, {"n": n}, None, None, 0, None,
            QUEUE_SCOPE, None)  # fmt: skip


def _points(reader: InMemoryMetricReader) -> dict:
    """(error.type, metric name) -> value of every point the reader holds."""
    return {
        (point.attributes.get("error.type"), metric.name): point.value
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }


def test_full_queue_drops_counts_and_never_blocks(receiver):
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
    processor = SpanExportProcessor(
        exporter, schedule_delay=60, max_queue_size=100, max_export_batch_size=512,
        meter_provider=meters,
    )  # fmt: skip
    try:
        started = time.perf_counter()
        for n in range(5000):
            processor.submit(_record(n))
        assert time.perf_counter() - started < 1.0  # nothing waited for the network
        assert processor.dropped == 4900 and processor.queued == 100
        assert processor.force_flush(10_000)
        spans = receiver.wait_for_spans(100, timeout=5)
        assert sorted(s.attributes["n"] for s in spans) == list(range(100))
        points = _points(reader)
        assert points[("queue_full", "otel.sdk.processor.span.processed")] == 4900
        assert points[(None, "otel.sdk.processor.span.processed")] == 100
        assert points[(None, "otel.sdk.processor.span.queue.capacity")] == 100
    finally:
        processor.shutdown()


def test_spans_lost_after_the_exporters_retries_are_counted_as_export_failed():
    """A collector that is down: each batch the exporter gives up on is counted, not silent."""
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    closed = f"127.0.0.1:{free_port()}"
    exporter = grpc_span_exporter(endpoint=closed, insecure=True, timeout=1)
    processor = SpanExportProcessor(
        exporter, schedule_delay=60, max_queue_size=100, max_export_batch_size=10,
        meter_provider=meters,
    )  # fmt: skip
    try:
        for n in range(20):
            processor.submit(_record(n))
        processor.force_flush(10_000)
        points = _points(reader)
        assert points[("export_failed", "otel.sdk.processor.span.processed")] == 20
        assert (None, "otel.sdk.processor.span.processed") not in points
        assert processor.failed == 20 and processor.dropped == 0
    finally:
        processor.shutdown()


def test_a_hanging_collector_never_blocks_the_caller(receiver):
    receiver.delay = 2.0
    exporter = grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
    processor = SpanExportProcessor(
        exporter, schedule_delay=0.05, max_queue_size=100, max_export_batch_size=50
    )
    try:
        started = time.perf_counter()
        for n in range(5000):
            processor.submit(_record(n))
        assert time.perf_counter() - started < 1.0
        assert processor.dropped >= 5000 - 100 - 50 * 2
    finally:
        receiver.delay = 0.0
        processor.shutdown()


def test_full_batches_leave_at_once_and_the_rest_on_the_schedule(receiver):
    exporter = grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True)
    processor = SpanExportProcessor(exporter, schedule_delay=0.3, max_export_batch_size=100)
    try:
        for n in range(250):  # two full batches and a partial one, no flush
            processor.submit(_record(n))
        spans = receiver.wait_for_spans(250, timeout=5)
        assert sorted(s.attributes["n"] for s in spans) == list(range(250))
        assert receiver.counts()["traces_requests"] <= 4
    finally:
        processor.shutdown()


def test_flush_and_shutdown_deliver_everything_over_both_transports(receiver):
    for factory, endpoint in (
        (grpc_span_exporter, receiver.grpc_endpoint),
        (http_span_exporter, receiver.http_endpoint + "/v1/traces"),
    ):
        receiver.clear()
        kwargs = {"insecure": True} if factory is grpc_span_exporter else {}
        processor = SpanExportProcessor(
            factory(endpoint=endpoint, **kwargs), schedule_delay=60, max_export_batch_size=64
        )
        processor.resource = Resource({"service.name": "flushed"})
        for n in range(100):
            processor.submit(_record(n))
        assert processor.force_flush(10_000)
        receiver.wait_for_spans(100, timeout=5)
        for n in range(100, 130):
            processor.submit(_record(n))
        processor.shutdown()
        spans = receiver.wait_for_spans(130, timeout=5)
        assert sorted(s.attributes["n"] for s in spans) == list(range(130))
        assert {s.resource["service.name"] for s in spans} == {"flushed"}
        assert processor.exported == 130 and processor.dropped == 0
        processor.submit(_record(999))  # after shutdown: dropped, counted, no error
        assert processor.dropped == 1


def test_forked_child_exports_its_own_spans_once_with_its_own_instance_id(receiver):
    script = textwrap.dedent(
        """
        import os
        import chatai_otel.setup
        from chatai_otel import current
        from opentelemetry import trace
        tracer = trace.get_tracer("fork.app")
        tracer.start_span("before.fork").end()
        pid = os.fork()
        if pid == 0:
            tracer.start_span("in.child").end()
            current().shutdown(5)
            os._exit(0)
        os.waitpid(pid, 0)
        tracer.start_span("in.parent").end()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=telemetry_env(receiver),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    receiver.wait_for_spans(3, lambda s: s.scope == "fork.app", timeout=10)
    time.sleep(0.5)
    spans = {s.name: s for s in receiver.spans() if s.scope == "fork.app"}
    assert sorted(spans) == ["before.fork", "in.child", "in.parent"]
    assert len([s for s in receiver.spans() if s.scope == "fork.app"]) == 3
    child = spans["in.child"].resource
    parent = spans["in.parent"].resource
    assert child["service.instance.id"] != parent["service.instance.id"]
    assert child["process.pid"] != parent["process.pid"]


def test_sdk_span_exception_text_is_scrubbed_before_it_leaves(receiver):
    """App code and instrumentations record exceptions with the SDK's own record_exception,
    which copies str(exc) and the traceback verbatim: the exporter scrubs them."""
    provider = TracerProvider(resource=Resource({"service.name": "app"}), shutdown_on_exit=False)
    SpanExportProcessor(
        grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True), schedule_delay=60
    ).attach(provider)
    tracer = provider.get_tracer("app.code")
    try:
        with tracer.start_as_current_span("failing"):
            raise RuntimeError("login failed password=hunter2pw Authorization: Bearer xyz")
    except RuntimeError:
        pass
    span = tracer.start_span("recorded")
    span.record_exception(ValueError("cannot reach postgresql://app:s3cretpw@db/chat"))
    span.add_event("note", {"exception.message": "kept: not an exception event"})
    span.end()
    assert provider.force_flush(10_000)
    spans = {s.name: s for s in receiver.wait_for_spans(2, timeout=5)}
    provider.shutdown()
    failing, recorded = spans["failing"], spans["recorded"]
    exported = repr((failing.events, failing.status_message, recorded.events))
    for secret in ("hunter2pw", "xyz", "s3cretpw"):
        assert secret not in exported, secret
    event = failing.events[0]["attributes"]
    assert event["exception.type"] == "RuntimeError"
    assert "password=[REDACTED]" in event["exception.message"]
    assert "Authorization: [REDACTED]" in event["exception.message"]
    assert "password=[REDACTED]" in event["exception.stacktrace"]
    assert failing.status_code == 2 and "password=[REDACTED]" in failing.status_message
    assert "app:[REDACTED]@db" in recorded.events[0]["attributes"]["exception.message"]
    assert recorded.events[1]["attributes"] == {"exception.message": "kept: not an exception event"}
