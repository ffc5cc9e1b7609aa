"""What the span and log export paths share: the bounded queue and its worker thread, and
the processors' self-metrics (the senders of the encoded requests: :mod:`.senders`).

Why one piece: both paths must behave the same way in the ways users depend on — the
calling thread never waits for the network, the queue is bounded and every drop is
counted, a forked child gets a fresh queue and worker, ``force_flush`` and ``shutdown``
keep their deadlines. :mod:`chatai_otel.export.spans` and :mod:`chatai_otel.export.logs`
add only their record types and encoders.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Generic, Self, TypeVar

from opentelemetry.sdk.resources import Resource

from chatai_otel import process_hooks
from chatai_otel._sdk_compat import (
    sdk_processor_metric,
)
from chatai_otel.export.senders import EncodedExporter

__all__ = [
    "BatchExportQueue",
]

# Diagnostics of the export path: the log pipeline prints these but never exports them
# (exporting "export failed" over the failing export would loop).
diagnostics = logging.getLogger("chatai_otel.export")

Item = TypeVar("Item")


# --- the queue -------------------------------------------------------------------------


class BatchExportQueue(Generic[Item]):
    """A bounded deque drained by one worker thread that encodes and sends batches.

    Woken because a batch is full, the worker sends full batches only, so a burst leaves in
    few large requests; the schedule delay sends the rest. Subclasses set the class
    attributes and give the encoder (:meth:`_new_encoder`).
    """

    signal = ""  # "span" / "log": names the self-metrics (OTel semantic conventions)
    noun = "items"  # for diagnostics
    unit = "{item}"
    default_schedule_delay = 5.0
    _attached: ClassVar[weakref.WeakKeyDictionary[Any, Any]]  # provider -> processor, per class
    resource: Resource | None  # the provider's, on every export

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._attached = weakref.WeakKeyDictionary()

    @classmethod
    def attached_to(cls, provider: object) -> Self | None:
        """The processor of this class attached to ``provider`` (None if there is none)."""
        try:
            found: Self | None = cls._attached.get(provider)
            return found
        except TypeError:  # None, or not weak-referenceable: not an SDK provider
            return None

    def attach(self, provider: Any) -> None:
        """Add to ``provider`` (its resource goes on every export) and make it findable."""
        self.resource = provider.resource
        self._add_to(provider)
        type(self)._attached[provider] = self

    def _add_to(self, provider: Any) -> None:
        """Register with the SDK provider (``add_span_processor`` and the like)."""
        raise NotImplementedError

    def __init__(
        self,
        exporter: EncodedExporter,
        *,
        schedule_delay: float | None = None,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        export_timeout: float = 30.0,
        meter_provider: Any = None,
    ) -> None:
        self._exporter = exporter
        self._encode = self._new_encoder()
        self._delay = self.default_schedule_delay if schedule_delay is None else schedule_delay
        self._max_queue = max_queue_size
        self._max_batch = max_export_batch_size
        self._export_timeout = export_timeout
        self.resource = None
        self._queue: deque[Item] = deque()
        self._wake = threading.Event()
        self._waking = False
        self._export_lock = threading.Lock()
        self._shutdown = False
        self.dropped = 0
        self.exported = 0
        self.failed = 0
        self._last_drop_report = 0.0
        self._metrics = _SelfMetrics(meter_provider, self)
        self._worker = self._start_worker()
        process_hooks.on_fork_of(self, after_in_child="_after_fork")

    def _new_encoder(self) -> Callable[[Iterable[Item], Resource | None], bytes]:
        """``encode(batch, resource) -> bytes``: one serialized export request."""
        raise NotImplementedError

    # --- calling thread --------------------------------------------------------------

    def submit(self, item: Item) -> None:
        """Queue one item; drop (and count) it when the queue is full. Never blocks."""
        queue = self._queue
        if len(queue) >= self._max_queue or self._shutdown:
            self._drop("already_shutdown" if self._shutdown else "queue_full")
            return
        queue.append(item)
        if len(queue) >= self._max_batch and not self._waking:
            self._waking = True
            self._wake.set()

    def _drop(self, reason: str = "queue_full") -> None:
        self.dropped += 1
        self._metrics.dropped(1, reason)
        if reason != "queue_full":
            return
        now = time.monotonic()
        if now - self._last_drop_report >= 10.0:
            self._last_drop_report = now
            diagnostics.warning(
                "chatai-otel: %s export queue full (%d %s); %d %s dropped so far",
                self.signal,
                self._max_queue,
                self.noun,
                self.dropped,
                self.noun,
            )

    # --- worker ----------------------------------------------------------------------

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(
            target=self._run, name=f"chatai-otel-{self.signal}-export", daemon=True
        )
        worker.start()
        return worker

    def _run(self) -> None:
        while not self._shutdown:
            woken = self._wake.wait(self._delay)
            self._wake.clear()
            self._waking = False
            if self._shutdown:
                break
            # Woken by a full batch: send full batches only (under load, what arrives while
            # one is sent would otherwise go out in many small requests); on the timer: all.
            self._export_queued(full_batches_only=woken)
        self._export_queued()

    def _export_queued(
        self, deadline: float | None = None, *, full_batches_only: bool = False
    ) -> bool:
        """Export what is queued now, batch by batch; False if the deadline passed first."""
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with self._export_lock, suppress_instrumentation():
            queue = self._queue
            minimum = self._max_batch if full_batches_only else 1
            while len(queue) >= minimum:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                count = min(len(queue), self._max_batch)
                batch = [queue.popleft() for _ in range(count)]
                self._export_batch(batch)
        return True

    def _draining(self) -> bool:
        """True while the queue is more than half full: then the worker keeps the GIL and
        drains (letting the producers run would only have them drop what they queue)."""
        return len(self._queue) > self._max_queue // 2

    def _export_batch(self, batch: list[Item]) -> None:
        try:
            payload = self._encode(_yielding_the_gil(batch, self._draining), self.resource)
            ok = self._exporter.export_encoded(payload, len(batch))
        except Exception:
            diagnostics.exception("chatai-otel: exporting %d %s failed", len(batch), self.noun)
            ok = False
        if ok:
            self.exported += len(batch)
            self._metrics.processed(len(batch))
        else:
            # lost after the exporter's retries: counted like a drop, so that a collector
            # that is down shows as data lost (error.type=export_failed), not as silence
            self.failed += len(batch)
            self._metrics.dropped(len(batch), "export_failed")

    def _after_fork(self) -> None:
        self._queue = deque()
        self._wake = threading.Event()
        self._waking = False
        self._export_lock = threading.Lock()
        self._worker = self._start_worker()

    # --- lifecycle -------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; False when the deadline passed first."""
        if self._shutdown:
            return not self._queue
        return self._export_queued(deadline=time.monotonic() + timeout_millis / 1000.0)

    def shutdown(self) -> None:
        """Export what is queued, stop the worker and the exporter."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._worker.join(self._export_timeout)
        try:
            self._exporter.shutdown()
        except Exception:
            pass

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def capacity(self) -> int:
        return self._max_queue


# Items encoded between two releases of the GIL: ~0.4 ms of span encoding (13.5 µs a span).
GIL_SLICE = 32
# Releases the GIL and the CPU, so that a thread waiting for either runs now. ``os.sched_yield``
# releases the GIL around the system call and lets the kernel run another thread of this core;
# ``time.sleep(0)`` only releases the GIL, and on a core shared with the request thread the
# worker often takes it back before that thread is scheduled (p99 on ``/ping`` with
# ``./dev bench web``'s one-core server, 2026-12-08: 15.1 ms without a release, 11.3 ms with
# ``sleep(0)``, 7.8 ms with ``sched_yield``; bare uvicorn 4.7 ms).
_let_others_run: Callable[[], None] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


def _yielding_the_gil(batch: list[Item], draining: Callable[[], bool]) -> Iterator[Item]:
    """``batch`` item by item, letting other threads run after every :data:`GIL_SLICE` items
    (unless ``draining()``: a queue about to overflow comes first).

    Why: encoding a full batch is several milliseconds of pure Python. Left alone, the
    worker keeps the GIL until the interpreter's switch interval (5 ms) forces it off, and
    a request thread that wants it waits that long, more than once per batch: the p99
    latency of the requests served meanwhile. With no thread waiting, a release costs one
    system call per slice.
    """
    for start in range(0, len(batch), GIL_SLICE):
        if start and not draining():
            _let_others_run()
        yield from batch[start : start + GIL_SLICE]


class _SelfMetrics:
    """The semantic-convention self-metrics of a batching processor (drops included):
    ``otel.sdk.processor.<signal>.processed`` and the queue's size and capacity.

    Counted in plain integers and reported at collection (asynchronous instruments):
    a synchronous ``Counter.add`` costs ~10-40 µs, and a full queue must make dropping
    a record cheaper than sending it, not dearer.
    """

    def __init__(self, meter_provider: Any, queue: BatchExportQueue[Any]) -> None:
        self._counts: dict[str | None, int] = {}  # error.type (None: processed fine) -> count
        self._lock = threading.Lock()  # drops come from any thread
        if meter_provider is None:
            return
        try:
            from opentelemetry.metrics import Observation

            signal = queue.signal
            meter = meter_provider.get_meter("chatai_otel")
            attributes = {
                "otel.component.type": f"batching_{signal}_processor",
                "otel.component.name": f"chatai_otel_{signal}_processor",
            }
            queue_ref = weakref.ref(queue)
            counts = self._counts

            def processed(_options: Any) -> Iterable[Any]:
                return [
                    Observation(
                        count,
                        attributes if reason is None else {**attributes, "error.type": reason},
                    )
                    for reason, count in list(counts.items())
                ]

            def observe(
                get: Callable[[BatchExportQueue[Any]], int],
            ) -> Callable[..., Iterable[Any]]:
                def callback(_options: Any) -> Iterable[Any]:
                    live = queue_ref()
                    return [] if live is None else [Observation(get(live), attributes)]

                return callback

            meter.create_observable_counter(
                sdk_processor_metric(signal, "PROCESSED"),
                callbacks=[processed],
                unit=queue.unit,
                description=f"The number of {queue.noun} for which the processing has finished,"
                " either successful or failed.",
            )
            meter.create_observable_up_down_counter(
                sdk_processor_metric(signal, "QUEUE_SIZE"),
                callbacks=[observe(lambda q: q.queued)],
                unit=queue.unit,
                description=f"The number of {queue.noun} in the queue of the {signal} processor.",
            )
            meter.create_observable_up_down_counter(
                sdk_processor_metric(signal, "QUEUE_CAPACITY"),
                callbacks=[observe(lambda q: q.capacity)],
                unit=queue.unit,
                description=f"The maximum number of {queue.noun} the queue can hold.",
            )
        except Exception:
            diagnostics.debug("chatai-otel: processor self-metrics unavailable", exc_info=True)

    def processed(self, count: int) -> None:
        with self._lock:
            self._counts[None] = self._counts.get(None, 0) + count

    def dropped(self, count: int, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + count
