"""What business events and errors hand to the durable store, and the interface the store implements.

``events`` and ``errors`` turn each event and error into a record and pass it to
the process-wide :class:`RecordSink`. Without a store configured the sink is
:class:`NullSink`, which keeps nothing: spans, metrics and logs still carry
everything, only the SQL copy is missing.

A store (``chatai_otel.store.writer``) implements two methods:

* ``await put(record)`` is what ``await events.log_event(...)`` awaits. For a
  record with ``audit=True`` it returns only once the record is durable (for
  example fsynced in a local journal); for the others it may return as soon as
  the record is queued. It may raise; callers log and swallow.
* ``put_nowait(record)`` is what the synchronous paths (``events.emit``,
  ``track_error``) call. It never blocks and never raises; when its bounded
  queue is full it drops the record, counts the drop and returns False.

Records carry a UUIDv7 ``event_id`` (time-ordered, so inserts land at the end of
a B-tree index) that the store uses to make inserts idempotent. Their ``data``
and ``context`` are already scrubbed. This module imports nothing of ours.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "ErrorRecord",
    "EventRecord",
    "NullSink",
    "Record",
    "RecordSink",
    "get_sink",
    "new_event_id",
    "set_sink",
]


_id_prefix: tuple[int, str] = (-1, "")  # (millisecond, its first three groups)


def new_event_id() -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562).

    The 12 bits after the version are drawn once per millisecond and the time groups
    formatted once per millisecond (62 random bits still tell apart the ids of one
    millisecond). ``random`` reseeds itself in a forked child, so workers forked from one
    master never hand out the same ids; several times cheaper than ``uuid4()``.
    """
    global _id_prefix
    millis = time.time_ns() // 1_000_000
    cached, prefix = _id_prefix
    if cached != millis:
        rand_a = 0x7000 | random.getrandbits(12)
        prefix = f"{(millis >> 16) & 0xFFFFFFFF:08x}-{millis & 0xFFFF:04x}-{rand_a:04x}-"
        _id_prefix = (millis, prefix)
    tail = f"{(2 << 62) | random.getrandbits(62):016x}"  # the variant bits, then 62 random
    return f"{prefix}{tail[:4]}-{tail[4:]}"


@dataclass(slots=True)
class EventRecord:
    """One business event, as the store keeps it.

    Read-only by convention, not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, 2 µs of every event on the calling thread.
    """

    kind: ClassVar[str] = "event"

    event_id: str  # UUIDv7; the idempotency key
    event_type: str
    timestamp: datetime  # when it happened, timezone-aware UTC
    service_name: str
    trace_id: str | None  # 32 lowercase hex, or None outside any trace
    span_id: str | None  # 16 lowercase hex
    request_id: str | None
    user_id: int | str | None
    entity_id: int | str | None
    entity_type: str | None
    data: Mapping[str, Any]  # scrubbed
    audit: bool  # True: put() returns only once the record is durable

    def as_dict(self) -> dict[str, Any]:
        """Plain values (timestamp as ISO 8601) for a JSON line; ``data`` is shared, not
        copied (``dataclasses.asdict`` deep-copies it: tens of µs a record)."""
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One tracked error, as the store keeps it."""

    kind: ClassVar[str] = "error"
    audit: ClassVar[bool] = False

    event_id: str  # UUIDv7; the idempotency key
    timestamp: datetime
    service_name: str
    trace_id: str | None
    span_id: str | None
    request_id: str | None
    user_id: int | str | None
    error_type: str  # e.g. "ValueError", "sqlalchemy.exc.IntegrityError"
    message: str  # scrubbed
    category: str  # ErrorCategory value
    severity: str  # ErrorSeverity value
    context: Mapping[str, Any]  # scrubbed
    stacktrace: str | None  # scrubbed
    fingerprint: str  # groups occurrences of the same error (alert deduplication uses it)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (timestamp as ISO 8601) for a JSON line; ``context`` is shared, not
        copied (``dataclasses.asdict`` deep-copies it: tens of µs a record)."""
        return _as_dict(self)


Record = EventRecord | ErrorRecord
_FIELD_NAMES = {kind: tuple(f.name for f in fields(kind)) for kind in (EventRecord, ErrorRecord)}


def _as_dict(record: Record) -> dict[str, Any]:
    result = {name: getattr(record, name) for name in _FIELD_NAMES[type(record)]}
    result["kind"] = record.kind
    result["timestamp"] = record.timestamp.isoformat()
    return result


@runtime_checkable
class RecordSink(Protocol):
    """Where records go; a durable store implements it (see the module docstring)."""

    async def put(self, record: Record) -> None:
        """Hand over a record; for ``record.audit`` return only once it is durable."""
        ...

    def put_nowait(self, record: Record) -> bool:
        """Hand over without blocking; False when the record was dropped (and counted)."""
        ...


class NullSink:
    """The sink of a setup without a store: keeps nothing, costs nothing."""

    async def put(self, record: Record) -> None:
        return None

    def put_nowait(self, record: Record) -> bool:
        return True


_lock = threading.Lock()
_sink: RecordSink = NullSink()


def set_sink(sink: RecordSink | None) -> RecordSink:
    """Install the process-wide sink (None: back to :class:`NullSink`); returns the previous one."""
    global _sink
    if sink is not None and not isinstance(sink, RecordSink):
        raise TypeError(f"{sink!r} has no put()/put_nowait(): it is not a RecordSink")
    with _lock:
        previous, _sink = _sink, sink if sink is not None else NullSink()
    return previous


def get_sink() -> RecordSink:
    """The process-wide sink."""
    return _sink
