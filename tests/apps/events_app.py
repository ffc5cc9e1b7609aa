"""A worker that exercises events, errors, @track and the GenAI helpers, then exits (flushing).

``python events_app.py SCENARIO [args]``; prints one JSON line ``{"result": ...}`` with what the
calls returned, so the test can match it with what arrived at the receiver.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from enum import StrEnum
from typing import Any

from opentelemetry import trace

import chatai_otel.setup  # noqa: F401  (configures telemetry first)
from chatai_otel import (
    BusinessEvent,
    ErrorCategory,
    ErrorSeverity,
    EventType,
    context,
    events,
    genai,
    track,
    track_error,
)

tracer = trace.get_tracer("events_app")


class HostEvent(StrEnum):
    """A host app's own event types, as an Enum: counted under their own names."""

    INVOICE_SENT = "invoice_sent"


def scenario_all_types() -> Any:
    """Every EventType inside a request span (half async log_event, half emit), plus extras."""
    events.register_event_type("bot_started")
    ids: dict[str, str | None] = {}

    async def run() -> None:
        for number, event_type in enumerate(EventType):
            with tracer.start_as_current_span(f"request {event_type.value}"):
                context.bind(request_id=f"req-{number}")
                event = BusinessEvent(
                    event_type=event_type,
                    user_id=7,
                    entity_id=number,
                    entity_type="dialog",
                    data={"number": number, "password": "hunter2", "nested": {"a": [1, 2]}},
                )
                if number % 2:
                    ids[event_type.value] = await events.log_event(event)
                else:
                    ids[event_type.value] = events.emit(event)
                context.unbind("request_id")
        # outside any span: the event gets a short span of its own
        ids["no_span"] = events.emit(EventType.USER_LOGOUT, user_id=8)
        ids["host_enum"] = events.emit(HostEvent.INVOICE_SENT, user_id=9)
        ids["registered"] = events.emit("bot_started")
        ids["free_form"] = events.emit("some_free_form_type_123")
        ids["balance"] = events.emit(
            EventType.BALANCE_CHARGED,
            user_id=7,
            data={"amount": 12.5, "service_type": "ai_message"},
        )

    asyncio.run(run())
    return ids


def scenario_ai() -> Any:
    result: dict[str, Any] = {}

    async def run() -> None:
        # the seed's call, cost reported
        result["reported"] = await events.log_event(
            BusinessEvent(
                event_type=EventType.AI_RESPONSE_GENERATED,
                user_id=7,
                entity_id=42,
                entity_type="dialog",
                data={
                    "model_used": "gpt-4o-mini",
                    "input_tokens": 500,
                    "output_tokens": 312,
                    "cost": 0.0012,
                    "response_time_seconds": 1.5,
                },
            )
        )
        # no cost: computed with genai-prices
        result["computed"] = events.emit(
            EventType.AI_RESPONSE_GENERATED,
            data={
                "model_used": "claude-3-5-haiku-latest",
                "input_tokens": 1000,
                "output_tokens": 100,
            },
        )
        # the helper around a call, and an event emitted inside it (counted once)
        with tracer.start_as_current_span("request ai"):
            async with genai.ai_call("gpt-4o", provider="openai") as call:
                await asyncio.sleep(0.05)
                call.record(input_tokens=20, output_tokens=10, response_model="gpt-4o-2024-08-06")
                result["inside"] = events.emit(
                    EventType.AI_RESPONSE_GENERATED, data={"model_used": "gpt-4o", "cost": 0.5}
                )
        try:
            with genai.ai_call("gpt-4o-mini", provider="openai"):
                raise TimeoutError("upstream timed out")
        except TimeoutError:
            result["failed"] = True

    asyncio.run(run())
    return result


def scenario_track() -> Any:
    @track("sync_op")
    def add(a: int, b: int = 1) -> int:
        """Adds."""
        return a + b

    @track("async_op")
    async def slow(value: str) -> str:
        await asyncio.sleep(0.02)
        return value.upper()

    @track("gen_op")
    def numbers(count: int) -> Any:
        for number in range(count):
            with tracer.start_as_current_span("gen child"):
                pass
            yield number
        return "done"

    @track("agen_op")
    async def stream(count: int) -> Any:
        for number in range(count):
            await asyncio.sleep(0.001)
            with tracer.start_as_current_span("agen child"):
                pass
            yield number

    @track("failing_op")
    def failing() -> None:
        raise KeyError("missing")

    @track("cancelled_op")
    async def forever() -> None:
        await asyncio.sleep(60)

    @track
    def bare() -> str:
        return "bare"

    result: dict[str, Any] = {"sync": add(2, b=3), "bare": bare()}
    result["gen"] = list(numbers(3))
    try:
        failing()
    except KeyError as exc:
        result["failing"] = repr(exc)

    async def run() -> None:
        result["async"] = await slow("x")
        result["agen"] = [item async for item in stream(3)]
        task = asyncio.ensure_future(forever())
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            result["cancelled"] = True

    asyncio.run(run())
    return result


def scenario_errors() -> Any:
    result: dict[str, Any] = {}

    async def run() -> None:
        with tracer.start_as_current_span("request errors"):
            context.bind(request_id="req-err", user_id=77)
            for severity in ErrorSeverity:
                try:
                    raise ConnectionError(
                        f"connect postgresql://app:s3cret@db:5432/chatai failed ({severity.value})"
                    )
                except ConnectionError as exc:
                    report = await track_error(
                        exc,
                        ErrorCategory.DATABASE,
                        severity,
                        {"endpoint": "/dialogs", "api_key": "sk-live-123"},
                    )
                    result[severity.value] = report.event_id
            context.unbind("request_id", "user_id")
        report = track_error(ValueError("outside any span"), "validation", "low")
        result["outside"] = report.event_id
        # a caller that put the exception on its span itself (the web layer's handlers)
        with tracer.start_as_current_span("request handled"):
            report = track_error(LookupError("gone"), "business_logic", "high", on_span=False)
            result["handled"] = report.event_id

    asyncio.run(run())
    return result


def scenario_critical(count: str = "5") -> Any:
    """CRITICAL errors from one line (one fingerprint) and two others; returns the alert outcomes."""
    outcomes = []
    started = time.perf_counter()
    slowest = 0.0
    with tracer.start_as_current_span("request critical"):
        context.bind(request_id="req-crit", user_id=99)
        for _ in range(int(count)):
            try:
                raise RuntimeError("payment provider said 401 to Bearer abcdefghijklmnop")
            except RuntimeError as exc:
                before = time.perf_counter()
                outcomes.append(track_error(exc, ErrorCategory.EXTERNAL_SERVICE, "critical").alert)
                slowest = max(slowest, time.perf_counter() - before)
        try:
            raise OSError("disk full")
        except OSError as exc:
            outcomes.append(track_error(exc, ErrorCategory.SYSTEM, "critical").alert)
        try:
            raise OSError("out of memory")  # another line: another fingerprint
        except OSError as exc:
            outcomes.append(track_error(exc, ErrorCategory.SYSTEM, "critical").alert)
    return {
        "outcomes": outcomes,
        "slowest_call_s": slowest,
        "total_s": time.perf_counter() - started,
    }


def scenario_cardinality(count: str = "1000000") -> Any:
    """``count`` events with distinct user ids: 90 % balance charges with distinct service
    types, 10 % free-form event types, each distinct."""
    total_amount = 0
    for number in range(int(count)):
        if number % 10 == 0:
            events.emit(f"free-form-{number}", user_id=number)
            continue
        events.emit(
            EventType.BALANCE_CHARGED,
            user_id=number,
            data={"amount": 1, "service_type": f"service-{number}"},
        )
        total_amount += 1
    return {"total_amount": total_amount}


def scenario_fork() -> Any:
    """Three events in the parent, then a forked child emits one: its counter starts at zero."""
    import os

    import chatai_otel

    for _ in range(3):
        events.emit(EventType.MESSAGE_SENT, user_id=1)
    pid = os.fork()
    if pid == 0:
        events.emit(EventType.MESSAGE_SENT, user_id=2)
        telemetry = chatai_otel.current()
        assert telemetry is not None
        telemetry.shutdown(5.0)
        os._exit(0)
    _pid, status = os.waitpid(pid, 0)
    return {"child_status": status, "parent_pid": os.getpid(), "child_pid": pid}


SCENARIOS = {
    "all_types": scenario_all_types,
    "ai": scenario_ai,
    "track": scenario_track,
    "errors": scenario_errors,
    "critical": scenario_critical,
    "cardinality": scenario_cardinality,
    "fork": scenario_fork,
}

if __name__ == "__main__":
    name, *args = sys.argv[1:]
    outcome = SCENARIOS[name](*args)
    sys.stderr.write(json.dumps({"result": outcome}) + "\n")
