"""Exercise every part of chatai-otel that emits metrics, once, through the public API.

tests/test_metric_names.py runs this against a real OTLP receiver and compares the metric
names that arrive with the names used in the alert rules and the Grafana dashboard.
Each part reports on stdout as ``TOUR <part> ok`` or ``TOUR <part> missing <why>`` (only when
the module is not there yet: an ImportError). Any other failure crashes the tour, and the test.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

import chatai_otel

chatai_otel.configure()
tracer = trace.get_tracer("metrics_tour")


def part(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(function: Callable[[], Any]) -> Callable[[], Any]:
        PARTS.append((name, function))
        return function

    return register


PARTS: list[tuple[str, Callable[[], Any]]] = []


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@part("web")
async def tour_web() -> None:
    """Only the import: the HTTP metrics come from the real backend run beside the tour."""
    from chatai_otel import instrument_app  # noqa: F401


@part("events")
async def tour_events() -> None:
    from chatai_otel import BusinessEvent, EventType
    from chatai_otel.tracking import events

    events.emit(BusinessEvent(event_type=EventType.USER_LOGIN, user_id=7))
    await events.log_event(
        BusinessEvent(
            event_type=EventType.DIALOG_CREATED, user_id=7, entity_id=42, entity_type="dialog"
        )
    )


@part("ai")
async def tour_ai() -> None:
    from chatai_otel import BusinessEvent, EventType
    from chatai_otel.tracking import events

    with tracer.start_as_current_span("chat.reply"):
        await events.log_event(
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
                    "duration_seconds": 1.5,
                },
            )
        )


@part("errors")
async def tour_errors() -> None:
    from chatai_otel import ErrorCategory, ErrorSeverity, track_error

    try:
        raise TimeoutError("upstream timed out")
    except TimeoutError as exc:
        await maybe_await(
            track_error(exc, ErrorCategory.EXTERNAL_SERVICE, ErrorSeverity.HIGH, {"step": "tour"})
        )


@part("track")
async def tour_track() -> None:
    from chatai_otel import track

    @track("tour.sync")
    def compute() -> int:
        return 1

    @track("tour.async")
    async def fetch() -> int:
        return 2

    compute()
    await fetch()


@part("health")
async def tour_health() -> None:
    from chatai_otel.health.checker import HealthChecker

    checker = HealthChecker()
    checker.add("tour", lambda: True)
    checker.add_system()
    await maybe_await(checker.run())


@part("sdk_queues")
async def tour_sdk_queues() -> None:
    """Overflow the (tiny, see the test's environment) span and log queues: drops are counted."""
    from chatai_otel import get_logger

    log = get_logger("metrics_tour")
    for number in range(300):
        with tracer.start_as_current_span("burst") as span:
            span.set_attribute("n", number)
        log.info("burst", n=number)


async def main() -> None:
    for name, function in PARTS:
        try:
            await function()
        except ImportError as exc:
            print(f"TOUR {name} missing {exc}", flush=True)
        else:
            print(f"TOUR {name} ok", flush=True)
    await asyncio.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 1.5)  # a few metric exports
    telemetry = chatai_otel.current()
    assert telemetry is not None
    telemetry.shutdown(5.0)
    print("TOUR-DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
