"""Events per second into PostgreSQL: the durable store against the seed's commit per event.

Arms, interleaved round by round, all into the real PostgreSQL at 127.0.0.1:5432
(database ``test``, a schema of their own, dropped at the end), each timed from
the first hand-over until the last row is committed:

* ``store: ordinary events, journal on``: ``put_nowait`` from one producer (when
  the bounded queue is full the producer waits 1 ms and retries: sustained load,
  not drops), every record fsynced in the journal (group commit), batches
  written with COPY + ``INSERT ... ON CONFLICT DO NOTHING``;
* ``store: audit events, 100 emitters``: 100 asyncio tasks each ``await put()``
  in a loop, so every event waits for its fsync; the latency of each ``put()``
  is recorded (the p99 goal is 5 ms); then, untimed for throughput, the same
  100 emitters at 100 events/s each, the pace of requests rather than a flood,
  once with the writer inserting into PostgreSQL (whose WAL and checkpoints
  share the machine's one disk with the journal) and once with the database
  unreachable (nothing but the journal writing to the disk); and, for the
  machine's floor, the same emitters against a stand-in that wakes them 0.3 ms
  after they ask (no journal, no database: what the event loop and the OS
  scheduler cost on this shared machine);
* ``store: ordinary events, best effort``: ``CHATAI_OTEL_STORE_DURABILITY=audit``,
  the journal skipped: what the journal costs;
* ``seed: session + add + commit per event``: the seed's
  ``_store_event_in_database``: a new SQLAlchemy ORM session, one ``add``, one
  ``commit``, close, per event (pooled engine). Fewer events for this arm.

Records are built before the clock starts (and frozen out of the GC's way, as
``CHATAI_OTEL_GC_TUNING`` does in an app): the figure is the store's, not the
record builder's. Tables are truncated between arms.

``./dev bench store [--events N] [--seed-events M] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import JSON, BigInteger, Column, DateTime, MetaData, String, create_engine
from sqlalchemy.orm import declarative_base, sessionmaker

from chatai_otel.store.database import create_tables
from chatai_otel.store.records import EventRecord, new_event_id
from chatai_otel.store.writer import DurableStore

DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
URL = "postgresql://postgres@127.0.0.1:5432/test"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/test"
EMITTERS = 100
PACED_EVENTS = 20_000  # 100 emitters x 200 events at 100/s each: 2 s a round
ARMS = (
    "store: ordinary events, journal on",
    "store: audit events, 100 emitters",
    "store: ordinary events, best effort",
    "seed: session + add + commit per event",
)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench store")
    parser.add_argument("--events", type=int, default=100_000, help="events per store arm")
    parser.add_argument("--seed-events", type=int, default=3_000, help="events for the seed arm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args([a for a in argv if a.startswith("--")] if argv else [])
    schema = f"bench_store_{uuid.uuid4().hex[:8]}"
    create_tables(URL, schema)
    seed = SeedWay(schema)
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    latencies: list[float] = []
    paced: list[float] = []
    journal_only: list[float] = []
    floor: list[float] = []
    load: list[float] = []
    try:
        for round_number in range(args.rounds):
            load.append(os.getloadavg()[0])
            order = list(ARMS) if round_number % 2 == 0 else list(reversed(ARMS))
            for arm in order:
                _truncate(schema)
                if arm.startswith("seed"):
                    rate = seed.run(args.seed_events)
                elif "audit" in arm:
                    rate, lat = asyncio.run(_audit(schema, args.events))
                    latencies.extend(lat)
                    # The same emitters at a request-like pace: 100 events/s each.
                    _truncate(schema)
                    _, lat = asyncio.run(_audit(schema, PACED_EVENTS, pause=0.01))
                    paced.extend(lat)
                    # And with nothing else writing to this disk: the database unreachable,
                    # only the journal (as when PostgreSQL is on another host).
                    _, lat = asyncio.run(_audit(schema, PACED_EVENTS, pause=0.01, url=UNREACHABLE))
                    journal_only.extend(lat)
                    floor.extend(asyncio.run(_floor(PACED_EVENTS)))
                else:
                    rate = _ordinary(
                        schema, args.events, durability="all" if "journal" in arm else "audit"
                    )
                results[arm].append(rate)
                print(f"round {round_number + 1} {arm}: {rate:,.0f} events/s", flush=True)
    finally:
        seed.engine.dispose()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    _print(results, latencies, paced, journal_only, floor, load, args)


def _truncate(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            f'TRUNCATE "{schema}".business_event_log, "{schema}".error_log, "{schema}".seed_event_log'
        )


def _records(count: int, audit: bool) -> list[EventRecord]:
    """The arm's input, built before the clock starts and frozen out of the GC's way.

    As ``CHATAI_OTEL_GC_TUNING`` does in an app after start-up (``gc.freeze()``): a full
    collection would otherwise walk 100 000 input records, 100 ms and more, mid-arm.
    """
    now = datetime.now(UTC)
    records = [
        EventRecord(
            event_id=new_event_id(),
            event_type="balance_topped_up" if audit else "ai_response_generated",
            timestamp=now,
            service_name="bench-store",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            request_id=f"req-{number}",
            user_id=number % 1000,
            entity_id=number,
            entity_type="dialog",
            data={
                "model_used": "gpt-4o-mini",
                "input_tokens": 500,
                "output_tokens": 312,
                "cost": 0.0012,
            },
            audit=audit,
        )
        for number in range(count)
    ]
    gc.collect()
    gc.freeze()
    return records


def _store(schema: str, journal: str, durability: str) -> DurableStore:
    return DurableStore(URL, journal_dir=journal, schema=schema, durability=durability).start()


def _ordinary(schema: str, count: int, durability: str) -> float:
    records = _records(count, audit=False)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as journal:
        store = _store(schema, journal, durability)
        _warm_up(store)
        started = time.perf_counter()
        for record in records:
            while not store.put_nowait(record):
                time.sleep(0.001)  # the bounded queue is full: wait, do not drop
        if not store.flush(300):
            raise SystemExit("bench store: the store did not flush within 300 s")
        elapsed = time.perf_counter() - started
        store.close(30)
    _check(schema, count + 1)
    return count / elapsed


async def _audit(
    schema: str, count: int, pause: float = 0.0, url: str = URL
) -> tuple[float, list[float]]:
    records = _records(count, audit=True)
    per_emitter = [records[i::EMITTERS] for i in range(EMITTERS)]
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as journal:
        store = DurableStore(url, journal_dir=journal, schema=schema).start()
        if url == URL:
            _warm_up(store)
        else:
            await store.put(records[0])  # the first segment exists

        async def emitter(mine: list[EventRecord]) -> None:
            clock = time.perf_counter
            for record in mine:
                began = clock()
                await store.put(record)
                latencies.append(clock() - began)
                if pause:
                    await asyncio.sleep(pause)

        started = time.perf_counter()
        await asyncio.gather(*(emitter(mine) for mine in per_emitter))
        if url != URL:
            store.close(0.5)
            return 0.0, latencies
        if not store.flush(300):
            raise SystemExit("bench store: the store did not flush within 300 s")
        elapsed = time.perf_counter() - started
        store.close(30)
    _check(schema, count + 1)
    return count / elapsed, latencies


class IdealSink:
    """The machine's floor: each put is woken by a thread 0.3 ms after it asks (a fast fsync
    here), in groups, one ``call_soon_threadsafe`` per group; no journal, no database."""

    def __init__(self) -> None:
        self._pending: list[asyncio.Future[None]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    async def put(self, record: EventRecord) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._cond:
            self._pending.append(waiter)
            self._cond.notify()
        await waiter

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending, []
            time.sleep(0.0003)
            batch[0].get_loop().call_soon_threadsafe(_wake_all, batch)


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


async def _floor(count: int) -> list[float]:
    sink = IdealSink()
    records = _records(count, audit=True)
    latencies: list[float] = []

    async def emitter(mine: list[EventRecord]) -> None:
        for record in mine:
            began = time.perf_counter()
            await sink.put(record)
            latencies.append(time.perf_counter() - began)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(emitter(records[i::EMITTERS]) for i in range(EMITTERS)))
    return latencies


def _warm_up(store: DurableStore) -> None:
    """One record through everything: the first segment exists, the connection is open."""
    store.put_nowait(_records(1, audit=False)[0])
    if not store.flush(60):
        raise SystemExit("bench store: the database does not answer")
    deadline = time.monotonic() + 10
    journal = store._journal
    while journal is not None and not journal._spares and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer prepares a spare segment right after the first batch


def _check(schema: str, expected: int) -> None:
    with psycopg.connect(DSN) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".business_event_log').fetchone()
    if row is None or row[0] != expected:
        raise SystemExit(f"bench store: {row} rows, expected {expected}")


class SeedWay:
    """The seed's ``_store_event_in_database``: a session, an add and a commit per event."""

    def __init__(self, schema: str) -> None:
        base: Any = declarative_base(metadata=MetaData(schema=schema))

        class BusinessEventLog(base):  # type: ignore[misc,valid-type]
            __tablename__ = "seed_event_log"
            id = Column(BigInteger, primary_key=True)
            event_type = Column(String(64), nullable=False)
            user_id = Column(String(64))
            entity_id = Column(String(64))
            entity_type = Column(String(64))
            data = Column(JSON)
            timestamp = Column(DateTime(timezone=True))
            request_id = Column(String(64))

        self.model = BusinessEventLog
        self.engine = create_engine(URL.replace("postgresql://", "postgresql+psycopg://"))
        base.metadata.create_all(self.engine)
        self.session_factory: Callable[[], Any] = sessionmaker(bind=self.engine)

    def run(self, count: int) -> float:
        records = _records(count, audit=False)
        started = time.perf_counter()
        for record in records:
            db = self.session_factory()
            try:
                db.add(
                    self.model(
                        event_type=record.event_type,
                        user_id=str(record.user_id),
                        entity_id=str(record.entity_id),
                        entity_type=record.entity_type,
                        data=dict(record.data),
                        timestamp=record.timestamp,
                        request_id=record.request_id,
                    )
                )
                db.commit()
            finally:
                db.close()
        return count / (time.perf_counter() - started)


def _print(
    results: dict[str, list[float]],
    latencies: list[float],
    paced: list[float],
    journal_only: list[float],
    floor: list[float],
    load: list[float],
    args: argparse.Namespace,
) -> None:
    seed = statistics.median(results[ARMS[-1]])
    loads = ", ".join(f"{value:.1f}" for value in load)
    print(
        f"\n{args.rounds} interleaved rounds, {args.events:,} events per store arm and "
        f"{args.seed_events:,} for the seed's; PostgreSQL {_pg_version()} on the same "
        f"{os.cpu_count()}-core machine, shared with other work ("
        f"1-minute load average at each round: {loads}): ratios from the same run are what count.\n"
    )
    print("| arm | median events/s | min | max | ÷ seed |")
    print("|---|---:|---:|---:|---:|")
    for arm in ARMS:
        rates = results[arm]
        print(
            f"| {arm} | {statistics.median(rates):,.0f} | {min(rates):,.0f} | {max(rates):,.0f} "
            f"| {statistics.median(rates) / seed:.1f}x |"
        )
    print(
        f"\n`await put()` of an audit event (fsynced before it returns), {EMITTERS} concurrent emitters:\n"
    )
    print("| emitters | calls | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in (
        ("as fast as they can (the throughput arm above)", latencies),
        ("100 events/s each (10 ms apart)", paced),
        (
            "100 events/s each, the database unreachable: the journal alone on the disk",
            journal_only,
        ),
        (
            "100 events/s each, no store: woken 0.3 ms after asking (the machine's timer floor)",
            floor,
        ),
    ):
        ordered = sorted(values)

        def pct(q: float, ordered: list[float] = ordered) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        print(
            f"| {name} | {len(ordered):,} | {pct(0.50):.2f} | {pct(0.90):.2f} | {pct(0.99):.2f} "
            f"| {ordered[-1] * 1000:.1f} |"
        )


def _pg_version() -> str:
    with psycopg.connect(DSN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
