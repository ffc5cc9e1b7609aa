"""One logging pipeline: structlog processors -> a JSON line on stdout and one OTLP LogRecord.

Each call goes through a short chain of structlog processors; the last one
both renders the JSON line and emits the OTel log record, so a line can never
be exported twice or printed without being exported.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider

from chatai_otel.config import Settings

__all__ = ["configure_logging", "get_audit_logger", "get_logger"]

_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "warn": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "exception": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}

EventDict = MutableMapping[str, Any]


def add_trace_context(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Put the active span's ids on the line (32/16 lowercase hex), or nothing when none is active."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


def _json_default(value: Any) -> Any:
    return repr(value)


class JsonAndOtlpSink:
    """Final processor: write the JSON line and emit the OTLP record, never raising."""

    def __init__(self, stream: TextIO, logger_provider: LoggerProvider | None) -> None:
        self._stream = stream
        self._otel_logger = (
            logger_provider.get_logger("chatai_otel") if logger_provider is not None else None
        )

    def __call__(self, _logger: Any, method: str, event_dict: EventDict) -> str:
        try:
            line = orjson.dumps(event_dict, default=_json_default)
            self._stream.write(line.decode() + "\n")
            if self._otel_logger is not None:
                self._emit(method, event_dict)
        except Exception:
            pass
        raise structlog.DropEvent

    def _emit(self, method: str, event_dict: Mapping[str, Any]) -> None:
        assert self._otel_logger is not None
        level = str(event_dict.get("level", method))
        attributes = {
            key: value if isinstance(value, str | int | float | bool) else repr(value)
            for key, value in event_dict.items()
            if key not in ("event", "level", "timestamp", "trace_id", "span_id")
        }
        self._otel_logger.emit(
            timestamp=time.time_ns(),
            context=otel_context.get_current(),
            severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(),
            body=str(event_dict.get("event", "")),
            attributes=attributes,
        )


def configure_logging(settings: Settings, logger_provider: LoggerProvider | None) -> None:
    """Install the structlog pipeline for the whole process."""
    level = logging.getLevelName(settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            add_trace_context,
            JsonAndOtlpSink(sys.stdout, logger_provider),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None, **initial_values: Any) -> Any:
    """A structlog logger bound to ``logger=name``."""
    logger = structlog.get_logger()
    if name is not None:
        initial_values["logger"] = name
    return logger.bind(**initial_values) if initial_values else logger


def get_audit_logger() -> Any:
    """The audit stream (the seed's audit.log): marked ``log.type=audit``, never filtered by level."""
    return get_logger("audit", **{"log.type": "audit"})
