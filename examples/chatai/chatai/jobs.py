"""Background jobs: a Redis list (an in-process queue when there is no Redis) and their handlers.

The API enqueues inside ``propagation.producing(...)``, which puts the trace
context into the job; the worker handles it inside ``propagation.consuming(...)``,
so the upload request, the enqueue and the processing are one trace.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
import uuid
from typing import Any, Protocol

from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import func, select

from chatai import ai
from chatai.db import Document, Handoff, User, sessions
from chatai_otel import (
    BusinessEvent,
    ErrorCategory,
    ErrorSeverity,
    EventType,
    events,
    get_logger,
    track,
    track_error,
)
from chatai_otel.integrations.jobs import consuming, producing

log = get_logger("chatai.jobs")
CHUNK_CHARS = 800


class JobQueue(Protocol):
    name: str
    system: str  # messaging.system on the spans

    async def put(self, job: dict[str, Any]) -> None: ...
    async def get(self, timeout: float) -> dict[str, Any] | None: ...
    async def close(self) -> None: ...


class RedisQueue:
    """LPUSH to enqueue, BRPOP to take: first in, first out; jobs survive a worker restart."""

    system = "redis"

    def __init__(self, url: str, name: str) -> None:
        import redis.asyncio as aioredis

        self.name = name
        self.client = aioredis.Redis.from_url(url)

    async def put(self, job: dict[str, Any]) -> None:
        await self.client.lpush(self.name, json.dumps(job))

    async def get(self, timeout: float) -> dict[str, Any] | None:
        # An idle worker polls once a second; without this, each poll would be a trace of its own.
        with suppress_instrumentation():
            item = await self.client.brpop([self.name], timeout=timeout)
        if item is None:
            return None
        job: dict[str, Any] = json.loads(item[1])
        return job

    async def close(self) -> None:
        await self.client.aclose()


class MemoryQueue:
    """The same inside one process, for running without Redis (jobs die with the process)."""

    system = "in_process"

    def __init__(self, name: str, maxsize: int = 1000) -> None:
        self.name = name
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)

    async def put(self, job: dict[str, Any]) -> None:
        # The same JSON round trip as Redis: the job must survive serialisation either way.
        self._queue.put_nowait(json.loads(json.dumps(job)))

    async def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def close(self) -> None:
        return None


async def enqueue(queue: JobQueue, job_type: str, **payload: Any) -> str:
    """Put one job on the queue, carrying the current trace context; returns its id."""
    job: dict[str, Any] = {"id": uuid.uuid4().hex, "type": job_type, **payload}
    with producing(job, queue=queue.name, system=queue.system):
        await queue.put(job)
    return str(job["id"])


# --- handlers ---------------------------------------------------------------------------------


def _chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


@track("document_processing")
async def process_document(job: dict[str, Any]) -> None:
    """Extract, chunk and embed an uploaded document, then mark it processed."""
    async with sessions() as session:
        document = await session.get(Document, int(job["document_id"]))
        if document is None:
            log.warning("document.missing", document_id=job["document_id"])
            return
        try:
            content = document.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            document.status = "failed"
            await session.commit()
            track_error(
                exc,
                ErrorCategory.VALIDATION,
                ErrorSeverity.MEDIUM,
                {"document_id": document.id, "content_type": document.content_type},
            )
            return
        chunks = _chunks(content)
        tokens, cost = await ai.embed(chunks)
        document.status = "processed"
        document.chunks = len(chunks)
        document.tokens = tokens
        await session.commit()
    await events.log_event(
        BusinessEvent(
            event_type=EventType.DOCUMENT_PROCESSED,
            user_id=document.user_id,
            entity_id=document.id,
            entity_type="document",
            data={"chunks": len(chunks), "tokens": tokens, "size": document.size, "cost": cost},
        )
    )
    log.info("document.processed", document_id=document.id, chunks=len(chunks), tokens=tokens)


@track("operator_notification")
async def notify_operators(job: dict[str, Any]) -> None:
    """Tell the operators a dialog waits for them (stand-in: counted and logged, not sent)."""
    async with sessions() as session:
        handoff = await session.get(Handoff, int(job["handoff_id"]))
        if handoff is None:
            log.warning("handoff.missing", handoff_id=job["handoff_id"])
            return
        operators = await session.scalar(
            select(func.count()).select_from(User).where(User.role == "operator")
        )
        handoff.notified = int(operators or 0)
        await session.commit()
    log.info("handoff.operators_notified", handoff_id=handoff.id, operators=handoff.notified)


HANDLERS = {"process_document": process_document, "notify_operators": notify_operators}


async def handle(queue: JobQueue, job: dict[str, Any]) -> bool:
    """Run one job in its own CONSUMER span (child of the request that queued it); False if it failed."""
    try:
        with consuming(job, queue=queue.name, system=queue.system):
            handler = HANDLERS.get(str(job.get("type")))
            if handler is None:
                log.warning("job.unknown_type", job_type=job.get("type"), job_id=job.get("id"))
                return False
            try:
                await handler(job)
            except Exception as exc:
                # on_span=False: consuming() records the exception on its span itself
                track_error(
                    exc,
                    ErrorCategory.SYSTEM,
                    ErrorSeverity.HIGH,
                    {"job_type": job.get("type"), "job_id": job.get("id")},
                    on_span=False,
                )
                raise
        return True
    except Exception:
        return False  # recorded above; the worker goes on with the next job


async def run(queue: JobQueue, stop: asyncio.Event, heartbeat: pathlib.Path | None = None) -> int:
    """Take and handle jobs until ``stop`` is set; returns how many were handled."""
    handled = 0
    last_beat = 0.0
    while not stop.is_set():
        if heartbeat is not None and time.monotonic() - last_beat > 1.0:
            heartbeat.touch()
            last_beat = time.monotonic()
        try:
            job = await queue.get(timeout=1.0)
        except Exception as exc:  # Redis went away: say so, wait, try again
            log.warning("queue.unavailable", queue=queue.name, error=type(exc).__name__)
            await asyncio.sleep(1.0)
            continue
        if job is not None:
            await handle(queue, job)
            handled += 1
    return handled
