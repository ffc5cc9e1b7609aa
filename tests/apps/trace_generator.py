"""Two halves of the same traces from two processes, for the scale-out tests.

``python trace_generator.py <role> <first> <count> [<per_second>]`` sends traces number
``first`` .. ``first + count - 1``. Role ``api`` sends each trace's root span (SERVER) and a
child (INTERNAL); role ``worker`` sends one CONSUMER span whose parent is the root, from its
own process, so the spans of one trace reach the agents from two processes. Both roles derive
the same ids from the trace number, so the test knows every trace's spans in advance.

Every trace number's kind is fixed too (:func:`kind_of`): ``error`` (the worker's span has
status ERROR), ``slow`` (the root lasts 2.5 s) or ``normal``. With ``per_second`` the traces
are spread over time (for a run during which a gateway is killed); without, they go at once.
Prints one JSON line at the end: what the SDK exporter reported (spans sent and failed).
"""

from __future__ import annotations

import json
import os
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

SLOW_NS = 2_500_000_000


def trace_id_of(number: int) -> int:
    return 0x5CA1E0000000000000000000000000000 + number * 0x9E3779B97F4A7C15 + 1 & (2**128 - 1)


def root_span_id_of(number: int) -> int:
    return (number * 0x2545F4914F6CDD1D + 0x1000) & (2**64 - 1) or 1


def kind_of(number: int) -> str:
    """5 % error traces, 5 % slow ones, the rest normal: fixed per trace number (every trace
    an error with ``GENERATOR_ALL_ERRORS=1``: all kept, so that every loss shows)."""
    if os.environ.get("GENERATOR_ALL_ERRORS") == "1":
        return "error"
    remainder = number % 20
    return "error" if remainder == 0 else "slow" if remainder == 1 else "normal"


class _Ids(IdGenerator):
    """The ids the test expects: the root's from the trace number, the others random."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_ids: list[int] = []
        self._fallback = int.from_bytes(os.urandom(8), "big") | 1

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        if self.span_ids:
            return self.span_ids.pop()
        self._fallback = (self._fallback * 6364136223846793005 + 1) & (2**64 - 1) or 1
        return self._fallback


class _Counting(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.sent = 0
        self.failed = 0

    def export(self, spans):  # type: ignore[no-untyped-def]
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.sent += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def main(role: str, first: int, count: int, per_second: float) -> None:
    ids = _Ids()
    exporter = _Counting(OTLPSpanExporter(endpoint=os.environ["AGENT_ENDPOINT"], insecure=True))
    provider = TracerProvider(
        resource=Resource({"service.name": f"scaleout-{role}"}), id_generator=ids
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=200_000, max_export_batch_size=512, schedule_delay_millis=200
        )
    )
    tracer = provider.get_tracer("scaleout")
    started = time.monotonic()
    for offset in range(count):
        number = first + offset
        if per_second:
            delay = started + offset / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        kind = kind_of(number)
        now = time.time_ns()
        end = now + (SLOW_NS if kind == "slow" else 3_000_000)
        if role == "api":
            ids.trace_id = trace_id_of(number)
            ids.span_ids = [root_span_id_of(number)]
            root = tracer.start_span(
                "GET /documents",
                kind=SpanKind.SERVER,
                start_time=now,
                attributes={"trace.number": number},
            )
            child = tracer.start_span(
                "render", context=set_span_in_context(root), start_time=now + 1000
            )
            child.end(end_time=now + 2_000_000)
            root.end(end_time=end)
        else:
            parent = SpanContext(
                trace_id_of(number),
                root_span_id_of(number),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            span = tracer.start_span(
                "process chatai:jobs",
                context=set_span_in_context(NonRecordingSpan(parent)),
                kind=SpanKind.CONSUMER,
                start_time=now + 10_000,
                attributes={"trace.number": number},
            )
            if kind == "error":
                span.set_status(Status(StatusCode.ERROR, "job failed"))
            span.end(end_time=now + 1_000_000)
    provider.force_flush(60_000)
    provider.shutdown()
    print(json.dumps({"role": role, "sent": exporter.sent, "failed": exporter.failed}), flush=True)


if __name__ == "__main__":
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), rate)
