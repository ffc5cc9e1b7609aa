"""Small span helpers shared by events, errors, @track and the GenAI helpers.

The SDK's ``span.record_exception`` writes ``str(exc)`` and the traceback as
they are; an exception message may hold a password or a token, so ours writes
the same ``exception`` event through the scrubber, and
:func:`scrub_sdk_span_exceptions` makes the SDK's own spans do so at the source.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Mapping
from typing import Any

import orjson
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import Span, Status, StatusCode

from chatai_otel.redaction import get_scrubber, scrub_text

__all__ = [
    "error_type",
    "exception_attributes",
    "flatten",
    "record_exception",
    "scrub_sdk_span_exceptions",
    "trace_ids",
]

_PRIMITIVES = (str, bool, int, float)
MAX_STACKTRACE = 8192  # characters; the end of a traceback is the part worth keeping


def error_type(exc: BaseException) -> str:
    """``error.type`` as semconv asks: the class name, qualified unless it is a builtin."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def stacktrace(exc: BaseException) -> str:
    """The scrubbed, length-capped traceback of ``exc``."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > MAX_STACKTRACE:  # scrubbed before the cut: no half secret survives it
        return "...\n" + get_scrubber().scrub_text_tail(text, MAX_STACKTRACE)
    return scrub_text(text)


def exception_attributes(exc: BaseException, *, with_stacktrace: bool = True) -> dict[str, Any]:
    """The semconv ``exception.*`` attributes, message and stacktrace scrubbed."""
    attributes: dict[str, Any] = {
        "exception.type": error_type(exc),
        "exception.message": scrub_text(str(exc)),
    }
    if with_stacktrace:
        attributes["exception.stacktrace"] = stacktrace(exc)
    return attributes


def record_exception(
    span: Span, exc: BaseException, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Add a scrubbed ``exception`` event to ``span``; returns its attributes."""
    attributes = exception_attributes(exc)
    if extra:
        attributes.update(extra)
    if span.is_recording():
        span.add_event("exception", attributes)
    return attributes


def attribute_value(value: Any) -> Any:
    """A span-attribute-safe value: primitives as they are, anything else as JSON or text."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, Mapping | list | tuple):
        try:
            return orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            return str(value)
    return str(value)


_prefixed: dict[tuple[str, str], str] = {}  # (prefix, key) -> prefix + key: data keys repeat


def flatten(prefix: str, data: Mapping[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """``{"a": 1, "b": {"c": 2}}`` -> ``{prefix + "a": 1, prefix + "b": '{"c":2}'}`` (None dropped)."""
    names = _prefixed
    for key, value in data.items():
        if value is None:
            continue
        name = names.get((prefix, key)) if type(key) is str else None
        if name is None:
            name = prefix + str(key)
            if type(key) is str and len(key) <= 64:
                if len(names) >= 4096:
                    names.clear()
                names[prefix, key] = name
        kind = type(value)
        into[name] = (
            value
            if kind is str or kind is int or kind is float or kind is bool
            else attribute_value(value)
        )
    return into


_last_ids: tuple[int, int, str, str] = (0, 0, "", "")  # the span asked last, as hex


def trace_ids(span: Span) -> tuple[str | None, str | None]:
    """The span's trace and span id as lowercase hex, or (None, None) for an invalid span.

    The last span's are remembered: the events and errors of one request ask for the
    same span again and again."""
    global _last_ids
    context = span.get_span_context()
    if not context.is_valid:
        return None, None
    trace_id, span_id = context.trace_id, context.span_id
    last = _last_ids
    if last[1] == span_id and last[0] == trace_id:
        return last[2], last[3]
    last = (trace_id, span_id, format(trace_id, "032x"), format(span_id, "016x"))
    _last_ids = last
    return last[2], last[3]


def scrub_sdk_span_exceptions() -> None:
    """Scrub the exception text of the SDK's own spans where it is written, not at export.

    ``record_exception`` (app code, instrumentations, ``use_span``, a span's ``__exit__``)
    and an ERROR status description (``"ValueError: password=..."``) would otherwise hand
    the text as it is to every span processor: the console exporter, a vendor's processor,
    an in-memory exporter in a test. Our OTLP export scrubs them again. Idempotent.
    """
    if getattr(SdkSpan.record_exception, "_chatai_scrubbed", False):
        return
    record = SdkSpan.record_exception
    set_status = SdkSpan.set_status

    @functools.wraps(record)
    def record_scrubbed(
        self: SdkSpan,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        try:
            scrubbed: Any = exception_attributes(exception)
            del scrubbed["exception.type"]  # the SDK's own, unchanged
            if attributes:
                scrubbed.update(attributes)
        except Exception:
            scrubbed = attributes
        record(self, exception, scrubbed, timestamp, escaped)

    @functools.wraps(set_status)
    def set_status_scrubbed(
        self: SdkSpan, status: Status | StatusCode, description: str | None = None
    ) -> None:
        try:
            if isinstance(status, Status) and status.description:
                status = Status(status.status_code, scrub_text(status.description))
            elif description:
                description = scrub_text(description)
        except Exception:
            pass
        set_status(self, status, description)

    record_scrubbed._chatai_scrubbed = True  # type: ignore[attr-defined]
    SdkSpan.record_exception = record_scrubbed  # type: ignore[method-assign]
    SdkSpan.set_status = set_status_scrubbed  # type: ignore[method-assign]
