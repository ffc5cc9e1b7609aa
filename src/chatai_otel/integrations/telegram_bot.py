"""The Telegram bot side: an aiogram middleware that gives every update a span, a log line and a metric.

::

    import chatai_otel.setup  # noqa: F401  (first: configures everything)
    from aiogram import Dispatcher
    from chatai_otel.integrations.telegram_bot import instrument_dispatcher

    dp = Dispatcher()
    instrument_dispatcher(dp)      # = dp.update.outer_middleware(TelemetryMiddleware())

For each update the middleware

* opens a span ``telegram <update type>`` (SERVER: the update is where the
  bot's work starts; INTERNAL when an HTTP server span is already active, as
  under a webhook) with ``chatai.telegram.update_id``, ``update_type``,
  ``chat_id``, ``chat_type``, the ``command`` of a ``/command`` message and
  ``user.id`` — never the message text;
* binds ``user_id``, ``chat_id`` and ``request_id`` (``tg-<update id>``) to every
  log line written while the update is handled, business events included;
* writes one ``TELEGRAM_UPDATE`` line (the bot's access log) and records
  ``chatai.bot.update.duration`` {update type, status ``ok``/``error``/``unhandled``};
* records a handler's exception on the span (scrubbed), counts it with
  ``track_error`` and re-raises it for aiogram's error handlers.

The middleware needs nothing from aiogram itself (it reads ``update_id``,
``event_type`` and ``event`` of the update it is given), so importing this
module does not import aiogram; the optional extra ``bot`` installs it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chatai_otel import context as log_context
from chatai_otel import metric_names as names
from chatai_otel import process_settings
from chatai_otel.logs.structlog_bridge import get_logger
from chatai_otel.spans import error_type, record_exception
from chatai_otel.tracking.errors import ErrorCategory, ErrorSeverity, track_error

__all__ = ["TelemetryMiddleware", "instrument_dispatcher", "update_attributes"]

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]

_tracer = trace.get_tracer("chatai_otel.bot")
_meter = metrics.get_meter("chatai_otel.bot")
_duration = _meter.create_histogram(
    names.BOT_UPDATE_DURATION,
    unit=names.BOT_UPDATE_DURATION_UNIT,
    description="Time the bot took to handle one Telegram update.",
    explicit_bucket_boundaries_advisory=names.OPERATION_DURATION_BUCKETS,
)
_loggers = process_settings.PerConfigure(lambda: get_logger("chatai_otel.bot"))
# aiogram's control-flow exceptions: not failures of the handler
_CONTROL_FLOW = frozenset({"SkipHandler", "CancelHandler"})
_KNOWN_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)


def _unhandled() -> object:
    try:
        from aiogram.dispatcher.event.bases import UNHANDLED

        return UNHANDLED
    except Exception:
        return object()  # matches nothing: every update counts as handled


def _update_type(update: Any) -> str:
    try:
        value = str(update.event_type)
    except Exception:
        return "unknown"
    return value if value in _KNOWN_TYPES else "other"


def _command(event: Any) -> str | None:
    """``/start`` of ``/start@my_bot payload``; None for anything that is not a command."""
    text = getattr(event, "text", None)
    if not isinstance(text, str) or not text.startswith("/"):
        return None
    word = text.split(maxsplit=1)[0].split("@", 1)[0]
    return word[:32] if len(word) > 1 else None


def update_attributes(update: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The span attributes of one update (ids, type, chat, command; never the text)."""
    data = data or {}
    update_type = _update_type(update)
    attributes: dict[str, Any] = {names.ATTR_UPDATE_TYPE: update_type}
    update_id = getattr(update, "update_id", None)
    if isinstance(update_id, int):
        attributes["chatai.telegram.update_id"] = update_id
    try:
        event = update.event
    except Exception:
        event = None
    user = data.get("event_from_user") or getattr(event, "from_user", None)
    chat = data.get("event_chat") or getattr(event, "chat", None)
    if chat is None:
        message = getattr(event, "message", None)  # a callback query's message
        chat = getattr(message, "chat", None)
    user_id = getattr(user, "id", None)
    if isinstance(user_id, int):
        attributes["user.id"] = str(user_id)
    chat_id = getattr(chat, "id", None)
    if isinstance(chat_id, int):
        attributes["chatai.telegram.chat_id"] = chat_id
    chat_type = getattr(chat, "type", None)
    if chat_type is not None:
        attributes["chatai.telegram.chat_type"] = str(getattr(chat_type, "value", chat_type))
    command = _command(event)
    if command is not None:
        attributes["chatai.telegram.command"] = command
    return attributes


class TelemetryMiddleware:
    """An aiogram outer middleware for ``dp.update``: one span, log line and metric point per update."""

    def __init__(self) -> None:
        self._unhandled = _unhandled()

    async def __call__(self, handler: Handler, update: Any, data: dict[str, Any]) -> Any:
        started = time.perf_counter()
        span: Span = trace.INVALID_SPAN
        token: object = None
        attributes: dict[str, Any] = {}
        bound: dict[str, Any] = {}
        try:
            attributes = update_attributes(update, data)
            nested = trace.get_current_span().get_span_context().is_valid
            span = _tracer.start_span(
                f"telegram {attributes[names.ATTR_UPDATE_TYPE]}",
                kind=SpanKind.INTERNAL if nested else SpanKind.SERVER,
                attributes=attributes,
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            if "chatai.telegram.update_id" in attributes:
                bound["request_id"] = f"tg-{attributes['chatai.telegram.update_id']}"
            if "user.id" in attributes:
                bound["user_id"] = int(attributes["user.id"])
            if "chatai.telegram.chat_id" in attributes:
                bound["chat_id"] = attributes["chatai.telegram.chat_id"]
        except Exception:
            pass
        status = "ok"
        failure: BaseException | None = None
        try:
            with log_context.bound(**bound):
                try:
                    result = await handler(update, data)
                except BaseException as exc:
                    if type(exc).__name__ not in _CONTROL_FLOW:
                        status, failure = "error", exc
                        self._fail(span, exc, attributes)
                    raise
                if result is self._unhandled:
                    status = "unhandled"
                return result
        finally:
            self._finish(span, token, attributes, bound, status, failure, started)

    def _fail(self, span: Span, exc: BaseException, attributes: dict[str, Any]) -> None:
        try:
            record_exception(span, exc)
            span.set_attribute("error.type", error_type(exc))
            span.set_status(Status(StatusCode.ERROR, error_type(exc)))
            if isinstance(exc, Exception):
                track_error(
                    exc,
                    ErrorCategory.SYSTEM,
                    ErrorSeverity.HIGH,
                    {
                        "update_type": attributes.get(names.ATTR_UPDATE_TYPE),
                        "update_id": attributes.get("chatai.telegram.update_id"),
                    },
                    on_span=False,
                )
        except Exception:
            pass

    def _finish(
        self,
        span: Span,
        token: object,
        attributes: dict[str, Any],
        bound: dict[str, Any],
        status: str,
        failure: BaseException | None,
        started: float,
    ) -> None:
        try:
            seconds = time.perf_counter() - started
            update_type = attributes.get(names.ATTR_UPDATE_TYPE, "unknown")
            span.set_attribute("chatai.telegram.handled", status != "unhandled")
            _duration.record(
                seconds, {names.ATTR_UPDATE_TYPE: update_type, names.ATTR_STATUS: status}
            )
            fields: dict[str, Any] = {
                "update_type": update_type,
                "update_id": attributes.get("chatai.telegram.update_id"),
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                **bound,
            }
            command = attributes.get("chatai.telegram.command")
            if command is not None:
                fields["command"] = command
            log = _loggers.get()
            if failure is not None:
                fields["error_type"] = error_type(failure)
                log.error("TELEGRAM_UPDATE", **fields)
            else:
                log.info("TELEGRAM_UPDATE", **fields)
        except Exception:
            pass
        try:
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            span.end()
        except Exception:
            pass


def instrument_dispatcher(dispatcher: Any) -> Any:
    """Register :class:`TelemetryMiddleware` on ``dispatcher.update`` once; returns the dispatcher."""
    if getattr(dispatcher, "_chatai_otel_instrumented", False):
        return dispatcher
    dispatcher.update.outer_middleware(TelemetryMiddleware())
    dispatcher._chatai_otel_instrumented = True
    return dispatcher
