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

Context bound the structlog way (``structlog.contextvars.bind_contextvars``,
``bound_contextvars``, ``unbind_contextvars``, ``clear_contextvars``) is part of
it: every line carries those fields too, with the same task and thread
semantics (structlog keeps them in context variables of its own). On a clash
ours wins, and a field given to the logging call wins over both. While nothing
was ever bound through structlog, reading them costs one dict check.

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

import structlog.contextvars
from opentelemetry import trace

__all__ = [
    "CONTEXT_KEYS",
    "bind",
    "bound",
    "clear",
    "current",
    "fields",
    "get",
    "push",
    "reset",
    "structlog_fields",
    "unbind",
]

CONTEXT_KEYS = ("request_id", "user_id", "session_id", "dialog_id")

# The dicts held by the variable are never mutated after set(): that is what isolates tasks.
_EMPTY: dict[str, Any] = {}
_MISSING = object()
_fields: ContextVar[dict[str, Any]] = ContextVar("chatai_otel_context", default=_EMPTY)

F = TypeVar("F", bound=Callable[..., Any])

_STRUCTLOG_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_STRUCTLOG_SKIP = len(_STRUCTLOG_PREFIX)
# structlog's registry of its context variables ({"structlog_<key>": ContextVar}), filled
# by its first bind_contextvars(): while it is empty nothing is bound. Not public API, so
# when a structlog release lacks it every read takes the public (slower) get_contextvars().
_STRUCTLOG_VARS: dict[str, ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)
if not isinstance(_STRUCTLOG_VARS, dict):
    _STRUCTLOG_VARS = None


def structlog_fields() -> dict[str, Any]:
    """What ``structlog.contextvars`` has bound in this context ({} when nothing is)."""
    registry = _STRUCTLOG_VARS
    if registry is None:
        return structlog.contextvars.get_contextvars()
    if not registry:
        return _EMPTY
    found: dict[str, Any] | None = None
    try:
        for name, var in registry.items():
            value = var.get(Ellipsis)
            if value is not Ellipsis:  # structlog marks an unbound key with Ellipsis
                if found is None:
                    found = {}
                found[name[_STRUCTLOG_SKIP:]] = value
    except RuntimeError:  # another thread bound a new key meanwhile: read again
        return structlog_fields()
    return found or _EMPTY


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
    """The bound value of one field (ours, else one bound through ``structlog.contextvars``)."""
    value = _fields.get().get(key, _MISSING)
    if value is not _MISSING:
        return value
    return structlog_fields().get(key, default)


def current() -> Mapping[str, Any]:
    """All bound fields, read-only (hand it to :func:`bind` in another thread to carry them)."""
    return MappingProxyType(fields())


def fields() -> dict[str, Any]:
    """The bound fields, ours over structlog's: for the log pipeline (never mutate it)."""
    ours = _fields.get()
    registry = _STRUCTLOG_VARS
    if registry is not None and not registry:  # the common case: nothing bound via structlog
        return ours
    theirs = structlog_fields()
    if not theirs:
        return ours
    return {**theirs, **ours} if ours else theirs


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
