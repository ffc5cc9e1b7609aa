"""OTLP export of log records: one bounded queue, one worker thread, a fast wire encoder.

Why not the SDK's ``BatchLogRecordProcessor`` + OTLP exporter? Measured here
(see ``benchmarks/bench_logging.py``): ``Logger.emit`` costs ~10-25 µs on the
calling thread (it builds and validates ``BoundedAttributes``, copies the record,
builds a frozen dataclass) and the stock encoder ~20-45 µs per record on the
batch thread, which under the GIL is taken from the application as well. The
log pipeline (:mod:`chatai_otel.logs`) has already normalised and scrubbed every
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
pipeline and every record leaves once.

The queue is bounded: when it is full the new record is dropped and counted
(``otel.sdk.processor.log.processed`` with ``error.type=queue_full``, and
:attr:`LogExportProcessor.dropped`); nothing on the calling thread ever waits
for the network.
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

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = [
    "EncodedLogExporter",
    "LogExportProcessor",
    "OtlpLogEncoder",
    "Record",
    "grpc_log_exporter",
    "http_log_exporter",
    "processor_of",
]

# Diagnostics of the export path: the log pipeline prints these but never exports them
# (exporting "export failed" over the failing export would loop).
_diagnostics = logging.getLogger("chatai_otel.export")

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

# --- protobuf wire encoding ------------------------------------------------------------
#
# Field numbers from opentelemetry/proto/{collector/logs,logs,common,resource}/v1/*.proto.
# A tag byte is (field_number << 3) | wire_type; 0 = varint, 1 = 64-bit, 2 = bytes, 5 = 32-bit.

_VARINTS = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]
# KeyValue.value (field 2) holding AnyValue{int_value} for 0 <= n < 16384, ready to append
_SMALL_INT_VALUES = [
    b"\x12" + bytes([1 + len(_VARINTS[n])]) + b"\x18" + _VARINTS[n] for n in range(1 << 14)
]
_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_pack_double = struct.Struct("<d").pack
# LogRecord: time_unix_nano (1, fixed64), observed_time_unix_nano (11, fixed64), flags (8, fixed32)
_pack_times = struct.Struct("<BQBQBI").pack


def _varint(n: int) -> bytes:
    if n < 16384:
        return _VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates: OTLP strings must be valid UTF-8
        return text.encode("utf-8", "replace")


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any, depth: int = 0) -> bytes:
    """The body of an ``AnyValue`` message."""
    kind = type(value)
    if kind is str:
        data = _utf8(value)
        return b"\x0a" + _varint(len(data)) + data
    if kind is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return b"\x18" + _varint(value & _MASK64)
        data = str(value).encode()
        return b"\x0a" + _varint(len(data)) + data
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is float:
        return b"\x21" + _pack_double(value)
    if value is None:
        return b""
    if depth > 32:
        return b"\x0a\x03..."
    if isinstance(value, Mapping):  # a None member is left out, as the SDK does for attributes
        inner = b"".join(
            [
                _field(b"\x0a", _key_value(k, v, depth + 1))
                for k, v in value.items()
                if v is not None
            ]
        )
        return b"\x32" + _varint(len(inner)) + inner
    if isinstance(value, list | tuple):
        inner = b"".join([_field(b"\x0a", _any_value(v, depth + 1)) for v in value])
        return b"\x2a" + _varint(len(inner)) + inner
    if isinstance(value, bytes | bytearray):
        return b"\x3a" + _varint(len(value)) + bytes(value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return _any_value(int(value), depth)
    if isinstance(value, float):
        return _any_value(float(value), depth)
    return _any_value(str(value), depth)


def _key_value(key: Any, value: Any, depth: int = 0) -> bytes:
    """The body of a ``KeyValue`` message."""
    return _field(b"\x0a", _utf8(str(key))) + _field(b"\x12", _any_value(value, depth))


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
        self._resource: tuple[object, bytes] | None = None
        self._pairs: dict[tuple[str, str], bytes] = {}
        self._bodies: dict[str, bytes] = {}
        self._ids: tuple[int, int, bytes] = (0, 0, b"")

    def encode(self, records: Sequence[Record], resource: Resource | None) -> bytes:
        """The serialized request for ``records`` (grouped by scope, one resource)."""
        by_scope: dict[Any, list[bytes]] = {}
        encode_record = self._record
        for record in records:
            try:
                encoded = encode_record(record)
            except Exception:  # one bad record never costs the batch
                continue
            group = by_scope.get(record[8])
            if group is None:
                by_scope[record[8]] = [encoded]
            else:
                group.append(encoded)
        scope_logs = b"".join(
            [
                _field(b"\x12", self._scope(scope) + b"".join(items))
                for scope, items in by_scope.items()
            ]
        )
        resource_logs = self._encoded_resource(resource) + scope_logs
        return _field(b"\x0a", resource_logs)

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
                elif kind is int and 0 <= value <= _INT64_MAX:  # counters, ids, line numbers
                    prefix = keys.get(key)
                    if prefix is None:
                        prefix = self._key(key)
                    if value < 16384:
                        kv = prefix + _SMALL_INT_VALUES[value]
                    else:
                        number = _varint(value)
                        kv = prefix + b"\x12" + _VARINTS[1 + len(number)] + b"\x18" + number
                    encoded = b"\x32" + _varint(len(kv)) + kv
                else:
                    encoded = self._pair(key, value, cache=False)
                parts.append(encoded)
        if code is not None:
            block = self._code.get(code)
            if block is None:
                block = self._code_block(code)
            parts.append(block)
        if event_name:
            parts.append(_field(b"\x62", _utf8(event_name)))
        encoded_record = b"".join(parts)
        return b"\x12" + _varint(len(encoded_record)) + encoded_record

    def _body(self, body: Any) -> bytes:
        if type(body) is str and len(body) <= 64:
            cached = self._bodies.get(body)
            if cached is None:
                cached = _field(b"\x2a", _any_value(body))
                if len(self._bodies) >= self._CACHE_LIMIT:
                    self._bodies.clear()
                self._bodies[body] = cached
            return cached
        return _field(b"\x2a", _any_value(body))

    def _pair(self, key: str, value: Any, *, cache: bool) -> bytes:
        """One ``LogRecord.attributes`` entry (field 6)."""
        prefix = self._keys.get(key)
        if prefix is None:
            prefix = self._key(key)
        if type(value) is int and 0 <= value < 16384:
            encoded_value = b"\x18" + _VARINTS[value]
        else:
            encoded_value = _any_value(value)
        kv = prefix + b"\x12" + _varint(len(encoded_value)) + encoded_value
        encoded = b"\x32" + _varint(len(kv)) + kv
        if cache:
            if len(self._pairs) >= self._CACHE_LIMIT:
                self._pairs.clear()
            self._pairs[(key, value)] = encoded
        return encoded

    def _key(self, key: str) -> bytes:
        prefix = _field(b"\x0a", _utf8(str(key)))
        if len(self._keys) >= self._CACHE_LIMIT:
            self._keys.clear()
        self._keys[key] = prefix
        return prefix

    def _severity(self, number: int, text: str) -> bytes:
        encoded = b"\x10" + _varint(number) + _field(b"\x1a", _utf8(text))
        self._severities[(number, text)] = encoded
        return encoded

    def _code_block(self, code: tuple[Any, ...]) -> bytes:
        path, function, line = code[:3]
        block = b"".join(
            _field(b"\x32", _key_value(key, value))
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
        if cached is not None:
            return cached
        if isinstance(scope, InstrumentationScope):
            body = _field(b"\x0a", _utf8(scope.name))
            if scope.version:
                body += _field(b"\x12", _utf8(scope.version))
            for key, value in (scope.attributes or {}).items():
                body += _field(b"\x1a", _key_value(key, value))
            encoded = _field(b"\x0a", body)
            if scope.schema_url:
                encoded += _field(b"\x1a", _utf8(scope.schema_url))
        else:
            encoded = _field(b"\x0a", _field(b"\x0a", _utf8(str(scope))))
        if len(self._scopes) >= self._CACHE_LIMIT:
            self._scopes.clear()
        self._scopes[scope] = encoded
        return encoded

    def _encoded_resource(self, resource: Resource | None) -> bytes:
        """``ResourceLogs.resource`` + schema_url, re-encoded only when the attributes change
        (sdk.py swaps the attribute map after fork)."""
        if resource is None:
            return b""
        attributes = resource.attributes
        if self._resource is not None and self._resource[0] is attributes:
            return self._resource[1]
        body = b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in attributes.items())
        encoded = _field(b"\x0a", body)
        if resource.schema_url:
            encoded += _field(b"\x1a", _utf8(resource.schema_url))
        self._resource = (attributes, encoded)
        return encoded


# --- transports ------------------------------------------------------------------------


class EncodedLogExporter(Protocol):
    """Sends one already-encoded ``ExportLogsServiceRequest``."""

    def export_encoded(self, payload: bytes, count: int) -> bool: ...

    def shutdown(self) -> None: ...


def grpc_log_exporter(**kwargs: Any) -> EncodedLogExporter:
    """The SDK's gRPC log exporter, sending our bytes as they are (no re-encoding)."""
    from opentelemetry.exporter.otlp.proto.grpc import _log_exporter, exporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    # Typed as Any: we override the mixin's protected hooks, which its generics do not describe.
    base: Any = _log_exporter.OTLPLogExporter
    mixin: Any = exporter.OTLPExporterMixin

    class _Batch:
        __slots__ = ("count", "payload")

        def __init__(self, payload: bytes, count: int) -> None:
            self.payload = payload
            self.count = count

    class _RawLogsStub:
        """Like ``LogsServiceStub`` but the request is already serialized."""

        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                request_serializer=None,
                response_deserializer=ExportLogsServiceResponse.FromString,
            )

    class GrpcEncodedLogExporter(base):  # type: ignore[misc]
        # The mixin calls _initialize_channel_and_stub() at start and after UNAVAILABLE;
        # we keep its channel handling and swap in a stub that sends bytes unchanged.
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _RawLogsStub(self._channel)

        def _translate_data(self, data: Any) -> Any:
            return data.payload

        def _count_data(self, data: Any) -> int:
            return int(data.count)

        def export_encoded(self, payload: bytes, count: int) -> bool:
            result = mixin._export(self, _Batch(payload, count))
            return bool(result.name == "SUCCESS")

    return GrpcEncodedLogExporter(**kwargs)


def http_log_exporter(**kwargs: Any) -> EncodedLogExporter:
    """The SDK's HTTP/protobuf log exporter, posting our bytes through its own client."""
    from opentelemetry.exporter.otlp.proto.http import _log_exporter

    base: Any = _log_exporter.OTLPLogExporter

    class HttpEncodedLogExporter(base):  # type: ignore[misc]
        def export_encoded(self, payload: bytes, count: int) -> bool:
            if self._shutdown:
                return False
            with self._metrics.export_operation(count) as result:
                outcome = self._client.export(payload)
                if not outcome.success:
                    result.error = outcome.error
                    return False
            return True

    return HttpEncodedLogExporter(**kwargs)


# --- the processor ---------------------------------------------------------------------

_registry: weakref.WeakKeyDictionary[LoggerProvider, LogExportProcessor] = (
    weakref.WeakKeyDictionary()
)


def processor_of(provider: LoggerProvider | None) -> LogExportProcessor | None:
    """The LogExportProcessor attached to ``provider`` (None when logs are not exported)."""
    return None if provider is None else _registry.get(provider)


class LogExportProcessor(LogRecordProcessor):
    """Batches :data:`Record` tuples and ships them with an :class:`EncodedLogExporter`.

    ``submit`` is the fast path of :mod:`chatai_otel.logs`; ``on_emit`` takes
    records emitted through the OTel Logs API. Both share one bounded queue.
    """

    def __init__(
        self,
        exporter: EncodedLogExporter,
        *,
        schedule_delay: float = 1.0,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        export_timeout: float = 30.0,
        meter_provider: Any = None,
    ) -> None:
        self._exporter = exporter
        self._encoder = OtlpLogEncoder()
        self._delay = schedule_delay
        self._max_queue = max_queue_size
        self._max_batch = max_export_batch_size
        self._export_timeout = export_timeout
        self._resource: Resource | None = None
        self._queue: deque[Record] = deque()
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

    def attach(self, provider: LoggerProvider) -> None:
        """Add to ``provider`` (its resource goes on every export) and make it findable."""
        self._resource = provider.resource
        provider.add_log_record_processor(self)
        _registry[provider] = self

    # --- calling thread --------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue one record; drop (and count) it when the queue is full. Never blocks."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._shutdown:
            self._drop("already_shutdown" if self._shutdown else "queue_full")
            return
        queue.append(record)
        if len(queue) >= self._max_batch and not self._waking:
            self._waking = True
            self._wake.set()

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        """A record from the OTel Logs API: convert to a :data:`Record` and queue it."""
        try:
            api = log_record.log_record
            severity = api.severity_number
            self.submit(
                (
                    api.timestamp or api.observed_timestamp or time.time_ns(),
                    severity.value if severity is not None else 0,
                    api.severity_text or "",
                    api.body,
                    dict(api.attributes) if api.attributes else None,
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

    def _drop(self, reason: str = "queue_full") -> None:
        self.dropped += 1
        self._metrics.dropped(1, reason)
        if reason != "queue_full":
            return
        now = time.monotonic()
        if now - self._last_drop_report >= 10.0:
            self._last_drop_report = now
            _diagnostics.warning(
                "chatai-otel: log export queue full (%d records); %d records dropped so far",
                self._max_queue,
                self.dropped,
            )

    # --- worker ----------------------------------------------------------------------

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(target=self._run, name="chatai-otel-log-export", daemon=True)
        worker.start()
        return worker

    def _run(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            self._waking = False
            if self._shutdown:
                break
            # Woken because a batch is full: send full batches only (a burst goes out in few
            # large requests); the schedule delay sends whatever is left.
            self._export_queued(only_full_batches=woken)
        self._export_queued(only_full_batches=False)

    def _export_queued(self, *, only_full_batches: bool, deadline: float | None = None) -> bool:
        """Export what is queued now, batch by batch; False if the deadline passed first."""
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with self._export_lock, suppress_instrumentation():
            queue = self._queue
            while queue and not (only_full_batches and len(queue) < self._max_batch):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                count = min(len(queue), self._max_batch)
                batch = [queue.popleft() for _ in range(count)]
                self._export_batch(batch)
        return True

    def _export_batch(self, batch: list[Record]) -> None:
        try:
            payload = self._encoder.encode(batch, self._resource)
            ok = self._exporter.export_encoded(payload, len(batch))
        except Exception:
            _diagnostics.exception("chatai-otel: exporting %d log records failed", len(batch))
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
        deadline = time.monotonic() + timeout_millis / 1000.0
        return self._export_queued(only_full_batches=False, deadline=deadline)

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


class _ProcessorMetrics:
    """The semantic-convention self-metrics of a batching log processor (drops included)."""

    def __init__(self, meter_provider: Any, processor: LogExportProcessor) -> None:
        self._processed: Any = None
        if meter_provider is None:
            return
        try:
            from opentelemetry.semconv._incubating.metrics import otel_metrics

            meter = meter_provider.get_meter("chatai_otel")
            attributes = {
                "otel.component.type": "batching_log_processor",
                "otel.component.name": "chatai_otel_log_processor",
            }
            self._attributes = attributes
            self._processed = otel_metrics.create_otel_sdk_processor_log_processed(meter)
            processor_ref = weakref.ref(processor)

            def observe(get: Callable[[LogExportProcessor], int]) -> Callable[..., Iterable[Any]]:
                from opentelemetry.metrics import Observation

                def callback(_options: Any) -> Iterable[Any]:
                    live = processor_ref()
                    return [] if live is None else [Observation(get(live), attributes)]

                return callback

            meter.create_observable_up_down_counter(
                otel_metrics.OTEL_SDK_PROCESSOR_LOG_QUEUE_SIZE,
                callbacks=[observe(lambda p: p.queued)],
                unit="{log_record}",
                description="The number of log records in the queue of the log processor.",
            )
            meter.create_observable_up_down_counter(
                otel_metrics.OTEL_SDK_PROCESSOR_LOG_QUEUE_CAPACITY,
                callbacks=[observe(lambda p: p._max_queue)],
                unit="{log_record}",
                description="The maximum number of log records the queue can hold.",
            )
        except Exception:
            self._processed = None

    def processed(self, count: int) -> None:
        if self._processed is not None:
            self._processed.add(count, self._attributes)

    def dropped(self, count: int, reason: str) -> None:
        if self._processed is not None:
            self._processed.add(count, {**self._attributes, "error.type": reason})
