"""OTLP export of spans: one bounded queue, one worker thread, a fast wire encoder.

Why not the SDK's ``BatchSpanProcessor`` + OTLP exporter? Measured here (see
``benchmarks/bench_web.py``), the stock encoder spends ~25-60 µs per span
building protobuf message objects on the batch thread, and under the GIL that
time is taken from the requests the process is serving. Here the worker writes
the OTLP protobuf bytes directly (a few µs per span; keys, names, scopes and the
resource are encoded once and cached) and hands them to the SDK's own exporters
(retries, backoff, TLS, headers, compression and their self-metrics stay
theirs) — the same design as :mod:`chatai_otel.log_export`.

Two kinds of record share the queue:

* spans of the SDK (redis, httpx, events, @track, ...): :meth:`SpanExportProcessor.on_end`
  appends the ``ReadableSpan`` itself and the worker reads it;
* the cheap spans of :mod:`chatai_otel.tracing` (server and SQL spans): they
  :meth:`~SpanExportProcessor.submit` a plain tuple (:data:`SpanRecord`).

The queue is bounded: when it is full the new span is dropped and counted
(``otel.sdk.processor.span.processed`` with ``error.type=queue_full``, and
:attr:`SpanExportProcessor.dropped`); nothing on the calling thread ever waits
for the network. After ``fork`` the child gets a fresh queue and worker.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

# The protobuf primitives are shared with the log encoder (same wire format, same caches).
from chatai_otel.log_export import _VARINTS, _any_value, _field, _utf8, _varint

__all__ = [
    "EncodedSpanExporter",
    "OtlpSpanEncoder",
    "SpanExportProcessor",
    "SpanRecord",
    "grpc_span_exporter",
    "http_span_exporter",
    "processor_of",
]

_diagnostics = logging.getLogger("chatai_otel.export")

# A finished span as a plain tuple, cheap to build on the calling thread:
#   (trace_id, span_id, parent_span_id (0: root), flags (OTLP span flags: W3C trace flags
#    in the low byte, 0x100 "is_remote known", 0x200 "parent is remote"), trace_state
#    (a TraceState or None), name, kind (OTLP enum: 1 internal .. 5 consumer), start_ns,
#    end_ns, attributes, events, links, status_code (0 unset, 1 ok, 2 error),
#    status_message, scope, dropped)
# events: [(name, time_ns, attributes | None, dropped_attributes)], links:
# [(trace_id, span_id, trace_state, attributes | None, flags, dropped_attributes)];
# dropped: None or (dropped_attributes, dropped_events, dropped_links). Nobody mutates
# a record's mappings after submit.
SpanRecord = tuple[
    int,
    int,
    int,
    int,
    Any,
    str,
    int,
    int,
    int,
    Mapping[str, Any] | None,
    Sequence[tuple[str, int, Mapping[str, Any] | None, int]] | None,
    Sequence[tuple[int, int, Any, Mapping[str, Any] | None, int, int]] | None,
    int,
    "str | None",
    InstrumentationScope,
    "tuple[int, int, int] | None",
]

PROTO_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200

# Span: start_time_unix_nano (7, fixed64), end_time_unix_nano (8, fixed64)
_pack_times = struct.Struct("<BQBQ").pack
# Span.flags (16, fixed32): tag 0x85 0x01
_pack_flags = struct.Struct("<BBI").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_KINDS = [b"\x30" + bytes([k]) for k in range(6)]
_STATUS_CODES = [b"", b"\x18\x01", b"\x18\x02"]


def _ids(trace_id: int, span_id: int) -> bytes:
    return b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big")


def _trace_state(state: Any) -> str:
    if not state:
        return ""
    return ",".join(f"{key}={value}" for key, value in state.items())


def _count(tag: bytes, count: int) -> bytes:
    return tag + _varint(count) if count else b""


def record_of(span: ReadableSpan) -> SpanRecord:
    """The :data:`SpanRecord` of an SDK span (read on the worker thread)."""
    context = span.context
    parent = span.parent
    assert context is not None
    flags = int(context.trace_flags) | FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= FLAG_IS_REMOTE
    events = [
        (event.name, event.timestamp, event.attributes, event.dropped_attributes)
        for event in span.events
    ]
    links = [
        (
            link.context.trace_id,
            link.context.span_id,
            link.context.trace_state,
            link.attributes,
            int(link.context.trace_flags)
            | FLAG_HAS_IS_REMOTE
            | (FLAG_IS_REMOTE if link.context.is_remote else 0),
            link.dropped_attributes,
        )
        for link in span.links
    ]
    status = span.status
    dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    return (
        context.trace_id,
        context.span_id,
        parent.span_id if parent is not None else 0,
        flags,
        context.trace_state,
        span.name,
        PROTO_KIND.get(span.kind, 1),
        span.start_time or 0,
        span.end_time or 0,
        span.attributes,
        events or None,
        links or None,
        status.status_code.value if status is not None else 0,
        status.description if status is not None else None,
        span.instrumentation_scope or InstrumentationScope("unknown"),
        dropped if any(dropped) else None,
    )


class OtlpSpanEncoder:
    """Encodes spans as one serialized ``ExportTraceServiceRequest``.

    Keeps bounded caches of what repeats from span to span: encoded attribute
    keys and short string values, span names, scopes and the resource.
    """

    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, Any], bytes] = {}
        self._names: dict[str, bytes] = {}
        self._scopes: dict[Any, bytes] = {}
        self._resource: tuple[object, bytes] | None = None

    def encode(
        self, spans: Sequence[SpanRecord | ReadableSpan], resource: Resource | None
    ) -> bytes:
        """The serialized request for ``spans`` (grouped by scope, one resource)."""
        by_scope: dict[Any, list[bytes]] = {}
        encode_span = self._span
        for span in spans:
            try:
                record = span if type(span) is tuple else record_of(span)  # type: ignore[arg-type]
                encoded = encode_span(record)
            except Exception:  # one bad span never costs the batch
                continue
            scope = record[14]
            group = by_scope.get(scope)
            if group is None:
                by_scope[scope] = [encoded]
            else:
                group.append(encoded)
        scope_spans = b"".join(
            [
                _field(b"\x12", self._scope(scope) + b"".join(items))
                for scope, items in by_scope.items()
            ]
        )
        return _field(b"\x0a", self._encoded_resource(resource) + scope_spans)

    # --- parts -----------------------------------------------------------------------

    def _span(self, record: SpanRecord) -> bytes:
        """``ScopeSpans.spans`` (field 2) holding one ``Span``."""
        (trace_id, span_id, parent_id, flags, trace_state, name, kind, start, end, attributes,
         events, links, status_code, status_message, _scope, dropped) = record  # fmt: skip
        parts = [_ids(trace_id, span_id)]
        if trace_state:
            parts.append(_field(b"\x1a", _utf8(_trace_state(trace_state))))
        if parent_id:
            parts.append(b"\x22\x08" + parent_id.to_bytes(8, "big"))
        encoded_name = self._names.get(name)
        if encoded_name is None:
            encoded_name = self._name(name)
        parts.append(encoded_name)
        parts.append(_KINDS[kind])
        parts.append(_pack_times(0x39, start, 0x41, end))
        if attributes:
            parts.append(self._attributes(b"\x4a", attributes))
        if events:
            for event_name, timestamp, event_attributes, event_dropped in events:
                body = (
                    b"\x09"
                    + _pack_fixed64(timestamp)
                    + _field(b"\x12", _utf8(event_name))
                    + (self._attributes(b"\x1a", event_attributes) if event_attributes else b"")
                    + _count(b"\x20", event_dropped)
                )
                parts.append(_field(b"\x5a", body))
        if links:
            for (
                link_trace,
                link_span,
                link_state,
                link_attributes,
                link_flags,
                link_dropped,
            ) in links:
                body = (
                    _ids(link_trace, link_span)
                    + (_field(b"\x1a", _utf8(_trace_state(link_state))) if link_state else b"")
                    + (self._attributes(b"\x22", link_attributes) if link_attributes else b"")
                    + _count(b"\x28", link_dropped)
                    + b"\x35"
                    + _pack_fixed32(link_flags)
                )
                parts.append(_field(b"\x6a", body))
        if dropped is not None:
            parts.append(_count(b"\x50", dropped[0]))
            parts.append(_count(b"\x60", dropped[1]))
            parts.append(_count(b"\x70", dropped[2]))
        if status_code or status_message:
            status = _STATUS_CODES[status_code]
            if status_message:
                status = _field(b"\x12", _utf8(status_message)) + status
            parts.append(_field(b"\x7a", status))
        parts.append(_pack_flags(0x85, 0x01, flags & 0xFFFFFFFF))
        body = b"".join(parts)
        return b"\x12" + _varint(len(body)) + body

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Repeated ``KeyValue`` under ``tag``; short strings and small ints are cached."""
        pairs = self._pairs
        out = []
        for key, value in attributes.items():
            if value is None:  # no value: left out, as the SDK does
                continue
            kind = type(value)
            if (kind is str and len(value) <= 64) or (kind is int and 0 <= value < 16384):
                cache_key = (key, value) if kind is str else (key, -value - 1)
                encoded = pairs.get(cache_key)
                if encoded is None:
                    encoded = self._pair(key, value)
                    if len(pairs) >= self._CACHE_LIMIT:
                        pairs.clear()
                    pairs[cache_key] = encoded
            else:
                encoded = self._pair(key, value)
            out.append(encoded)
        # Each pair is encoded as Span.attributes (field 9); events, links, scopes and the
        # resource keep their attributes under another (one-byte) field tag.
        return b"".join(out) if tag == b"\x4a" else self._retag(tag, out)

    def _retag(self, tag: bytes, encoded_pairs: list[bytes]) -> bytes:
        return b"".join([tag + pair[1:] for pair in encoded_pairs])

    @staticmethod
    def _pair(key: str, value: Any) -> bytes:
        """One ``KeyValue`` as field 9 of ``Span`` (callers re-tag it for events and links)."""
        if type(value) is int and 0 <= value < 16384:
            encoded_value = b"\x18" + _VARINTS[value]
        else:
            encoded_value = _any_value(value)
        kv = _field(b"\x0a", _utf8(str(key))) + _field(b"\x12", encoded_value)
        return b"\x4a" + _varint(len(kv)) + kv

    def _name(self, name: str) -> bytes:
        encoded = _field(b"\x2a", _utf8(name))
        if len(self._names) >= self._CACHE_LIMIT:
            self._names.clear()
        self._names[name] = encoded
        return encoded

    def _scope(self, scope: InstrumentationScope) -> bytes:
        """``ScopeSpans.scope`` (and schema_url)."""
        cached = self._scopes.get(scope)
        if cached is not None:
            return cached
        body = _field(b"\x0a", _utf8(scope.name))
        if scope.version:
            body += _field(b"\x12", _utf8(scope.version))
        for key, value in (scope.attributes or {}).items():
            body += self._retag(b"\x1a", [self._pair(key, value)])
        encoded = _field(b"\x0a", body)
        if scope.schema_url:
            encoded += _field(b"\x1a", _utf8(scope.schema_url))
        if len(self._scopes) >= self._CACHE_LIMIT:
            self._scopes.clear()
        self._scopes[scope] = encoded
        return encoded

    def _encoded_resource(self, resource: Resource | None) -> bytes:
        """``ResourceSpans.resource`` + schema_url, re-encoded only when the attribute map
        changes (sdk.py swaps it after fork for a new service.instance.id)."""
        if resource is None:
            return b""
        attributes = resource.attributes
        if self._resource is not None and self._resource[0] is attributes:
            return self._resource[1]
        body = self._retag(b"\x0a", [self._pair(k, v) for k, v in attributes.items()])
        encoded = _field(b"\x0a", body)
        if resource.schema_url:
            encoded += _field(b"\x1a", _utf8(resource.schema_url))
        self._resource = (attributes, encoded)
        return encoded


# --- transports ------------------------------------------------------------------------


class EncodedSpanExporter(Protocol):
    """Sends one already-encoded ``ExportTraceServiceRequest``."""

    def export_encoded(self, payload: bytes, count: int) -> bool: ...

    def shutdown(self) -> None: ...


def grpc_span_exporter(**kwargs: Any) -> EncodedSpanExporter:
    """The SDK's gRPC span exporter, sending our bytes as they are (no re-encoding)."""
    from opentelemetry.exporter.otlp.proto.grpc import exporter, trace_exporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    # Typed as Any: we override the mixin's protected hooks, which its generics do not describe.
    base: Any = trace_exporter.OTLPSpanExporter
    mixin: Any = exporter.OTLPExporterMixin

    class _Batch:
        __slots__ = ("count", "payload")

        def __init__(self, payload: bytes, count: int) -> None:
            self.payload = payload
            self.count = count

    class _RawTraceStub:
        """Like ``TraceServiceStub`` but the request is already serialized."""

        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )

    class GrpcEncodedSpanExporter(base):  # type: ignore[misc]
        # The mixin calls _initialize_channel_and_stub() at start and after UNAVAILABLE;
        # we keep its channel handling and swap in a stub that sends bytes unchanged.
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _RawTraceStub(self._channel)

        def _translate_data(self, data: Any) -> Any:
            return data.payload

        def _count_data(self, data: Any) -> int:
            return int(data.count)

        def export_encoded(self, payload: bytes, count: int) -> bool:
            result = mixin._export(self, _Batch(payload, count))
            return bool(result.name == "SUCCESS")

    return GrpcEncodedSpanExporter(**kwargs)


def http_span_exporter(**kwargs: Any) -> EncodedSpanExporter:
    """The SDK's HTTP/protobuf span exporter, posting our bytes through its own client."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    base: Any = trace_exporter.OTLPSpanExporter

    class HttpEncodedSpanExporter(base):  # type: ignore[misc]
        def export_encoded(self, payload: bytes, count: int) -> bool:
            if self._shutdown:
                return False
            with self._metrics.export_operation(count) as result:
                outcome = self._client.export(payload)
                if not outcome.success:
                    result.error = outcome.error
                    return False
            return True

    return HttpEncodedSpanExporter(**kwargs)


# --- the processor ---------------------------------------------------------------------

_registry: weakref.WeakKeyDictionary[TracerProvider, SpanExportProcessor] = (
    weakref.WeakKeyDictionary()
)


def processor_of(provider: object) -> SpanExportProcessor | None:
    """The SpanExportProcessor attached to ``provider`` (None when spans are not exported so)."""
    try:
        return _registry.get(provider)  # type: ignore[call-overload, no-any-return]
    except TypeError:  # not weak-referenceable: not an SDK provider
        return None


class SpanExportProcessor(SpanProcessor):
    """Batches finished spans and ships them with an :class:`EncodedSpanExporter`.

    ``on_end`` takes the SDK's spans, ``submit`` the :data:`SpanRecord` tuples of
    :mod:`chatai_otel.tracing`; both share one bounded queue.
    """

    def __init__(
        self,
        exporter: EncodedSpanExporter,
        *,
        schedule_delay: float = 5.0,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        export_timeout: float = 30.0,
        meter_provider: Any = None,
    ) -> None:
        self._exporter = exporter
        self._encoder = OtlpSpanEncoder()
        self._delay = schedule_delay
        self._max_queue = max_queue_size
        self._max_batch = max_export_batch_size
        self._export_timeout = export_timeout
        self.resource: Resource | None = None
        self._queue: deque[SpanRecord | ReadableSpan] = deque()
        self._wake = threading.Event()
        self._waking = False
        self._export_lock = threading.Lock()
        self._shutdown = False
        self.dropped = 0
        self.exported = 0
        self.failed = 0
        self._last_drop_report = 0.0
        self._metrics = _ProcessorMetrics(meter_provider, self)
        self._worker = self._start_worker()
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := reinit()) and m())

    def attach(self, provider: TracerProvider) -> None:
        """Add to ``provider`` (its resource goes on every export) and make it findable."""
        self.resource = provider.resource
        provider.add_span_processor(self)
        _registry[provider] = self

    # --- calling thread --------------------------------------------------------------

    def submit(self, record: SpanRecord | ReadableSpan) -> None:
        """Queue one finished span; drop (and count) it when the queue is full. Never blocks."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._shutdown:
            self._drop("already_shutdown" if self._shutdown else "queue_full")
            return
        queue.append(record)
        if len(queue) >= self._max_batch and not self._waking:
            self._waking = True
            self._wake.set()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        """An SDK span: queued as it is, read and encoded on the worker."""
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.submit(span)

    def _drop(self, reason: str = "queue_full") -> None:
        self.dropped += 1
        self._metrics.dropped(1, reason)
        if reason != "queue_full":
            return
        now = time.monotonic()
        if now - self._last_drop_report >= 10.0:
            self._last_drop_report = now
            _diagnostics.warning(
                "chatai-otel: span export queue full (%d spans); %d spans dropped so far",
                self._max_queue,
                self.dropped,
            )

    # --- worker ----------------------------------------------------------------------

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="chatai-otel-span-export", daemon=True)
        worker.start()
        return worker

    def _run(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            self._waking = False
            if self._shutdown:
                break
            # Woken by a full batch: send full batches only (under load, what arrives while
            # one is sent would otherwise go out in many small requests); on the timer: all.
            self._export_queued(full_batches_only=woken)
        self._export_queued()

    def _export_queued(
        self, deadline: float | None = None, *, full_batches_only: bool = False
    ) -> bool:
        """Export what is queued now, batch by batch; False if the deadline passed first."""
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with self._export_lock, suppress_instrumentation():
            queue = self._queue
            minimum = self._max_batch if full_batches_only else 1
            while len(queue) >= minimum:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                count = min(len(queue), self._max_batch)
                batch = [queue.popleft() for _ in range(count)]
                self._export_batch(batch)
        return True

    def _export_batch(self, batch: list[SpanRecord | ReadableSpan]) -> None:
        try:
            payload = self._encoder.encode(batch, self.resource)
            ok = self._exporter.export_encoded(payload, len(batch))
        except Exception:
            _diagnostics.exception("chatai-otel: exporting %d spans failed", len(batch))
            ok = False
        if ok:
            self.exported += len(batch)
        else:
            self.failed += len(batch)
        self._metrics.processed(len(batch))

    def _after_fork(self) -> None:
        self._queue = deque()
        self._wake = threading.Event()
        self._waking = False
        self._export_lock = threading.Lock()
        self._worker = self._start_worker()

    # --- lifecycle -------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; False when the deadline passed first."""
        if self._shutdown:
            return not self._queue
        return self._export_queued(deadline=time.monotonic() + timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Export what is queued, stop the worker and the exporter."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._worker.join(self._export_timeout)
        try:
            self._exporter.shutdown()
        except Exception:
            pass

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def capacity(self) -> int:
        return self._max_queue


class _ProcessorMetrics:
    """The semantic-convention self-metrics of a batching span processor (drops included)."""

    def __init__(self, meter_provider: Any, processor: SpanExportProcessor) -> None:
        self._processed: Any = None
        if meter_provider is None:
            return
        try:
            from opentelemetry.semconv._incubating.metrics import otel_metrics

            meter = meter_provider.get_meter("chatai_otel")
            attributes = {
                "otel.component.type": "batching_span_processor",
                "otel.component.name": "chatai_otel_span_processor",
            }
            self._attributes = attributes
            self._processed = otel_metrics.create_otel_sdk_processor_span_processed(meter)
            processor_ref = weakref.ref(processor)

            def observe(get: Callable[[SpanExportProcessor], int]) -> Callable[..., Iterable[Any]]:
                from opentelemetry.metrics import Observation

                def callback(_options: Any) -> Iterable[Any]:
                    live = processor_ref()
                    return [] if live is None else [Observation(get(live), attributes)]

                return callback

            meter.create_observable_up_down_counter(
                otel_metrics.OTEL_SDK_PROCESSOR_SPAN_QUEUE_SIZE,
                callbacks=[observe(lambda p: p.queued)],
                unit="{span}",
                description="The number of spans in the queue of the span processor.",
            )
            meter.create_observable_up_down_counter(
                otel_metrics.OTEL_SDK_PROCESSOR_SPAN_QUEUE_CAPACITY,
                callbacks=[observe(lambda p: p.capacity)],
                unit="{span}",
                description="The maximum number of spans the queue can hold.",
            )
        except Exception:
            self._processed = None

    def processed(self, count: int) -> None:
        if self._processed is not None:
            self._processed.add(count, self._attributes)

    def dropped(self, count: int, reason: str) -> None:
        if self._processed is not None:
            self._processed.add(count, {**self._attributes, "error.type": reason})
