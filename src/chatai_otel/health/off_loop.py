"""Running synchronous clients (a sync engine, ``redis.Redis``, psutil) off the event loop: one
thread per check at most, so a hung client is joined by the next run instead of piling up
threads; error text bounded and scrubbed."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from chatai_otel.redaction import scrub_text

T = TypeVar("T")
_ERROR_TEXT_LIMIT = 300

# --- running synchronous clients off the event loop ----------------------------------------


class OneThread:
    """Runs a blocking call on a daemon thread, at most one at a time per owner.

    A call still running when the next run starts (a hung client outlived its
    timeout) is joined instead of a new thread being started, so a dead
    dependency holds one thread, not one per probe. Daemon threads never hold
    up interpreter exit; the default executor's threads would.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._pending: asyncio.Future[Any] | None = None

    async def run(self, func: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = loop.create_future()
            pending.add_done_callback(_retrieve_exception)
            self._pending = pending
            context = contextvars.copy_context()
            threading.Thread(
                target=_run_and_deliver,
                args=(context, func, loop, pending),
                daemon=True,
                name=f"chatai-health-{self._name}",
            ).start()
        result: T = await asyncio.shield(pending)
        return result


def _run_and_deliver(
    context: contextvars.Context,
    func: Callable[[], Any],
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
) -> None:
    try:
        result = context.run(func)
    except BaseException as exc:  # delivered to the awaiting check, never lost
        _deliver(loop, future, None, exc)
    else:
        _deliver(loop, future, result, None)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed while the call ran
        loop.call_soon_threadsafe(settle)


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark an exception as seen when every waiter already gave up (timed out)."""
    if not future.cancelled():
        future.exception()


def describe(exc: BaseException, redact: Callable[[str], str] = scrub_text) -> tuple[str, str]:
    """A short, scrubbed ``(error, error_type)`` for a failed check."""
    kind = type(exc).__name__
    try:
        message = redact(str(exc)).strip().splitlines()
    except Exception:  # an exception whose str() fails still makes a result
        message = []
    text = f"{kind}: {message[0]}" if message and message[0] else kind
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[: _ERROR_TEXT_LIMIT - 3] + "..."
    return text, kind
