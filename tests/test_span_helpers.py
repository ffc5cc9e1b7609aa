"""The small span helpers events, errors and GenAI share (chatai_otel.spans)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags

from chatai_otel.spans import flatten, trace_ids


def _span(trace_id: int, span_id: int) -> NonRecordingSpan:
    return NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(1)))


def test_trace_ids_follow_the_span_asked_for_even_when_spans_alternate() -> None:
    first, second = _span(1, 2), _span(0xABC, 0xDEF)
    for _ in range(3):  # the last span's ids are remembered: alternating must not mix them
        assert trace_ids(first) == (f"{1:032x}", f"{2:016x}")
        assert trace_ids(second) == (f"{0xABC:032x}", f"{0xDEF:016x}")
    assert trace_ids(_span(1, 3)) == (f"{1:032x}", f"{3:016x}")  # same trace, other span
    assert trace_ids(_span(5, 2)) == (f"{5:032x}", f"{2:016x}")  # same span id, other trace
    assert trace_ids(INVALID_SPAN) == (None, None)


class Color(StrEnum):
    RED = "red"


class Level(IntEnum):
    HIGH = 3


def test_flatten_keeps_primitives_and_renders_the_rest_whatever_the_prefix() -> None:
    data = {"a": 1, "b": {"c": 2}, "c": None, "d": Color.RED, "e": Level.HIGH, 7: [1, "x"]}
    assert flatten("p.", data, {}) == {
        "p.a": 1,
        "p.b": '{"c":2}',
        "p.d": Color.RED,
        "p.e": Level.HIGH,
        "p.7": '[1,"x"]',
    }
    # the same keys under another prefix: the remembered names are per prefix
    assert flatten("q.", {"a": 1.5, "b": True}, {"kept": 0}) == {"kept": 0, "q.a": 1.5, "q.b": True}
