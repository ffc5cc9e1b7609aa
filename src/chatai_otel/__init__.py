"""chatai-otel: the OpenTelemetry distribution of the ChatAI platform.

The public API. Each name is imported when it is first used (PEP 562), so ``import
chatai_otel`` costs nothing and ``from chatai_otel import get_logger`` loads the logging
pipeline only: not the web layer, the health checker or the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    "BusinessEvent": "chatai_otel.tracking.events",
    "CheckOutcome": "chatai_otel.health.report",
    "ConfigError": "chatai_otel.config",
    "ErrorCategory": "chatai_otel.tracking.errors",
    "ErrorSeverity": "chatai_otel.tracking.errors",
    "EventType": "chatai_otel.tracking.events",
    "HealthChecker": "chatai_otel.health.checker",
    "HealthStatus": "chatai_otel.health.report",
    "Settings": "chatai_otel.config",
    "Telemetry": "chatai_otel.providers",
    "bind_user": "chatai_otel.integrations.fastapi",
    "configure": "chatai_otel.bootstrap",
    "current": "chatai_otel.bootstrap",
    "get_audit_logger": "chatai_otel.logs.structlog_bridge",
    "get_logger": "chatai_otel.logs.structlog_bridge",
    "health_router": "chatai_otel.health.router",
    "instrument_app": "chatai_otel.integrations.fastapi",
    "track": "chatai_otel.tracking.track",
    "track_error": "chatai_otel.tracking.errors",
}
# public submodules -> where they live
_SUBMODULES = {
    "context": "chatai_otel.context",
    "events": "chatai_otel.tracking.events",
    "genai": "chatai_otel.tracking.genai",
    "propagation": "chatai_otel.integrations.jobs",
}

__all__ = [
    "BusinessEvent",
    "CheckOutcome",
    "ConfigError",
    "ErrorCategory",
    "ErrorSeverity",
    "EventType",
    "HealthChecker",
    "HealthStatus",
    "Settings",
    "Telemetry",
    "bind_user",
    "configure",
    "context",
    "current",
    "events",
    "genai",
    "get_audit_logger",
    "get_logger",
    "health_router",
    "instrument_app",
    "propagation",
    "track",
    "track_error",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatai_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from chatai_otel import context
    from chatai_otel.bootstrap import configure, current
    from chatai_otel.config import ConfigError, Settings
    from chatai_otel.health.checker import HealthChecker
    from chatai_otel.health.report import CheckOutcome, HealthStatus
    from chatai_otel.health.router import health_router
    from chatai_otel.integrations import jobs as propagation
    from chatai_otel.integrations.fastapi import bind_user, instrument_app
    from chatai_otel.logs.structlog_bridge import get_audit_logger, get_logger
    from chatai_otel.providers import Telemetry
    from chatai_otel.tracking import events, genai
    from chatai_otel.tracking.errors import ErrorCategory, ErrorSeverity, track_error
    from chatai_otel.tracking.events import BusinessEvent, EventType
    from chatai_otel.tracking.track import track
