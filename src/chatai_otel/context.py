"""Request-scoped context: request_id, user_id, session_id, dialog_id.

Stored in structlog's context variables, so every log line of the request
carries them, they survive ``await`` and stay isolated between concurrent
requests and threads. ``user_id`` is also put on the active span as ``user.id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import trace

__all__ = ["CONTEXT_KEYS", "bind", "bound", "get", "unbind"]

CONTEXT_KEYS = ("request_id", "user_id", "session_id", "dialog_id")


def bind(**values: Any) -> None:
    """Bind context fields for the rest of the current task / thread."""
    structlog.contextvars.bind_contextvars(**values)
    user_id = values.get("user_id")
    if user_id is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("user.id", str(user_id))


def unbind(*keys: str) -> None:
    """Remove context fields."""
    structlog.contextvars.unbind_contextvars(*keys)


def get(key: str, default: Any = None) -> Any:
    """The bound value of one context field."""
    return structlog.contextvars.get_contextvars().get(key, default)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind fields for the duration of a block, restoring what was there before."""
    with structlog.contextvars.bound_contextvars(**values):
        user_id = values.get("user_id")
        if user_id is not None:
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute("user.id", str(user_id))
        yield
