"""Trace context inside job payloads, so that API -> queue -> worker is one trace.

An HTTP call carries its trace context in a ``traceparent`` header; a job in a
Redis list (or any queue of JSON documents) has no headers, so the context
travels inside the job, under one key (:data:`CARRIER_KEY`)::

    # the API, enqueueing
    job = {"type": "process_document", "document_id": 42}
    with propagation.producing(job, queue="chatai:jobs"):   # PRODUCER span, context -> job["otel"]
        await redis.lpush("chatai:jobs", json.dumps(job))

    # the worker, after ``import chatai_otel.setup``
    job = json.loads(raw)
    with propagation.consuming(job, queue="chatai:jobs"):   # CONSUMER span, child of the producer
        await handle(job)

The carrier is a flat ``{str: str}`` dict: the W3C ``traceparent``,
``tracestate`` and ``baggage`` from the global propagator, the request's log
context (``request_id``, ``user_id``, ``session_id``, ``dialog_id``) so the
worker's log lines carry the request id of the call that queued the job, and
``sent_at`` (Unix nanoseconds) from which the consumer span gets the time the
job waited. Spans follow the messaging semantic conventions
(``messaging.system``, ``messaging.destination.name``,
``messaging.operation.type``; names ``send <queue>`` / ``process <queue>``).

Telemetry never breaks the job: a missing, malformed or foreign carrier means a
new trace, never an exception; exceptions of the job itself pass through
unchanged (recorded, scrubbed, on the consumer span first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import ExitStack, contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chatai_otel import context as log_context
from chatai_otel.spans import error_type, record_exception

__all__ = ["CARRIER_KEY", "consuming", "extract", "inject", "job_log_context", "producing"]

CARRIER_KEY = "otel"
SENT_AT = "sent_at"
_W3C_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
_MAX_VALUE = 512  # characters kept per carrier value; a traceparent is 55

_tracer = trace.get_tracer("chatai_otel.propagation")


def inject(job: MutableMapping[str, Any], *, key: str = CARRIER_KEY) -> MutableMapping[str, Any]:
    """Write the current trace and log context into ``job[key]``; returns ``job``.

    Call it where the job is created, inside the span that should be its
    parent (:func:`producing` does both). Never raises.
    """
    try:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        for name in log_context.CONTEXT_KEYS:
            value = log_context.get(name)
            if value is not None:
                carrier[name] = str(value)[:_MAX_VALUE]
        carrier[SENT_AT] = str(time.time_ns())
        job[key] = carrier
    except Exception:
        pass
    return job


def _carrier(job: Mapping[str, Any] | None, key: str) -> dict[str, str]:
    """The job's carrier as ``{str: str}``, or empty when absent or malformed."""
    if not isinstance(job, Mapping):
        return {}
    raw = job.get(key)
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(name): value[:_MAX_VALUE]
        for name, value in raw.items()
        if isinstance(name, str) and isinstance(value, str)
    }


def extract(job: Mapping[str, Any] | None, *, key: str = CARRIER_KEY) -> Context:
    """The OpenTelemetry context the job was enqueued in (an empty one when it carries none)."""
    try:
        carrier = {k: v for k, v in _carrier(job, key).items() if k in _W3C_KEYS}
        return propagate.extract(carrier, context=Context())
    except Exception:
        return Context()


def job_log_context(job: Mapping[str, Any] | None, *, key: str = CARRIER_KEY) -> dict[str, str]:
    """The log context (request_id, user_id, ...) of the request that enqueued the job."""
    carrier = _carrier(job, key)
    return {name: carrier[name] for name in log_context.CONTEXT_KEYS if name in carrier}


def _messaging_attributes(
    queue: str, system: str, operation: str, job: Mapping[str, Any] | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
    }
    if isinstance(job, Mapping):
        job_id = job.get("id")
        if isinstance(job_id, str | int):
            attributes["messaging.message.id"] = str(job_id)
        job_type = job.get("type")
        if isinstance(job_type, str):
            attributes["chatai.job.type"] = job_type
    return attributes


def _fail(span: Span, exc: BaseException) -> None:
    try:
        record_exception(span, exc)
        span.set_attribute("error.type", error_type(exc))
        span.set_status(Status(StatusCode.ERROR, error_type(exc)))
    except Exception:
        pass


@contextmanager
def producing(
    job: MutableMapping[str, Any],
    *,
    queue: str,
    system: str = "redis",
    key: str = CARRIER_KEY,
) -> Iterator[MutableMapping[str, Any]]:
    """A PRODUCER span ``send <queue>`` with the job's context injected under it; yields the job.

    Put the actual enqueue (LPUSH, ``queue.put``) inside the block: its client
    span nests under this one, and a failure marks the span as failed.
    """
    span: Span = trace.INVALID_SPAN
    with ExitStack() as stack:
        try:
            span = _tracer.start_span(
                f"send {queue}",
                kind=SpanKind.PRODUCER,
                attributes=_messaging_attributes(queue, system, "send", job),
            )
            # not the SDK's record_exception: it would write the message unscrubbed
            stack.enter_context(
                trace.use_span(
                    span, end_on_exit=True, record_exception=False, set_status_on_exception=False
                )
            )
        except Exception:
            pass
        inject(job, key=key)
        try:
            yield job
        except BaseException as exc:
            _fail(span, exc)
            raise


@contextmanager
def consuming(
    job: Mapping[str, Any],
    *,
    queue: str,
    system: str = "redis",
    key: str = CARRIER_KEY,
) -> Iterator[Span]:
    """A CONSUMER span ``process <queue>``, child of the span that enqueued ``job``; yields it.

    Inside the block the request's log context (``request_id``, ``user_id``, ...)
    is bound, so the worker's log lines match the API's. An exception is
    recorded on the span (scrubbed), marks it failed and is re-raised as is.
    """
    span: Span = trace.INVALID_SPAN
    token: object = None
    try:
        attributes = _messaging_attributes(queue, system, "process", job)
        sent_at = _carrier(job, key).get(SENT_AT)
        if sent_at is not None and sent_at.isdigit():
            waited = (time.time_ns() - int(sent_at)) / 1e9
            if waited >= 0:
                attributes["chatai.job.wait_time"] = round(waited, 6)
        span = _tracer.start_span(
            f"process {queue}",
            context=extract(job, key=key),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
    except Exception:
        pass
    try:
        with log_context.bound(**job_log_context(job, key=key)):
            yield span
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        try:
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            span.end()
        except Exception:
            pass
