"""@track: the caller sees the function unchanged; the receiver sees a span and a duration point."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from chatai_otel import metric_names as names
from chatai_otel import track
from chatai_otel.testing.receiver import ReceivedSpan
from support.events import last_points, run_scenario

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

ERROR = 2  # StatusCode.ERROR in OTLP


# --- what the caller sees (in process) ----------------------------------------------------


def test_sync_function_keeps_signature_docstring_and_result():
    def original(a: int, b: int = 1, *, c: str = "x") -> tuple[int, str]:
        """Adds and labels."""
        return a + b, c

    tracked = track("op")(original)
    assert tracked(2, b=3, c="y") == (5, "y")
    assert tracked.__name__ == "original" and tracked.__doc__ == "Adds and labels."
    assert inspect.signature(tracked) == inspect.signature(original)
    assert tracked.__wrapped__ is original  # type: ignore[attr-defined]
    assert not inspect.iscoroutinefunction(tracked)


def test_bare_decorator_uses_the_qualified_name():
    @track
    def bare() -> str:
        return "ok"

    assert bare() == "ok" and bare.__name__ == "bare"


async def test_async_function_stays_a_coroutine_function():
    async def original(value: str) -> str:
        """Shouts."""
        await asyncio.sleep(0)
        return value.upper()

    tracked = track("op")(original)
    assert inspect.iscoroutinefunction(tracked)
    assert inspect.signature(tracked) == inspect.signature(original)
    assert await tracked("x") == "X"


def test_the_same_exception_object_is_re_raised_with_its_traceback():
    error = ValueError("boom")

    @track("op")
    def failing() -> None:
        raise error

    with pytest.raises(ValueError) as caught:
        failing()
    assert caught.value is error
    frames = [frame.name for frame in caught.traceback]
    assert "failing" in frames


async def test_async_exception_and_cancellation_propagate_unchanged():
    error = KeyError("k")

    @track("op")
    async def failing() -> None:
        await asyncio.sleep(0)
        raise error

    with pytest.raises(KeyError) as caught:
        await failing()
    assert caught.value is error

    @track("op")
    async def forever() -> None:
        await asyncio.sleep(60)

    task = asyncio.ensure_future(forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_generator_send_throw_close_and_return_value():
    log: list[Any] = []

    def original(count: int):
        """Echoes."""
        total = 0
        try:
            for number in range(count):
                try:
                    received = yield number
                except ValueError as exc:
                    log.append(f"caught {exc}")
                    received = 100
                if received is not None:
                    total += received
            return total
        finally:
            log.append("finally")

    tracked = track("gen")(original)
    assert inspect.isgeneratorfunction(tracked)
    assert inspect.signature(tracked) == inspect.signature(original)
    assert tracked.__doc__ == "Echoes."

    gen = tracked(3)
    assert next(gen) == 0
    assert gen.send(5) == 1
    assert gen.throw(ValueError("x")) == 2
    with pytest.raises(StopIteration) as stop:
        gen.send(1)
    assert stop.value.value == 106
    assert log == ["caught x", "finally"]

    log.clear()
    early = tracked(10)
    assert next(early) == 0
    early.close()
    assert log == ["finally"]


async def test_async_generator_asend_athrow_aclose():
    log: list[Any] = []

    async def original(count: int):
        try:
            for number in range(count):
                try:
                    received = yield number
                except ValueError:
                    received = "thrown"
                log.append(received)
        finally:
            log.append("finally")

    tracked = track("agen")(original)
    assert inspect.isasyncgenfunction(tracked)
    assert inspect.signature(tracked) == inspect.signature(original)

    agen = tracked(3)
    assert await agen.__anext__() == 0
    assert await agen.asend("a") == 1
    assert await agen.athrow(ValueError("v")) == 2
    with pytest.raises(StopAsyncIteration):
        await agen.asend("b")
    assert log == ["a", "thrown", "b", "finally"]

    assert [item async for item in tracked(2)] == [0, 1]

    log.clear()
    early = tracked(10)
    assert await early.__anext__() == 0
    await early.aclose()
    assert log[-1] == "finally"

    error = RuntimeError("inside")

    @track("agen_fail")
    async def failing():
        yield 1
        raise error

    with pytest.raises(RuntimeError) as caught:
        async for _ in failing():
            pass
    assert caught.value is error


def test_methods_keep_working():
    class Service:
        factor = 3

        @track("service.scale")
        def scale(self, value: int) -> int:
            return value * self.factor

    assert Service().scale(2) == 6


# --- what the receiver sees (a real worker process) ---------------------------------------


def test_spans_and_duration_histogram_arrive(receiver):
    result, _stdout = run_scenario(receiver, "track")
    assert result == {
        "sync": 5,
        "bare": "bare",
        "gen": [0, 1, 2],
        "failing": "KeyError('missing')",
        "async": "X",
        "agen": [0, 1, 2],
        "cancelled": True,
    }
    operations = ["sync_op", "async_op", "gen_op", "agen_op", "failing_op", "cancelled_op"]
    spans = receiver.wait_for_spans(len(operations), lambda s: s.name in operations)
    by_name: dict[str, ReceivedSpan] = {s.name: s for s in spans}
    assert by_name["sync_op"].status_code == 0 and by_name["sync_op"].kind == 1
    assert by_name["async_op"].end_ns - by_name["async_op"].start_ns >= 15_000_000

    failing = by_name["failing_op"]
    assert failing.status_code == ERROR
    assert failing.attributes["error.type"] == "KeyError"
    exception = next(e for e in failing.events if e["name"] == "exception")
    assert exception["attributes"]["exception.type"] == "KeyError"
    assert "missing" in exception["attributes"]["exception.message"]
    assert "failing" in exception["attributes"]["exception.stacktrace"]

    cancelled = by_name["cancelled_op"]
    assert cancelled.status_code != ERROR
    assert cancelled.attributes["chatai.operation.status"] == "cancelled"

    # generator steps run with the span active: children inside the generator are its children
    for generator, child in (("gen_op", "gen child"), ("agen_op", "agen child")):
        children = [s for s in receiver.spans() if s.name == child]
        assert len(children) == 3
        assert {c.parent_span_id for c in children} == {by_name[generator].span_id}

    receiver.wait_for_metrics(1, lambda p: p.name == names.OPERATION_DURATION)
    latest = last_points(receiver, names.OPERATION_DURATION)
    by_operation = {dict(key)["operation"]: point for key, point in latest.items()}
    assert set(by_operation) >= {*operations, "scenario_track.<locals>.bare"}
    statuses = {
        dict(key)["operation"]: (dict(key)["status"], dict(key).get("error.type")) for key in latest
    }
    assert statuses["sync_op"] == ("ok", None)
    assert statuses["failing_op"] == ("error", "KeyError")
    assert statuses["cancelled_op"] == ("cancelled", None)
    point = by_operation["async_op"]
    assert point.unit == "s" and point.kind == "histogram" and point.count == 1
    assert point.explicit_bounds == names.OPERATION_DURATION_BUCKETS
    assert point.explicit_bounds[:4] == (0.001, 0.0025, 0.005, 0.01)  # sub-second buckets
    assert 0.015 <= point.sum < 1.0
