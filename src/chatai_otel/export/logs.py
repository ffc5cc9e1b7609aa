"""OTLP export of log records: one bounded queue, one worker thread, a fast wire encoder.

Why not the SDK's ``BatchLogRecordProcessor`` + OTLP exporter? Measured here
(see ``benchmarks/bench_logging.py``): ``Logger.emit`` costs ~10-25 µs on the
calling thread (it builds and validates ``BoundedAttributes``, copies the record,
builds a frozen dataclass) and the stock encoder ~20-45 µs per record on the
batch thread, which under the GIL is taken from the application as well. The
log pipeline (:mod:`chatai_otel.logs.pipeline`) has already normalised and scrubbed every
field, so here a record is a plain tuple (:data:`Record`) appended to a deque,
and the worker writes the OTLP protobuf bytes directly (~2 µs per record, with
caches for keys, short string values, severities, bodies, trace ids, call
sites, scopes and the resource). The transports stay the SDK's own exporters
(retries, backoff, TLS, headers, compression, their self-metrics); only the
encoding step is replaced, and the gRPC stub sends our bytes without parsing
them again. Woken because a batch is full, the worker sends full batches only,
so a burst leaves in few large requests; the schedule delay sends the rest.

Records emitted through the OTel Logs API by other code (``LoggerProvider``
-> ``on_emit``) take the same queue, so the process has exactly one log export
pipeline and every record leaves once. They did not pass the log pipeline, so
their body and attributes are scrubbed here (:mod:`chatai_otel.redaction`).

The queue is bounded: when it is full the new record is dropped and counted
(``otel.sdk.processor.log.processed`` with ``error.type=queue_full``, and
:attr:`LogExportProcessor.dropped`); nothing on the calling thread ever waits
for the network.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from chatai_otel._sdk_compat import (
    LoggerProvider,
    LogRecordProcessor,
    ReadWriteLogRecord,
    sdk_exporter_class,
)
from chatai_otel.export.otlp_wire import (
    INT64_MAX,
    SMALL_INT_VALUES,
    TABLED,
    VARINTS,
    EncodedPairs,
    ResourceField,
    any_value,
    field,
    key_value,
    scope_message,
    utf8,
    varint,
)
from chatai_otel.export.queue import BatchExportQueue
from chatai_otel.export.senders import EncodedExporter, grpc_encoded_exporter, http_encoded_exporter
from chatai_otel.redaction import get_scrubber

__all__ = [
    "LOG_RECORD_FIELDS",
    "LogExportProcessor",
    "OtlpLogEncoder",
    "Record",
    "grpc_log_exporter",
    "http_log_exporter",
    "processor_of",
]

# A log record on its way out, as a plain tuple (cheap to build on the calling thread):
#   (time_ns, severity_number, severity_text, body, attributes, trace_id, span_id,
#    trace_flags, scope, code, event_name)
# scope is a logger name or an InstrumentationScope; code is (file_path, function, line,
# anything else...) or None; attributes is a mapping nobody mutates after submit.
Record = tuple[
    int,
    int,
    str,
    Any,
    Mapping[str, Any] | None,
    int,
    int,
    int,
    "str | InstrumentationScope",
    "tuple[str, str, int] | tuple[str, str, int, str] | None",
    "str | None",
]

# Its fields by name, in order (a plain tuple, not a NamedTuple: see span_export's
# SPAN_RECORD_FIELDS for what a NamedTuple would cost per record).
LOG_RECORD_FIELDS = (
    "time_ns", "severity_number", "severity_text", "body", "attributes", "trace_id",
    "span_id", "trace_flags", "scope", "code", "event_name",
)  # fmt: skip
LOG_SCOPE = LOG_RECORD_FIELDS.index("scope")

# LogRecord: time_unix_nano (1, fixed64), observed_time_unix_nano (11, fixed64), flags (8, fixed32)
_pack_times = struct.Struct("<BQBQBI").pack


class OtlpLogEncoder:
    """Encodes :data:`Record` tuples as one serialized ``ExportLogsServiceRequest``.

    Keeps bounded caches of what repeats from record to record: encoded keys,
    severities, call-site attribute blocks, scopes and the resource.
    """

    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._severities: dict[tuple[int, str], bytes] = {}
        self._code: dict[tuple[Any, ...], bytes] = {}
        self._scopes: dict[Any, bytes] = {}
        self._resource = ResourceField()
        self._pairs = EncodedPairs(self._CACHE_LIMIT)
        self._bodies: dict[str, bytes] = {}
        self._ids: tuple[int, int, bytes] = (0, 0, b"")

    def encode(self, records: Iterable[Record], resource: Resource | None) -> bytes:
        """The serialized request for ``records`` (grouped by scope, one resource)."""
        by_scope: dict[Any, list[bytes]] = {}
        encode_record = self._record
        for record in records:
            try:
                encoded = encode_record(record)
            except Exception:  # one bad record never costs the batch
                continue
            scope = record[LOG_SCOPE]
            group = by_scope.get(scope)
            if group is None:
                by_scope[scope] = [encoded]
            else:
                group.append(encoded)
        scope_logs = b"".join(
            [
                field(b"\x12", self._scope(scope) + b"".join(items))
                for scope, items in by_scope.items()
            ]
        )
        resource_logs = self._resource.encode(resource) + scope_logs
        return field(b"\x0a", resource_logs)

    # --- parts -----------------------------------------------------------------------

    def _record(self, record: Record) -> bytes:
        (time_ns, severity_number, severity_text, body, attributes, trace_id, span_id, flags,
         _scope, code, event_name) = record  # fmt: skip
        parts = [_pack_times(0x09, time_ns, 0x59, time_ns, 0x45, flags & 0xFFFFFFFF)]
        severity = self._severities.get((severity_number, severity_text))
        if severity is None:
            severity = self._severity(severity_number, severity_text)
        parts.append(severity)
        if trace_id:
            ids = self._ids
            if ids[0] != span_id or ids[1] != trace_id:
                ids = (
                    span_id,
                    trace_id,
                    b"\x4a\x10"
                    + trace_id.to_bytes(16, "big")
                    + b"\x52\x08"
                    + span_id.to_bytes(8, "big"),
                )
                self._ids = ids
            parts.append(ids[2])
        if body is not None:
            parts.append(self._body(body))
        if attributes:
            pairs = self._pairs
            keys = self._keys
            for key, value in attributes.items():
                kind = type(value)
                if value is None:  # no value: left out (an empty AnyValue is rejected by some)
                    continue
                if kind is str and len(value) <= 64:
                    encoded = pairs.get((key, value))
                    if encoded is None:
                        encoded = self._pair(key, value, cache=True)
                elif kind is int and 0 <= value <= INT64_MAX:  # counters, ids, line numbers
                    prefix = keys.get(key)
                    if prefix is None:
                        prefix = self._key(key)
                    if value < TABLED:
                        kv = prefix + SMALL_INT_VALUES[value]
                    else:
                        number = varint(value)
                        kv = prefix + b"\x12" + VARINTS[1 + len(number)] + b"\x18" + number
                    encoded = b"\x32" + varint(len(kv)) + kv
                else:
                    encoded = self._pair(key, value, cache=False)
                parts.append(encoded)
        if code is not None:
            block = self._code.get(code)
            if block is None:
                block = self._code_block(code)
            parts.append(block)
        if event_name:
            parts.append(field(b"\x62", utf8(event_name)))
        encoded_record = b"".join(parts)
        return b"\x12" + varint(len(encoded_record)) + encoded_record

    def _body(self, body: Any) -> bytes:
        if type(body) is str and len(body) <= 64:
            cached = self._bodies.get(body)
            if cached is None:
                cached = field(b"\x2a", any_value(body))
                if len(self._bodies) >= self._CACHE_LIMIT:
                    self._bodies.clear()
                self._bodies[body] = cached
            return cached
        return field(b"\x2a", any_value(body))

    def _pair(self, key: str, value: Any, *, cache: bool) -> bytes:
        """One ``LogRecord.attributes`` entry (field 6)."""
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._key(key)
        if type(value) is int and 0 <= value < TABLED:
            encoded_value = b"\x18" + VARINTS[value]
        else:
            encoded_value = any_value(value)
        kv = prefix + b"\x12" + varint(len(encoded_value)) + encoded_value
        encoded = b"\x32" + varint(len(kv)) + kv
        if cache:
            self._pairs.remember(key, (key, value), encoded)
        return encoded

    def _key(self, key: str) -> bytes:
        prefix = field(b"\x0a", utf8(str(key)))
        if len(self._keys) >= self._CACHE_LIMIT:
            self._keys.clear()
        self._keys[key] = prefix
        return prefix

    def _severity(self, number: int, text: str) -> bytes:
        encoded = b"\x10" + varint(number) + field(b"\x1a", utf8(text))
        self._severities[(number, text)] = encoded
        return encoded

    def _code_block(self, code: tuple[Any, ...]) -> bytes:
        path, function, line = code[:3]
        block = b"".join(
            field(b"\x32", key_value(key, value))
            for key, value in (
                ("code.file.path", path),
                ("code.function.name", function),
                ("code.line.number", line),
            )
        )
        if len(self._code) >= self._CACHE_LIMIT:
            self._code.clear()
        self._code[code] = block
        return block

    def _scope(self, scope: str | InstrumentationScope) -> bytes:
        """``ScopeLogs.scope`` (and schema_url) for a logger name or an InstrumentationScope."""
        cached = self._scopes.get(scope)
        if cached is None:
            cached = scope_message(scope)
            if len(self._scopes) >= self._CACHE_LIMIT:
                self._scopes.clear()
            self._scopes[scope] = cached
        return cached


# --- transports ------------------------------------------------------------------------


def grpc_log_exporter(**kwargs: Any) -> EncodedExporter:
    """The SDK's gRPC log exporter, sending our bytes as they are (no re-encoding)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    return grpc_encoded_exporter(
        sdk_exporter_class("grpc", "logs"),
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        ExportLogsServiceResponse,
        **kwargs,
    )


def http_log_exporter(**kwargs: Any) -> EncodedExporter:
    """The SDK's HTTP/protobuf log exporter, posting our bytes through its own client."""
    return http_encoded_exporter(sdk_exporter_class("http", "logs"), **kwargs)


# --- the processor ---------------------------------------------------------------------


def processor_of(provider: LoggerProvider | None) -> LogExportProcessor | None:
    """The LogExportProcessor attached to ``provider`` (None when logs are not exported)."""
    return LogExportProcessor.attached_to(provider)


class LogExportProcessor(BatchExportQueue[Record], LogRecordProcessor):
    """Batches :data:`Record` tuples and ships them with an :class:`EncodedExporter`.

    ``submit`` is the fast path of :mod:`chatai_otel.logs.pipeline`; ``on_emit`` takes
    records emitted through the OTel Logs API. Both share one bounded queue.
    """

    signal = "log"
    noun = "log records"
    unit = "{log_record}"
    default_schedule_delay = 1.0

    def _new_encoder(self) -> Any:
        return OtlpLogEncoder().encode

    def _add_to(self, provider: LoggerProvider) -> None:
        provider.add_log_record_processor(self)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """A record from the OTel Logs API: convert to a :data:`Record` and queue it."""
        try:
            api = log_record.log_record
            severity = api.severity_number
            scrubber = get_scrubber()
            body = api.body
            if isinstance(body, str | Mapping | list | tuple):
                body = scrubber.scrub(body)
            self.submit(
                (
                    api.timestamp or api.observed_timestamp or time.time_ns(),
                    severity.value if severity is not None else 0,
                    api.severity_text or "",
                    body,
                    scrubber.scrub_mapping(api.attributes) if api.attributes else None,
                    api.trace_id or 0,
                    api.span_id or 0,
                    int(api.trace_flags or 0),
                    log_record.instrumentation_scope or "unknown",
                    None,
                    api.event_name,
                )
            )
        except Exception:
            self._drop("invalid_record")
