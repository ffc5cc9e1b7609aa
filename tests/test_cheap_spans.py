"""FastSpan / FastTracer: real API spans, exported once through the span queue, SDK rules kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from chatai_otel.export.cheap_spans import FastSpan, FastTracer
from chatai_otel.export.spans import SpanExportProcessor, grpc_span_exporter
from chatai_otel.spans import scrub_sdk_span_exceptions

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


@pytest.fixture
def provider(receiver) -> Iterator[TracerProvider]:
    """An SDK provider whose only processor is ours, exporting to the real receiver."""
    tracer_provider = TracerProvider(
        resource=Resource({"service.name": "fast"}), shutdown_on_exit=False
    )
    SpanExportProcessor(
        grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True),
        schedule_delay=60,
    ).attach(tracer_provider)
    yield tracer_provider
    tracer_provider.shutdown()


def _flush(provider: TracerProvider) -> None:
    assert provider.force_flush(10_000)


def test_fast_span_is_the_parent_of_sdk_spans_and_both_arrive_once(provider, receiver):
    fast = FastTracer("chatai_otel.web", "9.9", provider)
    server = fast.start_span("GET /x", kind=SpanKind.SERVER, attributes={"http.route": "/x"})
    assert isinstance(server, FastSpan)
    token = otel_context.attach(trace.set_span_in_context(server))
    try:
        with provider.get_tracer("redis").start_as_current_span("GET") as child:
            child.set_attribute("db.system.name", "redis")
        sql = fast.start_span("SELECT test", kind=SpanKind.CLIENT, attributes={"n": 1})
        sql.end()
    finally:
        otel_context.detach(token)
    server.set_attribute("user.id", "42")
    server.end()
    server.end()  # a second end changes nothing and exports nothing
    _flush(provider)
    spans = receiver.wait_for_spans(3, timeout=5)
    assert len(spans) == 3
    by_name = {s.name: s for s in spans}
    root = by_name["GET /x"]
    assert root.kind == 2 and root.parent_span_id == ""
    assert root.attributes == {"http.route": "/x", "user.id": "42"}
    assert root.scope == "chatai_otel.web" and root.resource["service.name"] == "fast"
    for name in ("GET", "SELECT test"):
        assert by_name[name].trace_id == root.trace_id
        assert by_name[name].parent_span_id == root.span_id
    assert by_name["SELECT test"].kind == 3
    assert root.start_ns <= by_name["GET"].start_ns <= by_name["GET"].end_ns <= root.end_ns


def test_another_processor_gets_sdk_spans_so_it_sees_everything(provider, receiver):
    fast = FastTracer("chatai_otel.web", None, provider)
    assert isinstance(fast.start_span("before"), FastSpan)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = fast.start_span("after", attributes={"a": 1})
    assert not isinstance(span, FastSpan)
    span.end()
    assert [s.name for s in memory.get_finished_spans()] == ["after"]
    _flush(provider)
    assert [s.name for s in receiver.wait_for_spans(1, timeout=5)] == ["after"]


def test_no_sdk_provider_means_api_spans():
    fast = FastTracer("x", None, trace.NoOpTracerProvider())
    span = fast.start_span("nothing")
    assert not span.is_recording()
    span.end()


def test_sampling_follows_the_providers_sampler(receiver):
    remote_unsampled = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(0))
    remote_sampled = SpanContext(1, 3, is_remote=True, trace_flags=TraceFlags(1))
    for sampler, parent, recorded in (
        (ParentBased(TraceIdRatioBased(1.0)), remote_unsampled, False),
        (ParentBased(TraceIdRatioBased(1.0)), remote_sampled, True),
        (ALWAYS_OFF, None, False),
        (TraceIdRatioBased(0.0), None, False),
        (ParentBased(ALWAYS_OFF), remote_sampled, True),
    ):
        tracer_provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
        SpanExportProcessor(
            grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True)
        ).attach(tracer_provider)
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        span = FastTracer("s", None, tracer_provider).start_span("x", context=context)
        assert span.is_recording() is recorded, (sampler, parent)
        assert span.get_span_context().trace_flags.sampled is recorded
        if parent is not None:
            assert span.get_span_context().trace_id == 1
        tracer_provider.shutdown()


def test_the_default_sampler_follows_a_remote_parent(provider, receiver):
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    context = trace.set_span_in_context(NonRecordingSpan(remote))
    span = FastTracer("s", None, provider).start_span("child", context=context)
    span.end()
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    context = trace.set_span_in_context(NonRecordingSpan(unsampled))
    assert not FastTracer("s", None, provider).start_span("no", context=context).is_recording()
    _flush(provider)
    (received,) = receiver.wait_for_spans(1, timeout=5)
    assert received.trace_id == f"{0xABC:032x}" and received.parent_span_id == f"{0xDEF:016x}"


def test_attributes_from_app_code_are_validated_like_the_sdk_does(receiver):
    tracer_provider = TracerProvider(
        span_limits=SpanLimits(max_span_attributes=4, max_attribute_length=5),
        shutdown_on_exit=False,
    )
    SpanExportProcessor(grpc_span_exporter(endpoint=receiver.grpc_endpoint, insecure=True)).attach(
        tracer_provider
    )
    span = FastTracer("v", None, tracer_provider).start_span("x", attributes={"kept": 1})
    span.set_attribute("", "empty keys are dropped")
    span.set_attribute("object", object)  # unknown types become their str()
    span.set_attribute("list", ["a", "b"])
    span.set_attribute("long", "truncated to five")
    span.set_attribute("fifth", True)  # over the limit: the oldest goes
    span.set_attributes({"kept": 2})
    span.end()
    span.set_attribute("late", 1)  # after end: ignored
    tracer_provider.force_flush()
    (received,) = receiver.wait_for_spans(1, timeout=5)
    assert received.attributes == {
        "list": ["a", "b"],
        "long": "trunc",
        "fifth": True,
        "kept": 2,
    }
    tracer_provider.shutdown()


def test_status_events_links_and_exceptions(provider, receiver):
    tracer = FastTracer("s", None, provider)
    linked = SpanContext(5, 6, is_remote=True, trace_flags=TraceFlags(1))
    span = tracer.start_span("x", links=[Link(linked, {"why": "batch"})])
    span.set_status(StatusCode.UNSET)
    span.set_status(Status(StatusCode.ERROR, "first"))
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "ignored: OK is final")
    span.add_event("step", {"n": 1})
    span.record_exception(ValueError("login failed: password=hunter2"))
    span.end()
    with pytest.raises(RuntimeError), tracer.start_as_current_span("failing"):
        raise RuntimeError("token Bearer abc.def.ghi leaked")
    _flush(provider)
    spans = {s.name: s for s in receiver.wait_for_spans(2, timeout=5)}
    x = spans["x"]
    assert (x.status_code, x.status_message) == (1, "")
    assert [e["name"] for e in x.events] == ["step", "exception"]
    exception = x.events[1]["attributes"]
    assert exception["exception.type"] == "ValueError"
    assert "hunter2" not in exception["exception.message"]
    assert "hunter2" not in exception["exception.stacktrace"]
    failing = spans["failing"]
    assert failing.status_code == 2
    assert "abc.def.ghi" not in failing.status_message
    assert failing.events[0]["attributes"]["exception.type"] == "RuntimeError"
    assert "abc.def.ghi" not in failing.events[0]["attributes"]["exception.message"]


def test_a_long_traceback_cut_to_its_tail_keeps_no_part_of_a_secret(provider, receiver):
    """The exception event keeps the last 8192 characters of the traceback, scrubbed before
    the cut: a URL password straddling the cut is redacted whole, not left half."""
    secret = "Qz7Kp2Vw9Xr4Jm8Ln3Bt"
    # the traceback ends "...@db " + 8180 * "y" + "\n": the cut falls inside the secret
    error = ValueError(f"{'z' * 100} postgresql://app:{secret}@db {'y' * 8180}")
    span = FastTracer("s", None, provider).start_span("long")
    span.record_exception(error)
    span.end()
    _flush(provider)
    (exported,) = receiver.wait_for_spans(1, timeout=5)
    trace_text = exported.events[0]["attributes"]["exception.stacktrace"]
    assert trace_text.startswith("...\n") and trace_text.endswith("y\n")
    for start in range(len(secret) - 3):
        assert secret[start : start + 4] not in trace_text, secret[start : start + 4]


# --- SDK spans: exception text scrubbed where it is written ------------------------------------


def test_sdk_span_exception_text_reaches_every_processor_scrubbed():
    """Not only our exporter: a processor of the app's own (here an in-memory exporter) and
    the console exporter get the SDK span's exception event and status description scrubbed."""
    scrub_sdk_span_exceptions()
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
        raise ValueError("login failed for postgresql://app:hunter2secret@db/chat")
    with tracer.start_as_current_span("explicit") as span:
        try:
            raise RuntimeError("Authorization: Bearer abcdefghijklmnop0123456789")
        except RuntimeError as exc:
            span.record_exception(exc, attributes={"chatai.extra": "kept"})
        span.set_status(trace.StatusCode.ERROR, "password=hunter2secret")
    failed, explicit = memory.get_finished_spans()

    event = failed.events[0]
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert "hunter2secret" not in event.attributes["exception.message"]
    assert "[REDACTED]" in event.attributes["exception.message"]
    assert "hunter2secret" not in event.attributes["exception.stacktrace"]
    assert "raise ValueError" in event.attributes["exception.stacktrace"]
    assert "hunter2secret" not in (failed.status.description or "")
    assert failed.status.description and failed.status.description.startswith("ValueError: ")

    event = explicit.events[0]
    assert "abcdefghijklmnop0123456789" not in event.attributes["exception.message"]
    assert "abcdefghijklmnop0123456789" not in event.attributes["exception.stacktrace"]
    assert event.attributes["chatai.extra"] == "kept"
    assert event.attributes["exception.escaped"] == "False"
    assert explicit.status.description == "password=[REDACTED]"


def test_console_exporter_output_holds_no_secret_of_an_exception():
    code = textwrap.dedent(
        """
        import chatai_otel
        from opentelemetry import trace
        telemetry = chatai_otel.configure()
        tracer = trace.get_tracer("console-test")
        try:
            with tracer.start_as_current_span("fails"):
                raise ValueError("token=consolesecret123456 declined")
        except ValueError:
            pass
        telemetry.shutdown(5)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_"))}
    env.update(
        OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "fails"' in done.stdout  # the span was printed
    assert "exception.stacktrace" in done.stdout
    assert "consolesecret123456" not in done.stdout + done.stderr


def test_console_exporter_output_holds_no_secret_app_code_set_on_a_span():
    code = textwrap.dedent(
        """
        import chatai_otel
        from opentelemetry import trace
        telemetry = chatai_otel.configure()
        tracer = trace.get_tracer("console-test")
        with tracer.start_as_current_span("planted", attributes={"password": "consolepw123456"}) as span:
            span.set_attribute("note", "Bearer consolebearer123456")
            span.add_event("seen", {"client_secret": "consolesecret123456"})
            span.add_link(span.get_span_context(), {"url": "https://x/?sig=consolesig123456"})
        telemetry.shutdown(5)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_"))}
    env.update(
        OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout[done.stdout.index("{") :])
    assert printed["attributes"] == {"password": "[REDACTED]", "note": "Bearer [REDACTED]"}
    assert printed["events"][0]["attributes"] == {"client_secret": "[REDACTED]"}
    assert printed["links"][0]["attributes"] == {"url": "https://x/?sig=[REDACTED]"}
    for secret in ("consolepw", "consolebearer", "consolesecret", "consolesig"):
        assert secret not in done.stdout + done.stderr
