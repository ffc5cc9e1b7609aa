"""OTLP export of spans: one bounded queue, one worker thread, a fast wire encoder.

Why not the SDK's ``BatchSpanProcessor`` + OTLP exporter? Measured here (see
``benchmarks/bench_web.py``), the stock encoder spends ~25-60 µs per span
building protobuf message objects on the batch thread, and under the GIL that
time is taken from the requests the process is serving. Here the worker writes
the OTLP protobuf bytes directly (a few µs per span; keys, names, scopes and the
resource are encoded once and cached) and hands them to the SDK's own exporters
(retries, backoff, TLS, headers, compression and their self-metrics stay
theirs) — the same design as :mod:`chatai_otel.export.logs`.

Two kinds of record share the queue:

* spans of the SDK (redis, httpx, events, @track, ...): :meth:`SpanExportProcessor.on_end`
  appends the ``ReadableSpan`` itself and the worker reads it;
* the cheap spans of :mod:`chatai_otel.export.cheap_spans` (server and SQL spans): they
  :meth:`~SpanExportProcessor.submit` a plain tuple (:data:`SpanRecord`).

The queue is bounded: when it is full the new span is dropped and counted
(``otel.sdk.processor.span.processed`` with ``error.type=queue_full``, and
:attr:`SpanExportProcessor.dropped`); nothing on the calling thread ever waits
for the network. After ``fork`` the child gets a fresh queue and worker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status

from chatai_otel.export.otlp_wire import (
    TABLED,
    VARINTS,
    EncodedPairs,
    ResourceField,
    any_value,
    field,
    scope_message,
    utf8,
    varint,
)
from chatai_otel.export.queue import BatchExportQueue
from chatai_otel.export.senders import EncodedExporter, grpc_encoded_exporter, http_encoded_exporter
from chatai_otel.redaction import TEXT_CACHE_LENGTH, get_scrubber, scrub_text

__all__ = [
    "SPAN_RECORD_FIELDS",
    "OtlpSpanEncoder",
    "ScrubbingSpanExporter",
    "SpanExportProcessor",
    "SpanRecord",
    "grpc_span_exporter",
    "http_span_exporter",
    "processor_of",
]

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

# Its fields by name, in order. A plain tuple with named positions, not a NamedTuple: building
# a 16-field NamedTuple costs about 0.6 µs more per span than a tuple (0.71 vs 0.12 µs, measured
# with timeit on a 2-core machine, 2026-12-07), on the calling thread of every span.
SPAN_RECORD_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "flags", "trace_state", "name", "kind",
    "start_ns", "end_ns", "attributes", "events", "links", "status_code", "status_message",
    "scope", "dropped",
)  # fmt: skip
SPAN_SCOPE = SPAN_RECORD_FIELDS.index("scope")

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
    return tag + varint(count) if count else b""


def record_of(span: ReadableSpan) -> SpanRecord:
    """The :data:`SpanRecord` of an SDK span (read on the worker thread).

    An ERROR status description is scrubbed here; attributes, events and links are
    scrubbed by the encoder, for these and our own spans alike.
    """
    context = span.context
    parent = span.parent
    assert context is not None
    flags = int(context.trace_flags) | FLAG_HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= FLAG_IS_REMOTE
    events = [
        (
            event.name,
            event.timestamp,
            event.attributes,
            event.dropped_attributes,
        )
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
        scrub_text(status.description) if status is not None and status.description else None,
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
        self._pairs = EncodedPairs(self._CACHE_LIMIT)
        self._scrubber = get_scrubber()
        self._names: dict[str, bytes] = {}
        self._scopes: dict[Any, bytes] = {}
        self._resource = ResourceField()

    def encode(
        self, spans: Iterable[SpanRecord | ReadableSpan], resource: Resource | None
    ) -> bytes:
        """The serialized request for ``spans`` (grouped by scope, one resource)."""
        scrubber = get_scrubber()
        if scrubber is not self._scrubber:  # reconfigured: what was cached is stale
            self._scrubber = scrubber
            self._pairs.clear()
        by_scope: dict[Any, list[bytes]] = {}
        encode_span = self._span
        for span in spans:
            try:
                record = span if type(span) is tuple else record_of(span)  # type: ignore[arg-type]
                encoded = encode_span(record)
            except Exception:  # one bad span never costs the batch
                continue
            scope = record[SPAN_SCOPE]
            group = by_scope.get(scope)
            if group is None:
                by_scope[scope] = [encoded]
            else:
                group.append(encoded)
        scope_spans = b"".join(
            [
                field(b"\x12", self._scope(scope) + b"".join(items))
                for scope, items in by_scope.items()
            ]
        )
        return field(b"\x0a", self._resource.encode(resource) + scope_spans)

    # --- parts -----------------------------------------------------------------------

    def _span(self, record: SpanRecord) -> bytes:
        """``ScopeSpans.spans`` (field 2) holding one ``Span``."""
        (trace_id, span_id, parent_id, flags, trace_state, name, kind, start, end, attributes,
         events, links, status_code, status_message, _scope, dropped) = record  # fmt: skip
        parts = [_ids(trace_id, span_id)]
        if trace_state:
            parts.append(field(b"\x1a", utf8(_trace_state(trace_state))))
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
                    + field(b"\x12", utf8(event_name))
                    + (self._attributes(b"\x1a", event_attributes) if event_attributes else b"")
                    + _count(b"\x20", event_dropped)
                )
                parts.append(field(b"\x5a", body))
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
                    + (field(b"\x1a", utf8(_trace_state(link_state))) if link_state else b"")
                    + (self._attributes(b"\x22", link_attributes) if link_attributes else b"")
                    + _count(b"\x28", link_dropped)
                    + b"\x35"
                    + _pack_fixed32(link_flags)
                )
                parts.append(field(b"\x6a", body))
        if dropped is not None:
            parts.append(_count(b"\x50", dropped[0]))
            parts.append(_count(b"\x60", dropped[1]))
            parts.append(_count(b"\x70", dropped[2]))
        if status_code or status_message:
            status = _STATUS_CODES[status_code]
            if status_message:
                status = field(b"\x12", utf8(status_message)) + status
            parts.append(field(b"\x7a", status))
        parts.append(_pack_flags(0x85, 0x01, flags & 0xFFFFFFFF))
        body = b"".join(parts)
        return b"\x12" + varint(len(body)) + body

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Repeated ``KeyValue`` under ``tag``, scrubbed; short strings and small ints cached.

        Every attribute is scrubbed here, whoever set it on whichever span (app code on
        the server span, an instrumentation on an SDK span): the marker under a secret
        key, secret shapes in strings. A cached pair was scrubbed when it was encoded.
        """
        pairs = self._pairs
        cached = pairs.get
        scrub = self._scrub_value
        out = []
        for key, value in attributes.items():
            if value is None:  # no value: left out, as the SDK does
                continue
            kind = type(value)
            if (kind is str and len(value) <= 64) or (kind is int and 0 <= value < 16384):
                cache_key = (key, value) if kind is str else (key, -value - 1)
                encoded = cached(cache_key)
                if encoded is None:
                    encoded = self._pair(key, scrub(key, value))
                    pairs.remember(key, cache_key, encoded)
            else:
                encoded = self._pair(key, scrub(key, value))
            out.append(encoded)
        # Each pair is encoded as Span.attributes (field 9); events, links, scopes and the
        # resource keep their attributes under another (one-byte) field tag.
        return b"".join(out) if tag == b"\x4a" else self._retag(tag, out)

    def _scrub_value(self, key: str, value: Any) -> Any:
        """``Scrubber.scrub_attribute``, with texts that repeat (SQL statements, URLs, user
        agents) looked up in the scrubber's bounded cache instead of scanned on every span."""
        scrubber = self._scrubber
        if type(value) is not str or len(value) > TEXT_CACHE_LENGTH or scrubber.is_secret_key(key):
            return scrubber.scrub_attribute(key, value)
        texts = scrubber.text_cache
        cleaned = texts.get(value)
        if cleaned is None:
            cleaned = scrubber.scrub_text_cached(value)
        return cleaned

    def _retag(self, tag: bytes, encoded_pairs: list[bytes]) -> bytes:
        return b"".join([tag + pair[1:] for pair in encoded_pairs])

    @staticmethod
    def _pair(key: str, value: Any) -> bytes:
        """One ``KeyValue`` as field 9 of ``Span`` (callers re-tag it for events and links)."""
        if type(value) is int and 0 <= value < TABLED:
            encoded_value = b"\x18" + VARINTS[value]
        else:
            encoded_value = any_value(value)
        kv = field(b"\x0a", utf8(str(key))) + field(b"\x12", encoded_value)
        return b"\x4a" + varint(len(kv)) + kv

    def _name(self, name: str) -> bytes:
        encoded = field(b"\x2a", utf8(name))
        if len(self._names) >= self._CACHE_LIMIT:
            self._names.clear()
        self._names[name] = encoded
        return encoded

    def _scope(self, scope: InstrumentationScope) -> bytes:
        """``ScopeSpans.scope`` (and schema_url)."""
        cached = self._scopes.get(scope)
        if cached is None:
            cached = scope_message(scope)
            if len(self._scopes) >= self._CACHE_LIMIT:
                self._scopes.clear()
            self._scopes[scope] = cached
        return cached


# --- the console path ------------------------------------------------------------------


def scrubbed_copy(span: ReadableSpan) -> ReadableSpan:
    """``span`` with its attributes, events, links and status text scrubbed (a new object:
    the SDK hands the same span to every processor)."""
    scrub = get_scrubber().scrub_attributes
    status = span.status
    if status is not None and status.description:
        status = Status(status.status_code, scrub_text(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub(span.attributes) if span.attributes else span.attributes,
        events=[
            Event(
                event.name, scrub(event.attributes) if event.attributes else None, event.timestamp
            )
            for event in span.events
        ],
        links=[
            Link(link.context, scrub(link.attributes) if link.attributes else None)
            for link in span.links
        ],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Any SDK span exporter (the console one) handed scrubbed copies of the spans."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([scrubbed_copy(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


# --- transports ------------------------------------------------------------------------


def grpc_span_exporter(**kwargs: Any) -> EncodedExporter:
    """The SDK's gRPC span exporter, sending our bytes as they are (no re-encoding)."""
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    return grpc_encoded_exporter(
        trace_exporter.OTLPSpanExporter,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ExportTraceServiceResponse,
        **kwargs,
    )


def http_span_exporter(**kwargs: Any) -> EncodedExporter:
    """The SDK's HTTP/protobuf span exporter, posting our bytes through its own client."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    return http_encoded_exporter(trace_exporter.OTLPSpanExporter, **kwargs)


# --- the processor ---------------------------------------------------------------------


def processor_of(provider: object) -> SpanExportProcessor | None:
    """The SpanExportProcessor attached to ``provider`` (None when spans are not exported so)."""
    return SpanExportProcessor.attached_to(provider)


class SpanExportProcessor(BatchExportQueue["SpanRecord | ReadableSpan"], SpanProcessor):
    """Batches finished spans and ships them with an :class:`EncodedExporter`.

    ``on_end`` takes the SDK's spans, ``submit`` the :data:`SpanRecord` tuples of
    :mod:`chatai_otel.export.cheap_spans`; both share one bounded queue.
    """

    signal = "span"
    noun = "spans"
    unit = "{span}"

    def _new_encoder(self) -> Any:
        return OtlpSpanEncoder().encode

    def _add_to(self, provider: TracerProvider) -> None:
        provider.add_span_processor(self)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        """An SDK span: queued as it is, read and encoded on the worker."""
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.submit(span)
