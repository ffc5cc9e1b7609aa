"""chatai-otel: the OpenTelemetry distribution of the ChatAI platform.

The public API, re-exported; nothing else lives here.
"""

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
