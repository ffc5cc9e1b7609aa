"""Error tracking: ``track_error(exc, category, severity, context)`` on the trace, in a counter, in the log.

One call, on the calling thread and without network I/O:

* an ``exception`` event (type, scrubbed message and stacktrace, category,
  severity) on the active span, ``error.type`` on the span, and status ERROR
  for severities MEDIUM and up. LOW errors (the seed's example: a validation
  error answered with 422) leave the status alone, as the HTTP semantic
  conventions ask for client errors, so they do not count as failed requests.
  With no active span, a short INTERNAL span of its own;
* ``chatai.errors`` {error.category, error.severity, error.type} + 1;
* one structured log line (``application_error``) with the scrubbed context;
* a record handed to the durable store (records.py), without waiting;
* for CRITICAL, an alert to the webhook (alerts.py), decided here and sent by
  a background thread.

``track_error`` works from sync code as it is and from async code as the seed
wrote it: its result can be awaited (``await track_error(...)``), which returns
at once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chatai_otel import context as request_context
from chatai_otel import metric_names as names
from chatai_otel import process_settings
from chatai_otel.export.cheap_spans import FastTracer
from chatai_otel.logs.structlog_bridge import get_logger
from chatai_otel.redaction import scrub, scrub_text
from chatai_otel.spans import error_type, record_exception, stacktrace, trace_ids
from chatai_otel.store.records import ErrorRecord, get_sink, new_event_id
from chatai_otel.tracking import alerts

__all__ = [
    "ErrorCategory",
    "ErrorReport",
    "ErrorSeverity",
    "ErrorTracker",
    "error_tracker",
    "fingerprint",
    "track_error",
]

_internal = logging.getLogger("chatai_otel")


class ErrorSeverity(StrEnum):
    """The seed's severities."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ErrorCategory(StrEnum):
    """The seed's categories."""

    AUTHENTICATION = "authentication"
    AUTHORIZATION = "authorization"
    VALIDATION = "validation"
    BUSINESS_LOGIC = "business_logic"
    EXTERNAL_SERVICE = "external_service"
    DATABASE = "database"
    SYSTEM = "system"


OTHER = "other"  # a category or severity outside the enums, on the metric
_CATEGORIES = frozenset(member.value for member in ErrorCategory)
_SEVERITIES = frozenset(member.value for member in ErrorSeverity)
_STATUS_SEVERITIES = frozenset({"medium", "high", "critical"})


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """What ``track_error`` did; awaiting it returns it at once (for the seed's ``await``)."""

    event_id: str | None
    fingerprint: str | None
    alert: str | None = (
        None  # the alert outcome for CRITICAL errors ("queued", "deduplicated", ...)
    )

    def __await__(self) -> Generator[Any, None, ErrorReport]:
        return _done(self).__await__()


async def _done(report: ErrorReport) -> ErrorReport:
    return report


_tracer = FastTracer("chatai_otel.errors")  # plain SDK spans whenever other processors listen
_meter = metrics.get_meter("chatai_otel.errors")
_errors = _meter.create_counter(
    names.ERRORS,
    unit=names.ERRORS_UNIT,
    description="Tracked application errors, by category, severity and type.",
)
_loggers = process_settings.PerConfigure(lambda: get_logger("errors"))
_DIGITS = re.compile(r"\d+")


def fingerprint(exc: BaseException, category: str) -> str:
    """Groups occurrences of one error: its type, category and the line that raised it.

    Without a traceback (an exception never raised) the message stands in for
    the line, with digits folded so ``user 17`` and ``user 18`` match.
    """
    tb = exc.__traceback__
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        where = f"{code.co_filename}:{code.co_name}:{tb.tb_lineno}"
    else:
        where = _DIGITS.sub("#", str(exc))[:200]
    key = f"{error_type(exc)}|{category}|{where}"
    return hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]


def _value(item: Enum | str | None, default: str) -> str:
    if item is None:
        return default
    return str(item.value if isinstance(item, Enum) else item).lower()


def track_error(
    error: BaseException,
    category: ErrorCategory | str = ErrorCategory.SYSTEM,
    severity: ErrorSeverity | str = ErrorSeverity.MEDIUM,
    context: Mapping[str, Any] | None = None,
    *,
    on_span: bool = True,
) -> ErrorReport:
    """Record one error (see the module docstring); never raises.

    ``on_span=False`` leaves the span alone (no exception event, no status): for a
    caller that has put the exception on its span already, like the web layer's
    exception handlers. The counter, log line, store record and alert still happen.
    """
    own_span: Span | None = None
    try:
        category_value = _value(category, ErrorCategory.SYSTEM.value)
        severity_value = _value(severity, ErrorSeverity.MEDIUM.value)
        etype = error_type(error)
        message = scrub_text(str(error))
        extra: dict[str, Any] = scrub(dict(context)) if context else {}
        trace_text = stacktrace(error) if error.__traceback__ is not None else None
        print_ = fingerprint(error, category_value)
        event_id = new_event_id()
        request_id = _context_value("request_id", extra)
        user_id = _context_value("user_id", extra)

        span = trace.get_current_span()
        if on_span and not span.get_span_context().is_valid:
            own_span = span = _tracer.start_span(f"error {category_value}", kind=SpanKind.INTERNAL)
        if on_span and span.is_recording():
            record_exception(
                span,
                error,
                {
                    names.ATTR_ERROR_CATEGORY: category_value,
                    names.ATTR_ERROR_SEVERITY: severity_value,
                    "chatai.event.id": event_id,
                },
            )
            span.set_attribute(names.ATTR_ERROR_TYPE, etype)
            if severity_value in _STATUS_SEVERITIES:
                span.set_status(Status(StatusCode.ERROR, f"{etype}: {message}"[:256]))

        _errors.add(
            1,
            {
                names.ATTR_ERROR_CATEGORY: category_value
                if category_value in _CATEGORIES
                else OTHER,
                names.ATTR_ERROR_SEVERITY: severity_value
                if severity_value in _SEVERITIES
                else OTHER,
                names.ATTR_ERROR_TYPE: etype,
            },
        )

        log = _loggers.get()
        emit_log = log.critical if severity_value == ErrorSeverity.CRITICAL.value else log.error
        emit_log(
            "application_error",
            **{
                "exception.type": etype,
                "exception.message": message,
                "exception.stacktrace": trace_text,
                "error.category": category_value,
                "error.severity": severity_value,
                "error.fingerprint": print_,
                "event_id": event_id,
                "context": extra,
            },
        )

        trace_id, span_id = trace_ids(span)
        settings = process_settings.settings()
        timestamp = datetime.now(UTC)
        get_sink().put_nowait(
            ErrorRecord(
                event_id=event_id,
                timestamp=timestamp,
                service_name=settings.service_name,
                trace_id=trace_id,
                span_id=span_id,
                request_id=request_id,
                user_id=user_id,
                error_type=etype,
                message=message,
                category=category_value,
                severity=severity_value,
                context=extra,
                stacktrace=trace_text,
                fingerprint=print_,
            )
        )

        outcome = None
        if severity_value == ErrorSeverity.CRITICAL.value:
            notifier = alerts.get_notifier()
            if notifier is not None:
                summary = f"{etype}: {message}"
                outcome = notifier.notify(
                    {
                        "text": (
                            f"CRITICAL error in {settings.service_name} ({settings.environment}): "
                            f"{summary[:500]} [category={category_value}, "
                            f"request_id={request_id or 'n/a'}, trace_id={trace_id or 'n/a'}]"
                        ),
                        "alert": {
                            "error_type": etype,
                            "message": message[:2000],
                            "category": category_value,
                            "severity": severity_value,
                            "request_id": request_id,
                            "user_id": user_id,
                            "trace_id": trace_id,
                            "span_id": span_id,
                            "service.name": settings.service_name,
                            "deployment.environment.name": settings.environment,
                            "timestamp": timestamp.isoformat(),
                            "fingerprint": print_,
                            "event_id": event_id,
                            "context": extra,
                        },
                    },
                    print_,
                )
        if own_span is not None:
            own_span.end()
        return ErrorReport(event_id, print_, outcome)
    except Exception:
        _internal.warning("chatai-otel: an error could not be tracked", exc_info=True)
        if own_span is not None:
            try:
                own_span.end()
            except Exception:
                pass
        return ErrorReport(None, None)


def _context_value(key: str, extra: Mapping[str, Any]) -> Any:
    value = request_context.get(key)
    if value is None:
        value = extra.get(key)
    return value


class ErrorTracker:
    """The seed's ``error_tracker`` object, so ``await error_tracker.track_error(...)`` keeps working."""

    async def track_error(
        self,
        error: BaseException,
        category: ErrorCategory | str = ErrorCategory.SYSTEM,
        severity: ErrorSeverity | str = ErrorSeverity.MEDIUM,
        context: Mapping[str, Any] | None = None,
    ) -> ErrorReport:
        return track_error(error, category, severity, context)


error_tracker = ErrorTracker()
