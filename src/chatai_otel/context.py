"""Request-scoped context: request_id, user_id, session_id, dialog_id (and any other field).

Every log line of a request carries these fields. They live in one
:class:`contextvars.ContextVar` holding an immutable mapping: binding makes a
new mapping and sets the variable, nothing is ever mutated in place. So the
values survive ``await``, an asyncio task sees what was bound when it was
created but its own bindings never leak to its parent or siblings, and a new
thread starts empty. Reading the context for a log line is one ``get()``.

``user_id`` is also set on the active span as ``user.id`` (semantic conventions).
``session_id`` is an identifier of the chat session, never the session cookie
or token (see :mod:`chatai_otel.redaction`).

Use :func:`bound` as a context manager or as a decorator (sync or async)::

    with context.bound(request_id=rid, user_id=42):
        ...

    @context.bound(dialog_id=7)
    async def handle(...): ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import trace

__all__ = ["CONTEXT_KEYS", "bind", "bound", "clear", "current", "get", "push", "reset", "unbind"]

CONTEXT_KEYS = ("request_id", "user_id", "session_id", "dialog_id")

# The dicts held by the variable are never mutated after set(): that is what isolates tasks.
_EMPTY: dict[str, Any] = {}
_fields: ContextVar[dict[str, Any]] = ContextVar("chatai_otel_context", default=_EMPTY)

F = TypeVar("F", bound=Callable[..., Any])


def _mark_span(values: Mapping[str, Any]) -> None:
    user_id = values.get("user_id")
    if user_id is None:
        return
    try:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("user.id", str(user_id))
    except Exception:  # telemetry never breaks the caller
        pass


def bind(**values: Any) -> None:
    """Bind fields for the rest of the current task / thread (explicit log fields still win)."""
    _fields.set({**_fields.get(), **values})
    _mark_span(values)


def unbind(*keys: str) -> None:
    """Remove fields (missing ones are ignored)."""
    current = _fields.get()
    if any(key in current for key in keys):
        _fields.set({k: v for k, v in current.items() if k not in keys})


def push(**values: Any) -> Token[dict[str, Any]]:
    """Bind fields and return a token for :func:`reset` (for middleware that cannot use ``with``)."""
    token = _fields.set({**_fields.get(), **values})
    _mark_span(values)
    return token


def reset(token: Token[dict[str, Any]]) -> None:
    """Restore the fields as they were before the :func:`push` that returned ``token``."""
    _fields.reset(token)


def clear() -> None:
    """Remove every field (e.g. at the start of a job taken from a reused worker thread)."""
    _fields.set(_EMPTY)


def get(key: str, default: Any = None) -> Any:
    """The bound value of one field."""
    return _fields.get().get(key, default)


def current() -> Mapping[str, Any]:
    """All bound fields, read-only (hand it to :func:`bind` in another thread to carry them)."""
    return MappingProxyType(_fields.get())


def fields() -> dict[str, Any]:
    """The bound fields as the (shared, never mutated) dict itself: for the log pipeline only."""
    return _fields.get()


class bound:
    """Bind fields for a block (context manager) or for every call of a function (decorator).

    On exit the previous fields are restored exactly, even if the block re-bound them.
    As a decorator each call gets its own binding, so concurrent calls never share one.
    """

    def __init__(self, **values: Any) -> None:
        self._values = values
        self._tokens: list[Token[dict[str, Any]]] = []

    def __enter__(self) -> Mapping[str, Any]:
        values = {**_fields.get(), **self._values}
        self._tokens.append(_fields.set(values))
        _mark_span(self._values)
        return MappingProxyType(values)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _fields.reset(self._tokens.pop())

    def __call__(self, function: F) -> F:
        values = self._values
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with bound(**values):
                    return await function(*args, **kwargs)

            return cast(F, run_async)

        if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
            raise TypeError("bound() cannot decorate generators; use `with bound(...)` inside")

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with bound(**values):
                return function(*args, **kwargs)

        return cast(F, run)
