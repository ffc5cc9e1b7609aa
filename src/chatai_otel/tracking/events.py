"""Business events: one call puts the event on the trace, in a counter, in the log and in the store.

``await events.log_event(BusinessEvent(...))`` (the seed's call, unchanged) and
``events.emit(...)`` (the same, synchronous) each do, on the calling thread and
without touching the network:

* a span event named after the event type on the active span, with
  ``event.type``, ``chatai.event.id``, entity type and id, ``user.id`` and the
  scrubbed data as ``chatai.data.<key>``; with no active span, a short INTERNAL
  span of its own (an AI response gets a GenAI client span instead, see genai.py);
* ``chatai.business.events`` {event.type} + 1;
* one structured log line (``business_event``), plus one on the audit stream
  for audit-class event types (the seed's set by default, ``CHATAI_OTEL_AUDIT_EVENTS``);
* a record handed to the durable store (records.py). ``log_event`` awaits the
  hand-off, and for audit events the store returns only once the record is
  durable; ``emit`` only enqueues.

``event.type`` on the metric is a bounded set: the values of :class:`EventType`,
of any other ``Enum`` the host app uses, and of types registered with
:func:`register_event_type`. Any other string is counted as ``other`` (it still
appears as itself on the span, the log and the record), so free-form types
cannot blow up the number of series.

The counter is pre-aggregated in process and read by an asynchronous counter at
export time: the SDK's synchronous ``Counter.add`` costs ~10 µs a call, a dict
increment under a lock well under one. The exported points are the same
monotonic cumulative sums.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind

from chatai_otel import context, process_hooks, process_settings
from chatai_otel import metric_names as names
from chatai_otel.export.cheap_spans import FastSpan, FastTracer
from chatai_otel.logs.pipeline import AUDIT_LOGGER
from chatai_otel.logs.structlog_bridge import clean_fields, clean_value, line_emitter
from chatai_otel.spans import attribute_value, flatten, trace_ids
from chatai_otel.store.records import EventRecord, get_sink, new_event_id
from chatai_otel.tracking import genai

__all__ = [
    "BusinessEvent",
    "BusinessEventLogger",
    "EventType",
    "business_event_logger",
    "emit",
    "is_audit",
    "log_event",
    "register_event_type",
]

_internal = logging.getLogger("chatai_otel")


class EventType(StrEnum):
    """The seed's business event types. Host apps add their own (see :func:`register_event_type`)."""

    # user events
    USER_REGISTERED = "user_registered"
    USER_LOGIN = "user_login"
    USER_LOGOUT = "user_logout"
    USER_PROFILE_UPDATED = "user_profile_updated"
    # chat events
    DIALOG_CREATED = "dialog_created"
    MESSAGE_SENT = "message_sent"
    AI_RESPONSE_GENERATED = "ai_response_generated"
    # handoff events
    HANDOFF_REQUESTED = "handoff_requested"
    HANDOFF_ACCEPTED = "handoff_accepted"
    HANDOFF_COMPLETED = "handoff_completed"
    # balance events
    BALANCE_TOPPED_UP = "balance_topped_up"
    BALANCE_CHARGED = "balance_charged"
    # document events
    DOCUMENT_UPLOADED = "document_uploaded"
    DOCUMENT_PROCESSED = "document_processed"
    # system events
    API_ERROR = "api_error"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    SECURITY_VIOLATION = "security_violation"


@dataclass
class BusinessEvent:
    """One business event (the seed's dataclass; ``timestamp`` and ``request_id`` fill themselves)."""

    event_type: EventType | Enum | str
    user_id: int | str | None = None
    entity_id: int | str | None = None
    entity_type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if self.timestamp is None:
            self.timestamp = datetime.now(UTC)
        if self.request_id is None:
            self.request_id = context.get("request_id")


# --- bounded event types -------------------------------------------------------------------

OTHER = "other"
MAX_REGISTERED_TYPES = 256  # registrations beyond this count as "other" on the metric

_registered: set[str] = {member.value for member in EventType}
_registered_audit: set[str] = set()
_register_lock = threading.Lock()


def register_event_type(name: str | Enum, *, audit: bool = False) -> str:
    """Make a host-app event type a value of ``event.type`` on the metric (and audit it if asked)."""
    value = _type_value(name)
    with _register_lock:
        if len(_registered) < MAX_REGISTERED_TYPES + len(EventType):
            _registered.add(value)
        if audit:
            _registered_audit.add(value)
    return value


_VALUES: dict[Any, str] = {member: member.value for member in EventType}


def _type_value(event_type: EventType | Enum | str) -> str:
    value = _VALUES.get(event_type) if type(event_type) is EventType else None
    if value is not None:
        return value
    if isinstance(event_type, Enum):
        return str(event_type.value)
    return str(event_type)


def _metric_type(event_type: EventType | Enum | str, value: str) -> str:
    """The bounded ``event.type``: enum members (finite by construction) and registered names."""
    if isinstance(event_type, Enum) or value in _registered:
        return value
    return OTHER


_audit_cache: tuple[int, frozenset[str]] = (0, frozenset())


def is_audit(event_type: EventType | Enum | str) -> bool:
    """True for the event types that also go to the audit stream and must be durable."""
    global _audit_cache
    settings = process_settings.settings()
    key, audit = _audit_cache
    if key != id(settings):
        audit = frozenset(settings.audit_events)
        _audit_cache = (id(settings), audit)
    value = _type_value(event_type)
    return value in audit or value in _registered_audit


# --- instruments ---------------------------------------------------------------------------

_tracer = FastTracer("chatai_otel.events")  # plain SDK spans whenever other processors listen
_meter = metrics.get_meter("chatai_otel.events")


class _Tally:
    """Per-process cumulative event counts, read by the asynchronous counter at export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._attributes: dict[str, dict[str, str]] = {}

    def add(self, event_type: str) -> None:
        with self._lock:
            self._counts[event_type] = self._counts.get(event_type, 0) + 1

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        result = []
        for event_type, count in counts:
            attributes = self._attributes.get(event_type)
            if attributes is None:
                attributes = self._attributes[event_type] = {names.ATTR_EVENT_TYPE: event_type}
            result.append(Observation(count, attributes))
        return result

    def reset(self) -> None:
        """In a forked child: its counts start at zero (the parent keeps reporting its own)."""
        self._lock = threading.Lock()
        self._counts = {}


_tally = _Tally()
process_hooks.on_fork(after_in_child=_tally.reset)
_meter.create_observable_counter(
    names.BUSINESS_EVENTS,
    callbacks=[_tally.observe],
    unit=names.BUSINESS_EVENTS_UNIT,
    description="Business events, by event type.",
)
_balance = _meter.create_counter(
    names.BALANCE_AMOUNT,
    unit=names.BALANCE_AMOUNT_UNIT,
    description="Balance top-ups and charges, by service type, in the platform's balance unit.",
)
_BALANCE_OPERATION = {
    EventType.BALANCE_TOPPED_UP.value: "topped_up",
    EventType.BALANCE_CHARGED.value: "charged",
}

# The event's log lines skip structlog's chain and the call-site search (they always come
# from _record: _LINE_SITE, below it), and their fields are cleaned once
# (logs.clean_fields) for the span, the line and the store record alike.
_lines = process_settings.PerConfigure(
    lambda: (line_emitter("business_events", _LINE_SITE), line_emitter(AUDIT_LOGGER, _LINE_SITE))
)
_failures = 0


# --- the one path every event takes -------------------------------------------------------


def _record(event: BusinessEvent) -> EventRecord | None:
    """Trace, count and log one event; return its store record (None if telemetry failed)."""
    global _failures
    own_span: Span | None = None
    ai_end: int | None = None
    try:
        type_value = _type_value(event.event_type)
        metric_type = _metric_type(event.event_type, type_value)
        user_id = event.user_id if event.user_id is not None else context.get("user_id")
        timestamp = event.timestamp or datetime.now(UTC)
        if timestamp.tzinfo is None:  # the seed's naive utcnow()
            timestamp = timestamp.replace(tzinfo=UTC)
        nanos = _nanos(timestamp)
        event_id = new_event_id()
        audit = is_audit(type_value)
        fields = _fields(event, type_value, event_id, user_id)
        event_type = fields["event_type"]
        data = fields.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):  # cut for the log line; span and store keep it whole
            data = _whole_data(event.data)

        usage: genai.AIUsage | None = None
        span = trace.get_current_span()
        if type_value == EventType.AI_RESPONSE_GENERATED.value:
            usage = genai.AIUsage.from_event_data(data)
            call = genai.current_call()
            if call is not None:
                call.absorb(usage)  # the call's own span and metrics carry it
                usage = None
            else:
                own_span, ai_end = genai.record_response(usage)
                span = own_span
        elif not span.get_span_context().is_valid:
            own_span = span = _tracer.start_span(
                f"event {metric_type}", kind=SpanKind.INTERNAL, start_time=nanos
            )

        if span.is_recording():
            attributes = _span_event_attributes(fields, data)
            if type(span) is FastSpan:
                span.add_trusted_event(event_type, attributes, nanos)
            else:
                span.add_event(event_type, attributes, timestamp=nanos)

        _tally.add(metric_type)
        operation = _BALANCE_OPERATION.get(type_value)
        if operation is not None:
            _count_balance(operation, data)

        line, audit_line = _lines.get()
        line(logging.INFO, "business_event", fields, cleaned=True)
        if audit:
            audit_line(logging.INFO, "business_event", fields, cleaned=True)

        trace_id, span_id = trace_ids(span)
        record = EventRecord(
            event_id=event_id,
            event_type=event_type,
            timestamp=timestamp,
            service_name=process_settings.settings().service_name,
            trace_id=trace_id,
            span_id=span_id,
            request_id=fields.get("request_id"),
            user_id=fields.get("user_id"),
            entity_id=fields.get("entity_id"),
            entity_type=fields.get("entity_type"),
            data=data,
            audit=audit,
        )
        if own_span is not None:
            if usage is not None:
                genai.finish(own_span, usage, end_time=ai_end)
            else:
                own_span.end()
        return record
    except Exception:
        _failures += 1
        if _failures == 1 or _failures % 1000 == 0:
            _internal.warning("chatai-otel: a business event could not be recorded", exc_info=True)
        if own_span is not None:
            try:
                own_span.end()
            except Exception:
                pass
        return None


_LINE_SITE: tuple[str, str, int, str] = (
    __file__,
    "_record",
    _record.__code__.co_firstlineno,
    "events",
)


def _fields(event: BusinessEvent, type_value: str, event_id: str, user_id: Any) -> dict[str, Any]:
    """The event as its log line carries it: scrubbed and JSON-safe, cleaned once for all."""
    raw: dict[str, Any] = {"event_type": type_value}
    if user_id is not None:
        raw["user_id"] = user_id
    if event.entity_id is not None:
        raw["entity_id"] = event.entity_id
    if event.entity_type is not None:
        raw["entity_type"] = event.entity_type
    if event.data:
        raw["data"] = event.data if isinstance(event.data, Mapping) else {"value": event.data}
    if event.request_id is not None:
        raw["request_id"] = event.request_id
    fields = clean_fields(raw)
    fields["event_id"] = event_id  # ours, a UUID: nothing to scrub
    return fields


def _span_event_attributes(fields: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """The span event's attributes: every value a valid attribute value (no re-validation)."""
    attributes: dict[str, Any] = {
        names.ATTR_EVENT_TYPE: fields["event_type"],
        "chatai.event.id": fields["event_id"],
    }
    entity_type = fields.get("entity_type")
    if entity_type is not None:
        attributes["chatai.entity.type"] = str(entity_type)
    entity_id = fields.get("entity_id")
    if entity_id is not None:
        attributes["chatai.entity.id"] = attribute_value(entity_id)
    user_id = fields.get("user_id")
    if user_id is not None:
        attributes["user.id"] = str(user_id)
    if data:
        flatten("chatai.data.", data, attributes)
    return attributes


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _whole_data(data: Any) -> Mapping[str, Any]:
    """The event's data, cleaned like the log line's but not cut as a whole."""
    cleaned = clean_value(data if isinstance(data, Mapping) else {"value": data})
    return cleaned if isinstance(cleaned, Mapping) else {"value": cleaned}


def _count_balance(operation: str, data: Mapping[str, Any]) -> None:
    amount = data.get("amount")
    try:
        value = abs(float(amount)) if amount is not None and not isinstance(amount, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        return
    service_type = data.get("service_type")
    _balance.add(
        value,
        {
            names.ATTR_BALANCE_OPERATION: operation,
            names.ATTR_SERVICE_TYPE: str(service_type) if service_type is not None else "unknown",
        },
    )


def _build(event: BusinessEvent | EventType | Enum | str, fields: dict[str, Any]) -> BusinessEvent:
    if isinstance(event, BusinessEvent):
        if fields:
            raise TypeError("pass either a BusinessEvent or an event type with fields, not both")
        return event
    return BusinessEvent(event, **fields)


def emit(event: BusinessEvent | EventType | Enum | str, /, **fields: Any) -> str | None:
    """Record one event now, from sync or async code; returns its event id.

    ``emit(BusinessEvent(...))`` or ``emit(EventType.USER_LOGIN, user_id=7, data={...})``.
    The store hand-off only enqueues: for an audit event that must be durable
    before the caller goes on, use ``await log_event(...)``.
    """
    try:
        record = _record(_build(event, fields))
        if record is None:
            return None
        get_sink().put_nowait(record)
        return record.event_id
    except TypeError:
        raise  # a wrong call is a programming error, not a telemetry failure
    except Exception:
        _internal.warning("chatai-otel: business event hand-off failed", exc_info=True)
        return None


async def log_event(event: BusinessEvent | EventType | Enum | str, /, **fields: Any) -> str | None:
    """Record one event and await its hand-off to the store (durable first, for audit events).

    The seed's call, unchanged: ``await events.log_event(BusinessEvent(...))``.
    Returns the event id; never raises for a telemetry or store failure.
    """
    record = _record(_build(event, fields))
    if record is None:
        return None
    try:
        await get_sink().put(record)
    except Exception:
        _lines.get()[0](
            logging.ERROR,
            "business_event.store_failed",
            {"event_id": record.event_id, "event_type": record.event_type, "audit": record.audit},
        )
    return record.event_id


class BusinessEventLogger:
    """The seed's ``business_event_logger`` object, so its call sites keep working."""

    async def log_event(self, event: BusinessEvent) -> str | None:
        return await log_event(event)

    def emit(self, event: BusinessEvent) -> str | None:
        return emit(event)


business_event_logger = BusinessEventLogger()
