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
    "BusinessEvent": "chatai_otel.events",
    "CheckOutcome": "chatai_otel.health",
    "ConfigError": "chatai_otel.config",
    "ErrorCategory": "chatai_otel.errors",
    "ErrorSeverity": "chatai_otel.errors",
    "EventType": "chatai_otel.events",
    "HealthChecker": "chatai_otel.health",
    "HealthStatus": "chatai_otel.health",
    "Settings": "chatai_otel.config",
    "Telemetry": "chatai_otel.sdk",
    "bind_user": "chatai_otel.web",
    "configure": "chatai_otel.bootstrap",
    "current": "chatai_otel.bootstrap",
    "get_audit_logger": "chatai_otel.logs",
    "get_logger": "chatai_otel.logs",
    "health_router": "chatai_otel.health",
    "instrument_app": "chatai_otel.web",
    "track": "chatai_otel.perf",
    "track_error": "chatai_otel.errors",
}
_SUBMODULES = ("context", "events", "genai", "propagation")

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
        return importlib.import_module(f"chatai_otel.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatai_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from chatai_otel import context, events, genai, propagation
    from chatai_otel.bootstrap import configure, current
    from chatai_otel.config import ConfigError, Settings
    from chatai_otel.errors import ErrorCategory, ErrorSeverity, track_error
    from chatai_otel.events import BusinessEvent, EventType
    from chatai_otel.health import CheckOutcome, HealthChecker, HealthStatus, health_router
    from chatai_otel.logs import get_audit_logger, get_logger
    from chatai_otel.perf import track
    from chatai_otel.sdk import Telemetry
    from chatai_otel.web import bind_user, instrument_app
