"""One CLIENT span per SQL statement, for every SQLAlchemy engine, sync or async — cheaply.

Why not the stock ``opentelemetry-instrumentation-sqlalchemy``: measured here it
adds about 180 µs to a one-row SELECT on SQLite (per statement it re-derives
the connection attributes from the URL through two semconv helpers, and four
pool-usage counter updates run per checkout), and it opens a ``connect`` span
for every pooled checkout. This module listens on the ``Engine`` *class*, so it
covers engines created before it was switched on and the ``sync_engine`` behind
every ``AsyncEngine`` (contrib issue #1648), and per statement it only looks
up attributes computed once per engine.

Spans follow the stable database semconv: name ``SELECT <db>``, attributes
``db.system.name``, ``db.namespace``, ``db.query.text`` (the statement with its
placeholders; parameter values are never recorded), ``db.operation.name``,
``server.address``/``server.port``; on failure ``error.type`` and status ERROR.
"""

from __future__ import annotations

import weakref
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import SpanKind, Status, StatusCode

from chatai_otel.redaction import scrub_text

__all__ = ["instrument_sqlalchemy", "uninstrument_sqlalchemy"]

_SPAN_KEY = "_chatai_otel_span"
_CLIENT = SpanKind.CLIENT
_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mssql": "mssql"}
_MAX_NAMES = 4096

_installed = False
_tracer: trace.Tracer | None = None
_engine_attributes: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_names: dict[tuple[str, str], tuple[str, str]] = {}


def _attributes_of(engine: Any) -> dict[str, Any]:
    """The per-engine attributes, computed once."""
    attributes = _engine_attributes.get(engine)
    if attributes is None:
        url = engine.url
        backend = url.get_backend_name()
        attributes = {"db.system.name": _SYSTEMS.get(backend, backend)}
        if url.database:
            attributes["db.namespace"] = url.database
        if url.host:
            attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
        _engine_attributes[engine] = attributes
    return attributes


def _name_and_operation(statement: str, namespace: str) -> tuple[str, str]:
    key = (statement, namespace)
    cached = _names.get(key)
    if cached is None:
        words = statement.lstrip("( \n\t").split(None, 1)
        operation = words[0].upper() if words else ""
        name = f"{operation} {namespace}".strip() if operation else (namespace or "SQL")
        cached = (name, operation)
        if len(_names) < _MAX_NAMES:  # statements are code, not data; the bound is a safety net
            _names[key] = cached
    return cached


def _before_cursor_execute(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    try:
        if _tracer is None or context is None:
            return
        if otel_context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
            return  # e.g. the health checks' own queries
        base = _attributes_of(conn.engine)
        name, operation = _name_and_operation(statement, base.get("db.namespace", ""))
        attributes = dict(base)
        attributes["db.query.text"] = statement
        if operation:
            attributes["db.operation.name"] = operation
        span = _tracer.start_span(name, kind=_CLIENT, attributes=attributes)
        setattr(context, _SPAN_KEY, span)
    except Exception:
        pass


def _after_cursor_execute(
    _conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    span = getattr(context, _SPAN_KEY, None)
    if span is not None:
        setattr(context, _SPAN_KEY, None)
        span.end()


def _handle_error(exception_context: Any) -> None:
    try:
        context = exception_context.execution_context
        span = getattr(context, _SPAN_KEY, None) if context is not None else None
        if span is None:
            return
        setattr(context, _SPAN_KEY, None)
        error = exception_context.original_exception
        cls = type(error)
        span.set_attribute("error.type", f"{cls.__module__}.{cls.__qualname__}")
        span.set_status(Status(StatusCode.ERROR, scrub_text(str(error))[:1024]))
        span.end()
    except Exception:
        pass


def instrument_sqlalchemy(tracer_provider: trace.TracerProvider | None = None) -> bool:
    """Listen on every SQLAlchemy engine, present and future; False when SQLAlchemy is absent."""
    global _installed, _tracer
    if _installed:
        return True
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return False
    from chatai_otel.sdk import distro_version

    _tracer = trace.get_tracer("chatai_otel.sql", distro_version(), tracer_provider)
    event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(Engine, "after_cursor_execute", _after_cursor_execute)
    event.listen(Engine, "handle_error", _handle_error)
    _installed = True
    return True


def uninstrument_sqlalchemy() -> None:
    """Stop listening (tests)."""
    global _installed
    if not _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.remove(Engine, "before_cursor_execute", _before_cursor_execute)
    event.remove(Engine, "after_cursor_execute", _after_cursor_execute)
    event.remove(Engine, "handle_error", _handle_error)
    _installed = False
