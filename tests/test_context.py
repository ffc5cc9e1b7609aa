"""Request context: survives await, isolated between tasks and threads, restored after a block."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider

from chatai_otel import context


@pytest.fixture(autouse=True)
def _clean_context():
    context.clear()
    yield
    context.clear()


def test_bind_get_unbind():
    context.bind(request_id="r1", user_id=7)
    assert context.get("request_id") == "r1"
    assert dict(context.current()) == {"request_id": "r1", "user_id": 7}
    context.unbind("request_id", "not-bound")
    assert context.get("request_id") is None
    assert context.get("request_id", "none") == "none"
    assert dict(context.current()) == {"user_id": 7}


def test_current_is_read_only():
    context.bind(a=1)
    with pytest.raises(TypeError):
        context.current()["a"] = 2  # type: ignore[index]


def test_bound_block_restores_what_was_there():
    context.bind(request_id="outer", dialog_id=1)
    with context.bound(request_id="inner", session_id="s") as fields:
        assert fields["request_id"] == "inner"
        context.bind(dialog_id=2)  # re-bound inside the block
        assert context.get("dialog_id") == 2
    assert dict(context.current()) == {"request_id": "outer", "dialog_id": 1}


def test_bound_restores_after_an_exception():
    with pytest.raises(RuntimeError), context.bound(request_id="x"):
        raise RuntimeError("boom")
    assert context.get("request_id") is None


def test_decorator_binds_for_each_call_sync_and_async():
    @context.bound(dialog_id=9)
    def sync_handler(value):
        return context.get("dialog_id"), value

    @context.bound(dialog_id=10)
    async def async_handler():
        await asyncio.sleep(0)
        return context.get("dialog_id")

    assert sync_handler("v") == (9, "v")
    assert context.get("dialog_id") is None
    assert asyncio.run(async_handler()) == 10
    assert context.get("dialog_id") is None
    assert sync_handler.__name__ == "sync_handler"


def test_decorator_refuses_generators():
    with pytest.raises(TypeError):

        @context.bound(x=1)
        def gen():
            yield 1


async def test_200_concurrent_tasks_never_mix_their_request_ids():
    seen: dict[int, list[object]] = {}

    async def request(number: int) -> None:
        context.bind(request_id=f"req-{number}", user_id=number)
        observed = []
        for _ in range(5):
            await asyncio.sleep(random.random() / 1000)
            observed.append((context.get("request_id"), context.get("user_id")))
        with context.bound(dialog_id=number):
            await asyncio.sleep(0)
            observed.append(context.get("dialog_id"))
        observed.append(context.get("dialog_id"))
        seen[number] = observed

    await asyncio.gather(*(request(n) for n in range(200)))
    assert len(seen) == 200
    for number, observed in seen.items():
        assert observed[:5] == [(f"req-{number}", number)] * 5
        assert observed[5] == number
        assert observed[6] is None
    assert context.get("request_id") is None  # nothing leaked into the parent


def test_threads_start_empty_and_do_not_leak():
    context.bind(request_id="main")
    results: dict[str, object] = {}

    def worker(name: str) -> None:
        results[f"{name}-start"] = context.get("request_id")
        context.bind(request_id=name)
        results[name] = context.get("request_id")

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[f"t{i}-start"] is None for i in range(5))
    assert all(results[f"t{i}"] == f"t{i}" for i in range(5))
    assert context.get("request_id") == "main"


def test_user_id_is_set_on_the_active_span():
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("a") as span:
        context.bind(user_id=42)
        assert span.attributes["user.id"] == "42"
    with tracer.start_as_current_span("b") as span, context.bound(user_id=43):
        assert span.attributes["user.id"] == "43"
