"""The durable store's writer: :class:`DurableStore`, the :class:`RecordSink` that journals each record and writes batches.

``events.log_event`` and ``errors.track_error`` hand records to the
process-wide sink (``records.set_sink``); with ``CHATAI_OTEL_STORE_URL`` set,
``configure()`` installs a :class:`DurableStore` there. A record travels:

``put()`` -> local journal (``journal.py``, fsynced, group commit) -> writer
thread -> one transaction per batch (PostgreSQL: ``COPY`` of the journal's JSON
documents into a temporary table, then ``INSERT ... SELECT`` the columns out of
them ``... ON CONFLICT (event_id) DO NOTHING``; SQLite: ``executemany``) -> the
journal segments the commit covers are retired.

Why this shape: the seed opened a session and committed once per event, inside
the request, and lost the event whenever the database was down. Here the
request pays for one fsync shared with every concurrent emitter (audit events)
or nothing at all (the rest), the database sees a few large transactions a
second, and a database outage only grows the journal (within a disk budget)
until the writer can drain it, in order. Inserts are idempotent on the
record's UUIDv7 ``event_id``, so a crash between a commit and the journal
cleanup replays records harmlessly.

The tables live on :data:`metadata` so that a host application's Alembic
autogenerate sees them; ``chatai-otel store create-tables`` creates them for
standalone use.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import metrics
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from chatai_otel import metric_names as names
from chatai_otel import process_hooks
from chatai_otel.config import Settings
from chatai_otel.store.database import (
    Database,
    engine_for,
    is_record_error,
    open_database,
)
from chatai_otel.store.encoding import encode
from chatai_otel.store.journal import Journal, JournalClosedError, open_journals
from chatai_otel.store.records import Record
from chatai_otel.store.tables import TABLES

_log = logging.getLogger("chatai_otel.store")


# --- metrics -----------------------------------------------------------------------------

# The names and units live in metric_names.py with every other metric of the package.
ATTR_TABLE = names.ATTR_STORE_TABLE
ATTR_DROP_REASON = names.ATTR_STORE_DROP_REASON
ATTR_RECORD_KIND = names.ATTR_STORE_RECORD_KIND


class StoreClosedError(RuntimeError):
    """The store is shut down (or never started) and cannot make a record durable."""


# --- the store ---------------------------------------------------------------------------


def _segment_bytes(budget: int) -> int:
    """Segments of 1/16 of the budget, between 64 KiB and 16 MiB: several fit, rolls stay rare."""
    return max(64 << 10, min(16 << 20, budget // 16))


class DurableStore:
    """A :class:`~chatai_otel.store.records.RecordSink` that keeps every record until the database has it.

    ``put(audit_record)`` returns once the record is fsynced in the journal;
    other records are queued (journaled too unless ``durability="audit"``).
    One writer thread moves them to the database in batches. ``flush()`` waits
    until everything accepted so far is committed; ``close()`` does that within
    a deadline and leaves the rest in the journal for the next start.
    """

    def __init__(
        self,
        url: str,
        *,
        journal_dir: str | Path,
        schema: str | None = None,
        disk_budget: int = 1 << 30,
        durability: str = "all",
        batch_size: int = 1000,
        flush_interval: float = 0.1,
        queue_size: int = 10_000,
        create_tables: bool = False,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if durability not in ("all", "audit"):
            raise ValueError(f"durability must be 'all' or 'audit', not {durability!r}")
        self.url = url
        self.schema = schema
        self.journal_dir = Path(journal_dir)
        self.disk_budget = disk_budget
        self.journal_all = durability == "all"
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self._create_tables = create_tables
        self._segment_bytes = _segment_bytes(disk_budget)
        self._meter_provider = meter_provider
        self._instruments_ready = False
        self._pid = 0
        self.dropped: dict[str, int] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Event()  # something new is durable or queued
        self._urgent = threading.Event()  # a full batch is waiting, or flush()/close() asked
        self._stop = threading.Event()
        self._journal: Journal | None = None
        self._orphans: list[Journal] = []
        self._memory: collections.deque[bytes] = collections.deque()
        self._memory_accepted = 0
        self._memory_done = 0
        self._writer: threading.Thread | None = None
        self._db: Database | None = None
        self._started = False
        self._closed = False
        self._stopping = False
        self._deadline = float("inf")
        self._failing_since: float | None = None
        self._failures_in_outage = 0

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> DurableStore:
        """Claim a journal slot, adopt orphaned ones, start the commit and writer threads."""
        with self._lock:
            if self._started:
                return self
            engine = engine_for(self.url)
            self._db = open_database(engine, self.schema, self._create_tables)
            journal, orphans = open_journals(
                self.journal_dir, segment_bytes=self._segment_bytes, on_durable=self._on_durable
            )
            self._journal = journal.start()
            self._orphans = orphans
            self._pid = os.getpid()
            self._writer = threading.Thread(
                target=self._run_writer, name="chatai-otel-store-writer", daemon=True
            )
            self._started = True
            self._writer.start()
        self._setup_instruments()
        if orphans or journal.leftover:
            _log.info(
                "chatai-otel: replaying the event journal left in %s",
                ", ".join(str(j.slot) for j in ([journal] if journal.leftover else []) + orphans),
            )
        _register_fork_handler(self)
        return self

    def _after_fork_in_child(self) -> None:
        """Threads do not survive fork(): forget the parent's state; start again on first use."""
        for journal in [self._journal, *self._orphans]:
            if journal is not None:
                journal.abandon_after_fork()
        self._reset_state()

    def _running(self) -> Journal:
        journal = self._journal
        if self._closed:
            raise StoreClosedError("the event store is closed")
        if journal is None or not self._started:
            self.start()
            journal = self._journal
            assert journal is not None
        return journal

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued within ``timeout`` seconds; True when nothing was left behind.

        Whatever is journaled but not yet in the database stays in the journal
        and is written at the next start.
        """
        end = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            if self._closed or not self._started:
                self._closed = True
                return True
            self._closed = True
        journal = self._journal
        assert journal is not None
        journal.close(max(0.0, end - time.monotonic()))
        with self._lock:
            self._stopping = True
            # The writer stops a little before the caller's deadline, so that close() can
            # still see it finish and release the journal.
            self._deadline = end - min(0.25, max(timeout, 0.0) / 4)
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        writer = self._writer
        if writer is not None:
            writer.join(max(0.0, end - time.monotonic()))
        finished = writer is None or not writer.is_alive()
        drained = finished and journal.drained and not self._orphans and not self._memory
        lost = len(self._memory)
        if lost and finished:
            self._count_drop("closed", "event", lost)
        if finished:
            for orphan in self._orphans:
                orphan.release()
            if drained:
                journal.retire_all()
            journal.release()
            if self._db is not None:
                self._db.close()
        return drained

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything accepted so far (and any replayed leftover) is in the database."""
        journal = self._journal
        if journal is None:
            return True
        end = time.monotonic() + timeout
        with self._lock:
            target = journal.appended
            memory_target = self._memory_accepted
        self._urgent.set()
        self._wake.set()
        with self._progress:
            while True:
                if (
                    journal.committed + journal.failed >= target
                    and self._memory_done >= memory_target
                    and not self._orphans
                    and not journal.leftover
                ):
                    return True
                left = end - time.monotonic()
                if left <= 0 or (self._writer is not None and not self._writer.is_alive()):
                    return False
                self._progress.wait(min(left, 0.05))

    # --- the sink -----------------------------------------------------------------------

    async def put(self, record: Record) -> None:
        """Hand over a record; for ``record.audit`` return once it is fsynced in the journal.

        An audit record is never dropped: while the journal is over its disk
        budget this waits (the emitter is slowed) until the writer frees space.
        """
        journal = self._running()
        if record.audit:
            payload = encode(record)
            # A record larger than an emptied journal could ever hold would wait forever:
            # it goes over the budget instead (an audit record is never dropped).
            fits_ever = len(payload) <= self.disk_budget - 3 * self._segment_bytes
            while fits_ever and self._headroom(journal) < len(payload):
                if self._closed:
                    raise StoreClosedError("the event store is closed")
                await asyncio.sleep(0.01)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            try:
                journal.append(payload, waiter)
            except JournalClosedError:
                raise StoreClosedError("the event store is closed") from None
            await waiter
            return
        self._accept(journal, record)

    def put_nowait(self, record: Record) -> bool:
        """Queue a record without waiting; False when it was dropped (and counted)."""
        try:
            journal = self._running()
            return self._accept(journal, record)
        except StoreClosedError:
            self._count_drop("closed", record.kind)
            return False
        except Exception:
            _log.warning("chatai-otel: the event store refused a record", exc_info=True)
            self._count_drop("journal_error", record.kind)
            return False

    def _accept(self, journal: Journal, record: Record) -> bool:
        """The non-waiting path: journaled (default) or best-effort in memory, both bounded."""
        if record.audit or self.journal_all:
            if journal.pending >= self.queue_size:
                self._count_drop("queue_full", record.kind)
                return False
            payload = encode(record)
            if not record.audit and self._headroom(journal) < len(payload):
                self._count_drop("over_budget", record.kind)
                return False
            try:
                journal.append(payload)
            except JournalClosedError:
                self._count_drop("closed", record.kind)
                return False
            return True
        if len(self._memory) >= self.queue_size:
            self._count_drop("queue_full", record.kind)
            return False
        payload = encode(record)
        with self._lock:
            self._memory.append(payload)
            self._memory_accepted += 1
        self._wake.set()
        return True

    def _headroom(self, journal: Journal) -> int:
        """Bytes of records the journal may still take without its files outgrowing the budget.

        Room is counted in whole segments (files are preallocated), less one
        segment kept in reserve for the end of a segment a frame does not fit.
        """
        used = journal.disk_bytes + sum(o.disk_bytes for o in self._orphans)
        room = max(0, self.disk_budget - self._segment_bytes - used)
        room -= room % self._segment_bytes
        return room + journal.reusable_bytes()

    def _on_durable(self) -> None:
        """Called by the journal's commit thread after each fsync."""
        self._wake.set()
        journal = self._journal
        if journal is not None and journal.durable - journal.committed >= self.batch_size:
            self._urgent.set()

    # --- the writer thread ----------------------------------------------------------------

    def _run_writer(self) -> None:
        # The store's own statements are not the application's work: no spans for them
        # (and no span per batch competing with the app's for the exporter's queue).
        with suppress_instrumentation():
            self._write_loop()

    def _write_loop(self) -> None:
        journal = self._journal
        assert journal is not None
        while True:
            self._wake.clear()
            source, items, from_memory = self._collect(journal)
            if items:
                if not self._write(items):
                    # The shutdown deadline passed: the journal keeps its records for the
                    # next start; best-effort ones in this batch are lost.
                    if from_memory:
                        self._count_drop("closed", "event", from_memory)
                    return
                if source is not None:
                    source.commit()
                with self._progress:
                    self._memory_done += from_memory
                    self._progress.notify_all()
                # Under sustained load the writer never idles: keep a spare segment ready
                # here, or the commit thread would zero-fill one while producers wait.
                self._idle_work(journal)
                if len(items) >= self.batch_size or self._stopping:
                    continue
                # A small batch: give producers a moment to fill the next one.
                self._urgent.wait(self.flush_interval)
                self._urgent.clear()
                continue
            if self._stopping:
                return
            self._idle_work(journal)
            self._wake.wait(0.5)

    def _collect(self, journal: Journal) -> tuple[Journal | None, list[bytes], int]:
        """The next batch: orphaned slots first, then this process's journal and memory queue."""
        while self._orphans:
            orphan = self._orphans[0]
            payloads = orphan.read(self.batch_size)
            if payloads:
                return orphan, payloads, 0
            orphan.commit()
            if orphan.drained:
                orphan.remove_spares()
                orphan.release()
                with self._progress:
                    self._orphans.pop(0)
                    self._progress.notify_all()
            else:
                break
        payloads = journal.read(self.batch_size)
        items = list(payloads)
        from_memory = 0
        while len(items) < self.batch_size and self._memory:
            items.append(self._memory.popleft())
            from_memory += 1
        if not payloads:
            journal.commit()  # retire segments the reader has passed (a leftover may hold nothing)
        return (journal if payloads else None), items, from_memory

    def _idle_work(self, journal: Journal) -> None:
        """Off the latency path: a zero-filled spare for the commit thread's next roll."""
        try:
            journal.prepare_spare(self.disk_budget)
        except OSError:
            _log.warning("chatai-otel: could not prepare a journal segment", exc_info=True)

    def _write(self, items: list[bytes]) -> bool:
        """Insert items in order, in as few transactions as possible; False: deadline passed.

        A failure caused by the database (down, restarting, a missing table) is
        retried with backoff, the same batch in the same order. A failure
        caused by a record (a value the column refuses) splits the batch until
        the record is alone, then sets it aside in ``rejected.jsonl``.
        """
        parts: collections.deque[list[bytes]] = collections.deque([items])
        backoff = 0.05
        while parts:
            part = parts.popleft()
            try:
                self._insert(part)
                self._recovered()
                backoff = 0.05
            except Exception as exc:
                if is_record_error(exc):
                    self._reset_db()
                    if len(part) == 1:
                        self._reject(part[0], exc)
                    else:
                        half = len(part) // 2
                        parts.appendleft(part[half:])
                        parts.appendleft(part[:half])
                    continue
                self._failed(exc)
                parts.appendleft(part)
                if self._stopping and time.monotonic() >= self._deadline:
                    return False
                wait = backoff
                if self._stopping:
                    wait = min(wait, max(0.0, self._deadline - time.monotonic()))
                    time.sleep(wait)
                else:
                    self._stop.wait(wait)  # close() cuts the wait short
                backoff = min(backoff * 2, 2.0)
        return True

    def _insert(self, payloads: list[bytes]) -> None:
        db = self._db
        assert db is not None
        started = time.perf_counter()
        try:
            written = db.write(payloads)
        except BaseException:
            self._reset_db()
            raise
        if self._instruments_ready:
            self._write_duration.record(time.perf_counter() - started)
            for kind, count in written.items():
                if count:
                    self._rows_written.add(count, {ATTR_TABLE: TABLES[kind].name})

    def _reset_db(self) -> None:
        if self._db is not None:
            self._db.reset()

    def _failed(self, exc: BaseException) -> None:
        if self._instruments_ready:
            self._write_failures.add(1, {names.ATTR_ERROR_TYPE: type(exc).__name__})
        now = time.monotonic()
        self._failures_in_outage += 1
        if self._failing_since is None:
            self._failing_since = now
            _log.warning(
                "chatai-otel: the event store cannot write to the database (%s: %s); "
                "records wait in the journal and will be written when it is back",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            _log.warning(
                "chatai-otel: the event store writes again after %.1fs and %d failed attempts",
                time.monotonic() - self._failing_since,
                self._failures_in_outage,
            )
            self._failing_since = None
            self._failures_in_outage = 0

    def _reject(self, payload: bytes, exc: BaseException) -> None:
        """Set a record the database refuses aside (it would block everything behind it)."""
        try:
            doc = orjson.loads(payload)
            kind = str(doc.get("kind", "event")) if isinstance(doc, dict) else "event"
        except orjson.JSONDecodeError:
            kind = "event"
        journal = self._journal
        _log.error(
            "chatai-otel: the database refused a %s record; it is kept in rejected.jsonl (%s: %s)",
            kind,
            type(exc).__name__,
            exc,
        )
        if journal is not None:
            line = orjson.dumps(
                {
                    "error": f"{type(exc).__name__}: {exc}",
                    "record": payload.decode(errors="replace"),
                }
            )
            try:
                with open(journal.slot / "rejected.jsonl", "ab") as file:
                    file.write(line + b"\n")
                    file.flush()
                    os.fsync(file.fileno())
            except OSError:
                _log.exception("chatai-otel: could not keep the rejected record")
        self._count_drop("rejected", str(kind))

    # --- metrics ------------------------------------------------------------------------

    def _setup_instruments(self) -> None:
        if self._instruments_ready:
            return
        provider = self._meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("chatai_otel.store")
        self._rows_written = meter.create_counter(
            names.STORE_ROWS_WRITTEN,
            unit=names.STORE_ROWS_WRITTEN_UNIT,
            description="Rows the event store inserted",
        )
        self._write_failures = meter.create_counter(
            names.STORE_WRITE_FAILURES,
            unit=names.STORE_WRITE_FAILURES_UNIT,
            description="Failed batch transactions of the event store (each retried)",
        )
        self._dropped = meter.create_counter(
            names.STORE_RECORDS_DROPPED,
            unit=names.STORE_RECORDS_DROPPED_UNIT,
            description="Records the event store did not keep, by reason",
        )
        self._write_duration = meter.create_histogram(
            names.STORE_WRITE_DURATION,
            unit=names.STORE_WRITE_DURATION_UNIT,
            description="Duration of one batch transaction of the event store",
        )
        meter.create_observable_gauge(
            names.STORE_QUEUE_SIZE,
            callbacks=[self._observe_queue],
            unit=names.STORE_QUEUE_SIZE_UNIT,
            description="Records accepted by the event store and not yet in the database",
        )
        meter.create_observable_gauge(
            names.STORE_JOURNAL_SIZE,
            callbacks=[self._observe_journal],
            unit=names.STORE_JOURNAL_SIZE_UNIT,
            description="Bytes of the event store's journal files on disk",
        )
        self._instruments_ready = True

    def _observe_queue(self, _options: CallbackOptions) -> Iterable[Observation]:
        journal = self._journal
        depth = len(self._memory)
        if journal is not None:
            depth += max(0, journal.appended - journal.committed - journal.failed)
        return [Observation(depth)]

    def _observe_journal(self, _options: CallbackOptions) -> Iterable[Observation]:
        journal = self._journal
        size = journal.disk_bytes if journal is not None else 0
        size += sum(o.disk_bytes for o in self._orphans)
        return [Observation(size)]

    def _count_drop(self, reason: str, kind: str, count: int = 1) -> None:
        if self._instruments_ready:
            self._dropped.add(count, {ATTR_DROP_REASON: reason, ATTR_RECORD_KIND: kind})
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the command line."""
        journal = self._journal
        return {
            "appended": journal.appended if journal else 0,
            "durable": journal.durable if journal else 0,
            "committed": journal.committed if journal else 0,
            "journal_bytes": journal.disk_bytes if journal else 0,
            "orphans": len(self._orphans),
            "memory": len(self._memory),
            "dropped": dict(self.dropped),
        }


# --- fork and installation ---------------------------------------------------------------

_fork_stores: weakref.WeakSet[DurableStore] = weakref.WeakSet()
_fork_hook_installed = False


def _register_fork_handler(store: DurableStore) -> None:
    global _fork_hook_installed
    _fork_stores.add(store)
    if not _fork_hook_installed:
        process_hooks.on_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def _after_fork_in_child() -> None:
    for store in list(_fork_stores):
        try:
            store._after_fork_in_child()
        except Exception:
            pass


def install(
    settings: Settings,
    add_shutdown_callback: Callable[[Callable[[float], object]], None] | None = None,
) -> DurableStore | None:
    """Start the store of ``settings`` and make it the process-wide sink; None without a URL."""
    from chatai_otel.store.records import set_sink

    if not settings.store.url:
        return None
    store = DurableStore(
        settings.store.url,
        journal_dir=settings.store.journal_dir,
        schema=settings.store.schema,
        disk_budget=settings.store.disk_budget,
        durability=settings.store.durability,
        batch_size=settings.store.batch_size,
        flush_interval=settings.store.flush_interval,
        queue_size=settings.store.queue_size,
        create_tables=settings.store.create_tables,
    )
    store.start()
    set_sink(store)
    if add_shutdown_callback is not None:
        add_shutdown_callback(store.close)
    return store
