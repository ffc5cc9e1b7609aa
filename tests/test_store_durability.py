"""No record lost: the database away mid-stream, producers killed with SIGKILL, the disk budget.

All against the real PostgreSQL; a TCP proxy run by the test stands between the
store and the database so the test can refuse and reset its connections.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatai_otel.store.database import create_tables
from chatai_otel.store.writer import DurableStore
from conftest import APPS
from support.store import TcpProxy, event, pg_schema, pg_url, query

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

PRODUCERS = 8


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema("store_dur") as name:
        create_tables(pg_url(), name)
        yield name


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    running = TcpProxy().start()
    yield running
    running.stop()


async def stream(store: DurableStore, producer: int, count: int) -> list[str]:
    """One producer: audit and ordinary events interleaved, a little pause between them."""
    ids = []
    for seq in range(count):
        record = event(seq % 3 == 0, user_id=producer, data={"producer": producer, "seq": seq})
        await store.put(record)
        ids.append(record.event_id)
        await asyncio.sleep(0.001)
    return ids


def assert_complete_and_ordered(schema: str, expected: dict[int, int]) -> None:
    rows = query(
        f"SELECT (data->>'producer')::int, (data->>'seq')::int, event_id FROM "
        f'"{schema}".business_event_log ORDER BY id'
    )
    seen: dict[int, list[int]] = defaultdict(list)
    for producer, seq, _ in rows:
        seen[producer].append(seq)
    assert len({r[2] for r in rows}) == len(rows), "an event was stored twice"
    for producer, count in expected.items():
        # Zero loss, and each producer's events in the order it emitted them.
        assert seen[producer] == list(range(count)), f"producer {producer}"


async def test_database_refusing_connections_for_a_while_loses_nothing_and_keeps_order(
    schema: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    store = DurableStore(
        pg_url(proxy.port), journal_dir=tmp_path / "journal", schema=schema, batch_size=200
    ).start()
    producers = asyncio.gather(*(stream(store, p, 400) for p in range(PRODUCERS)))
    await asyncio.sleep(0.4)
    proxy.stop()  # open connections reset, new ones refused
    outage_started = time.monotonic()
    await asyncio.sleep(2.0)
    during = query(f'SELECT count(*) FROM "{schema}".business_event_log')[0][0]
    proxy.start()
    await producers
    assert store.stats()["durable"] == PRODUCERS * 400
    assert store.flush(60)
    assert time.monotonic() - outage_started > 2.0
    assert store.close(10)
    assert during < PRODUCERS * 400, "the outage came too late to test anything"
    assert_complete_and_ordered(schema, dict.fromkeys(range(PRODUCERS), 400))


async def test_backends_terminated_mid_stream_lose_nothing_and_keep_order(
    schema: str, tmp_path: Path
) -> None:
    name = f"store-test-{uuid.uuid4().hex[:8]}"
    store = DurableStore(
        pg_url(application_name=name),
        journal_dir=tmp_path / "journal",
        schema=schema,
        batch_size=100,
        flush_interval=0.01,
    ).start()
    producers = asyncio.gather(*(stream(store, p, 300) for p in range(PRODUCERS)))
    terminated = 0
    while not producers.done():
        await asyncio.sleep(0.15)
        terminated += sum(
            r[0]
            for r in query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                name,
            )
        )
    await producers
    assert store.flush(60)
    assert store.close(10)
    assert terminated >= 2, "no backend was terminated: the test proved nothing"
    assert_complete_and_ordered(schema, dict.fromkeys(range(PRODUCERS), 300))


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if len(line) == 36]


def test_producer_killed_with_sigkill_loses_no_returned_event_and_stores_none_twice(
    schema: str, tmp_path: Path
) -> None:
    journal, ids_file = tmp_path / "journal", tmp_path / "ids.txt"
    script = str(APPS / "store_producer.py")
    rng = random.Random()
    returned_per_run = []
    for run in range(4):
        proc = subprocess.Popen(
            [sys.executable, script, pg_url(), schema, str(journal), str(ids_file), str(run), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"producing", proc.stderr
        before = len(read_ids(ids_file))
        # Kill at a random moment once the run has returned enough events to prove something
        # (a fixed head start may not be enough on a loaded machine).
        deadline = time.monotonic() + 60
        while len(read_ids(ids_file)) - before <= 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        returned_per_run.append(len(read_ids(ids_file)) - before)
    drain = subprocess.run(
        [
            sys.executable,
            script,
            pg_url(),
            schema,
            str(journal),
            str(ids_file),
            "0",
            "0",
            "--drain",
        ],
        capture_output=True,
        timeout=120,
    )
    assert drain.stdout.strip() == b"drained", drain.stderr

    returned = read_ids(ids_file)
    assert all(n > 50 for n in returned_per_run), returned_per_run
    stored = query(f'SELECT event_id::text FROM "{schema}".business_event_log')
    stored_ids = [r[0] for r in stored]
    assert len(stored_ids) == len(set(stored_ids)), "an event was stored twice"
    missing = set(returned) - set(stored_ids)
    assert not missing, f"{len(missing)} of {len(returned)} returned events are not stored"
    # Per producer and run, the database order is the emission order.
    rows = query(
        f"SELECT (data->>'run')::int, (data->>'producer')::int, (data->>'seq')::int "
        f'FROM "{schema}".business_event_log ORDER BY id'
    )
    sequences: dict[tuple[int, int], list[int]] = defaultdict(list)
    for run, producer, seq in rows:
        sequences[(run, producer)].append(seq)
    for key, seqs in sequences.items():
        assert seqs == sorted(seqs), key
    assert not list(journal.glob("slot-*/[0-9]*-*.journal")), "the drain left segments behind"


async def test_disk_budget_drops_ordinary_events_and_slows_audit_ones(
    schema: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    budget = 1 << 20  # 1 MiB: 16 segments of 64 KiB
    journal = tmp_path / "journal"
    proxy.stop()  # the database is away from the start
    store = DurableStore(
        pg_url(proxy.port), journal_dir=journal, schema=schema, disk_budget=budget
    ).start()
    padding = "x" * 400
    accepted: list[int] = []
    audit_ids: list[str] = []
    for seq in range(6000):
        if store.put_nowait(event(data={"seq": seq, "pad": padding})):
            accepted.append(seq)
        if seq % 500 == 0 and not store.dropped:  # while there is room
            record = event(True, data={"audit": seq})
            await asyncio.wait_for(store.put(record), 5)
            audit_ids.append(record.event_id)
    # Records being written count twice for a moment (conservative); top the journal up
    # once it has settled, until even a settled journal refuses.
    attempts = 6000
    while True:
        await asyncio.sleep(0.2)
        refused_at_once = True
        while True:
            seq, attempts = attempts, attempts + 1
            if not store.put_nowait(event(data={"seq": seq, "pad": padding})):
                break
            accepted.append(seq)
            refused_at_once = False
        if refused_at_once:
            break
    dropped = store.dropped.get("over_budget", 0)
    assert dropped > 0 and dropped + len(accepted) == attempts
    disk = sum(p.stat().st_size for p in journal.rglob("*") if p.suffix in (".journal", ".spare"))
    assert disk <= budget, f"journal files take {disk} bytes, over the {budget} budget"

    # Over budget, an audit event is not dropped: its put() waits for room.
    blocked = event(True, data={"audit": "blocked", "pad": padding * 2})
    waiting = asyncio.ensure_future(store.put(blocked))
    await asyncio.sleep(1.0)
    assert not waiting.done(), "an audit put() returned although the journal is full"

    proxy.start()  # the database is back: the journal drains, in order, and frees room
    await asyncio.wait_for(waiting, 60)
    audit_ids.append(blocked.event_id)
    assert store.flush(60)
    assert store.close(10)
    rows = query(f'SELECT event_id::text, data FROM "{schema}".business_event_log ORDER BY id')
    ordinary = [r[1]["seq"] for r in rows if "seq" in r[1]]
    assert ordinary == accepted  # every accepted one, in order; the dropped ones only
    stored = {r[0] for r in rows}
    assert set(audit_ids) <= stored
