"""``instrument_app()``: the FastAPI side of chatai-otel — request telemetry, request ids, error bodies.

What a FastAPI app gets (by hand with ``instrument_app(app)``, or automatically
when launched under ``opentelemetry-instrument`` with our distro):

* :class:`chatai_otel.integrations.asgi.RequestTelemetryMiddleware` as the outermost layer
  (outside Starlette's ServerErrorMiddleware, so it sees the real status of
  every response, 500s included): one SERVER span per request, the
  ``http.server.request.duration`` histogram keyed by route template, one
  access log line, the request id;
* exception handlers whose bodies carry the ``request_id`` and no internals:
  ``RequestValidationError`` -> 422 with the validation details, SQLAlchemy
  errors -> 500 ``Database error occurred``, anything unhandled -> 500; each
  records the exception (scrubbed) on the server span. Handlers the app
  registered itself are kept;
* FastAPI's own built-in telemetry switched off for the app, so no request is
  traced twice.

User context: call :func:`bind_user` from the app's auth dependency; it binds
``user_id``/``session_id`` to every later log line of the request, sets
``user.id`` on the server span and puts them on the access line — also from a
sync dependency that FastAPI runs in a worker thread.
"""

from __future__ import annotations

import functools
from typing import Any

from chatai_otel import context
from chatai_otel.integrations.asgi import (
    SCOPE_KEY,
    RequestState,
    RequestTelemetryMiddleware,
    current_request,
    record_exception,
)
from chatai_otel.logs.structlog_bridge import get_logger

__all__ = ["bind_user", "enable_auto_instrumentation", "instrument_app", "request_id"]

_OPTIONS_ATTR = "_chatai_otel_options"
_EXTRA_EXCLUDED_ATTR = "_chatai_otel_excluded_paths"  # set by exclude_paths()


def request_id() -> str | None:
    """The id of the request in flight (also ``request.state.request_id``), or None."""
    state = current_request()
    return state.request_id if state is not None else context.get("request_id")


def bind_user(user_id: Any = None, session_id: Any = None) -> None:
    """Attach the authenticated user to the request: logs (user_id, session_id) and span (user.id).

    Call it from the auth dependency::

        async def current_user(token: str = Depends(oauth2)) -> User:
            user = await users.from_token(token)
            chatai_otel.bind_user(user.id, session_id=token_session(token))
            return user
    """
    try:
        values = {
            key: value
            for key, value in (("user_id", user_id), ("session_id", session_id))
            if value is not None
        }
        if not values:
            return
        context.bind(**values)
        state = current_request()
        if state is None:
            return
        if user_id is not None:
            state.user_id = user_id
            if state.span is not None and state.span.is_recording():
                state.span.set_attribute("user.id", str(user_id))
        if session_id is not None:
            state.session_id = session_id
    except Exception:  # telemetry never breaks the app
        pass


# --- exception handlers ------------------------------------------------------------------


def _state_of(request: Any) -> RequestState | None:
    state = request.scope.get(SCOPE_KEY)
    return state if isinstance(state, RequestState) else current_request()


def _note_exception(request: Any, exc: BaseException, category: str, severity: str) -> str | None:
    """Hand a handled request error to ``track_error`` once (span event, counter, error record)."""
    state = _state_of(request)
    try:
        if state is None or state.exception is not exc:
            if state is not None:
                state.exception = exc
            event_id = _report_error(exc, request, category, severity)
            if state is not None:
                state.error_event_id = event_id
                if event_id is None and state.span is not None:
                    record_exception(state.span, exc)  # track_error failed: the span still shows it
    except Exception:
        pass
    return state.request_id if state is not None else request_id()


def _note_answer(request: Any, exc: BaseException) -> None:
    """A deliberate 5xx answer: the exception on the span and the access line, no error record."""
    try:
        state = _state_of(request)
        if state is not None and state.exception is not exc:
            state.exception = exc
            if state.span is not None:
                record_exception(state.span, exc)
    except Exception:
        pass


def _report_error(exc: BaseException, request: Any, category: str, severity: str) -> str | None:
    """The one call site that feeds handled request errors to ``chatai_otel.tracking.errors.track_error``.

    ``track_error`` records the exception on the active span (our server span),
    counts it in ``chatai.errors`` and writes the error record with the stack;
    returns its event id (None when it could not run).
    """
    from chatai_otel.tracking.errors import track_error

    scope = request.scope
    route = scope.get("route")
    report = track_error(
        exc,
        category,
        severity,
        {
            "method": scope.get("method"),
            "path": scope.get("path"),
            "route": getattr(route, "path_format", None),
        },
    )
    return report.event_id


async def validation_error_handler(request: Any, exc: Exception) -> Any:
    """422 with the validation details (type, location, message; never the rejected input)."""
    from fastapi.responses import JSONResponse

    rid = _note_exception(request, exc, "validation", "low")
    errors: list[dict[str, Any]] = list(getattr(exc, "errors", list)())
    detail = [
        {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": error.get("msg")}
        for error in errors
    ]
    return JSONResponse({"detail": detail, "request_id": rid}, status_code=422)


async def database_error_handler(request: Any, exc: Exception) -> Any:
    """500 ``Database error occurred``: the statement, driver message and DSN stay inside."""
    from fastapi.responses import JSONResponse

    rid = _note_exception(request, exc, "database", "high")
    return JSONResponse({"detail": "Database error occurred", "request_id": rid}, status_code=500)


async def unhandled_error_handler(request: Any, exc: Exception) -> Any:
    """500 ``Internal server error`` for anything the app did not handle."""
    from fastapi.responses import JSONResponse

    rid = _note_exception(request, exc, "system", "high")
    return JSONResponse({"detail": "Internal server error", "request_id": rid}, status_code=500)


async def http_exception_handler(request: Any, exc: Exception) -> Any:
    """FastAPI's own HTTPException answer, plus the request_id.

    An HTTPException is the answer the app chose, not an error it failed to
    handle: a 5xx one is recorded on the server span and makes the access line
    HTTP_REQUEST_ERROR (``error.type`` is the status code, as the HTTP semconv
    asks), but it is not fed to ``track_error`` as a system error — the app
    knows the category (an upstream outage, maintenance) and tracks it itself.
    """
    from fastapi.responses import JSONResponse, Response

    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    if status >= 500:
        _note_answer(request, exc)
    if status in (204, 304) or status < 200:
        return Response(status_code=status, headers=headers)
    return JSONResponse(
        {"detail": getattr(exc, "detail", None), "request_id": request_id()},
        status_code=status,
        headers=headers,
    )


def _install_handlers(app: Any) -> None:
    """Register our handlers where the app still has FastAPI's defaults (or nothing)."""
    from fastapi import exception_handlers as defaults
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    handlers = app.exception_handlers
    if handlers.get(RequestValidationError) in (
        None,
        defaults.request_validation_exception_handler,
    ):
        handlers[RequestValidationError] = validation_error_handler
    if handlers.get(HTTPException) in (None, defaults.http_exception_handler):
        handlers[HTTPException] = http_exception_handler
    if Exception not in handlers and 500 not in handlers:
        handlers[Exception] = unhandled_error_handler
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        return
    handlers.setdefault(SQLAlchemyError, database_error_handler)


# --- instrument_app ----------------------------------------------------------------------


def instrument_app(
    app: Any,
    *,
    excluded_urls: list[str] | tuple[str, ...] | None = None,
    access_log: bool | None = None,
    capture_headers: list[str] | tuple[str, ...] | None = None,
    exception_handlers: bool = True,
    libraries: bool = True,
) -> Any:
    """Instrument a FastAPI (or Starlette) app; calling it again changes nothing. Returns ``app``.

    Options left as None come from the settings (``CHATAI_OTEL_EXCLUDED_URLS``,
    ``CHATAI_OTEL_ACCESS_LOG``, ``CHATAI_OTEL_CAPTURE_HEADERS``). ``libraries``
    also instruments SQLAlchemy, Redis and httpx (a no-op under
    ``opentelemetry-instrument``, which does it already).
    """
    if getattr(app, _OPTIONS_ATTR, None) is not None:
        return app
    settings = _settings()
    options: dict[str, Any] = {
        "excluded_urls": (
            *(settings.web.excluded_urls if excluded_urls is None else excluded_urls),
            *getattr(app, _EXTRA_EXCLUDED_ATTR, ()),
        ),
        "access_log": settings.web.access_log if access_log is None else access_log,
        "capture_headers": tuple(
            settings.web.capture_headers if capture_headers is None else capture_headers
        ),
        "gc_tuning": settings.gc_tuning,
    }
    setattr(app, _OPTIONS_ATTR, options)
    _disable_native_telemetry(app)
    if exception_handlers:
        _install_handlers(app)
    original = app.build_middleware_stack

    @functools.wraps(original)
    def build_middleware_stack() -> Any:
        return RequestTelemetryMiddleware(original(), **options)

    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None  # rebuilt with ours at the next request
    if libraries:
        from chatai_otel.integrations.instrumentors import instrument_libraries

        instrument_libraries()
    return app


def exclude_paths(app: Any, patterns: list[str] | tuple[str, ...]) -> None:
    """Keep ``patterns`` (a trailing ``*`` matches a prefix) out of ``app``'s request telemetry.

    For what mounts itself under a path, like the browser tunnel; works before and after
    :func:`instrument_app`, as long as the app has not served a request yet.
    """
    options = getattr(app, _OPTIONS_ATTR, None)
    if options is not None:
        options["excluded_urls"] = (*options["excluded_urls"], *patterns)
    pending = getattr(app, _EXTRA_EXCLUDED_ATTR, ())
    setattr(app, _EXTRA_EXCLUDED_ATTR, (*pending, *patterns))


def _settings() -> Any:
    from chatai_otel.bootstrap import current
    from chatai_otel.config import load_settings

    telemetry = current()
    return telemetry.settings if telemetry is not None else load_settings()


def _disable_native_telemetry(app: Any) -> None:
    """FastAPI >= 0.16x traces requests itself once an SDK is configured; we already do."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False, operation_spans=False)


_auto_enabled = False


def enable_auto_instrumentation() -> None:
    """Make every FastAPI app created from now on call :func:`instrument_app` (used by the distro)."""
    global _auto_enabled
    if _auto_enabled:
        return
    from fastapi import FastAPI

    original_init = FastAPI.__init__

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        try:
            instrument_app(self, libraries=False)
        except Exception:
            get_logger("chatai_otel.web").exception("could not instrument the FastAPI app")

    FastAPI.__init__ = __init__  # type: ignore[method-assign]
    _auto_enabled = True
