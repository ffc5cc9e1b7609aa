"""The event store against the real PostgreSQL: rows, idempotent replay, rejected records, metrics."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from chatai_otel import metric_names as names
from chatai_otel.store.database import create_tables
from chatai_otel.store.writer import DurableStore, StoreClosedError
from support.store import error, event, pg_schema, pg_url, query, wait_durable


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        create_tables(pg_url(), name)
        yield name


def make_store(
    schema: str, journal: Path, url: str | None = None, **kwargs: object
) -> DurableStore:
    return DurableStore(url or pg_url(), journal_dir=journal, schema=schema, **kwargs).start()  # type: ignore[arg-type]


def segments(journal: Path) -> list[Path]:
    return sorted(journal.glob("slot-*/[0-9]*-*.journal"))


async def test_records_land_in_both_tables_with_all_columns(schema: str, tmp_path: Path) -> None:
    store = make_store(schema, tmp_path / "journal")
    audit = event(True, event_type="user_login", user_id="u-1", data={"ip": "10.0.0.1"})
    await store.put(audit)
    assert store.put_nowait(event(False, data={"text": "a\x00b", "n": 1}))
    assert store.put_nowait(error(message="x" * 10_000, error_type="E" * 400))
    assert store.flush(10)
    assert store.close(10)

    rows = query(
        f"SELECT event_id::text, event_type, user_id, entity_id, entity_type, data, request_id, "
        f'trace_id, span_id, service, "timestamp" FROM "{schema}".business_event_log ORDER BY id'
    )
    assert len(rows) == 2
    first = rows[0]
    assert first[:5] == (audit.event_id, "user_login", "u-1", "42", "dialog")
    assert first[5] == {"ip": "10.0.0.1"}
    assert first[6:10] == (
        "req-1",
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "store-test",
    )
    assert first[10] == audit.timestamp
    assert rows[1][5] == {
        "text": "ab",
        "n": 1,
    }  # PostgreSQL refuses NUL; it is dropped, not the row

    errors = query(
        f"SELECT error_type, length(error_message), category, severity, context, traceback, "
        f'fingerprint, user_id FROM "{schema}".error_log'
    )
    assert errors == [
        (
            "E" * 255,  # clipped to the column, not refused
            10_000,
            "validation",
            "low",
            {"endpoint": "/dialogs", "method": "POST"},
            "Traceback (most recent call last): ...",
            "3f2a",
            "7",
        )
    ]
    assert segments(tmp_path / "journal") == []  # a clean close leaves nothing to replay


async def test_replaying_a_journal_twice_stores_each_record_once(
    schema: str, tmp_path: Path
) -> None:
    # The database is unreachable: records stay in the journal when the store closes.
    journal = tmp_path / "journal"
    down = make_store(schema, journal, url=pg_url(port=1))
    records = [event(i % 2 == 0, data={"seq": i}) for i in range(300)]
    for record in records:
        await down.put(record)
    wait_durable(down, 300)
    assert not down.close(0.5)
    assert segments(journal), "the records must still be in the journal"
    backup = tmp_path / "backup"
    shutil.copytree(journal, backup)

    up = make_store(schema, journal)
    assert up.flush(20)
    assert up.close(5)
    # The crash between commit and cleanup, re-enacted: the same segments once more.
    shutil.rmtree(journal)
    shutil.copytree(backup, journal)
    again = make_store(schema, journal)
    assert again.flush(20)
    assert again.close(5)

    rows = query(f'SELECT event_id::text, data FROM "{schema}".business_event_log ORDER BY id')
    assert [r[0] for r in rows] == [r.event_id for r in records]
    assert [r[1]["seq"] for r in rows] == list(range(300))


async def test_a_record_the_database_refuses_is_set_aside_not_blocking(
    schema: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    store = make_store(schema, journal)
    good_before = [event(data={"seq": i}) for i in range(50)]
    poison = event(event_id="not-a-uuid")
    good_after = [event(data={"seq": i}) for i in range(50, 100)]
    for record in [*good_before, poison, *good_after]:
        assert store.put_nowait(record)
    assert store.flush(20)
    assert store.dropped == {"rejected": 1}
    assert store.close(5)

    rows = query(f'SELECT data FROM "{schema}".business_event_log ORDER BY id')
    assert [r[0]["seq"] for r in rows] == list(range(100))
    rejected = list(journal.glob("slot-*/rejected.jsonl"))
    assert len(rejected) == 1 and "not-a-uuid" in rejected[0].read_text()


async def test_missing_tables_are_retried_until_created(tmp_path: Path) -> None:
    with pg_schema() as schema:
        store = make_store(schema, tmp_path / "journal")
        await store.put(event(True, data={"seq": 1}))  # durable although the table is missing
        assert not store.flush(1.0)
        create_tables(pg_url(), schema)
        assert store.flush(20)
        assert store.close(5)
        assert query(f'SELECT count(*) FROM "{schema}".business_event_log') == [(1,)]


async def test_create_tables_option_creates_them_at_first_connection(tmp_path: Path) -> None:
    with pg_schema() as schema:
        store = make_store(schema, tmp_path / "journal", create_tables=True)
        store.put_nowait(error())
        assert store.flush(20)
        assert store.close(5)
        assert query(f'SELECT count(*) FROM "{schema}".error_log') == [(1,)]


async def test_closed_store_refuses_and_counts(schema: str, tmp_path: Path) -> None:
    store = make_store(schema, tmp_path / "journal")
    assert store.close(5)
    with pytest.raises(StoreClosedError):
        await store.put(event(True))
    assert store.put_nowait(event()) is False
    assert store.dropped == {"closed": 1}


async def test_best_effort_mode_skips_the_journal_for_non_audit(
    schema: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    store = make_store(
        schema, journal, durability="audit", queue_size=100, batch_size=10, url=pg_url(port=1)
    )
    accepted = sum(store.put_nowait(event(data={"seq": i})) for i in range(150))
    await store.put(event(True, data={"seq": "audit"}))
    stats = store.stats()
    assert stats["appended"] == 1  # only the audit record went to the journal
    # Bounded: the queue holds 100, the writer's batch in flight at most 10 more.
    assert 100 <= accepted <= 110
    assert store.dropped == {"queue_full": 150 - accepted}
    store.close(1.0)  # the writer must get out of its retry within it, even on a loaded machine
    assert store.dropped["closed"] == accepted  # best effort: lost with the process


async def test_metrics_report_rows_queue_journal_and_drops(schema: str, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    store = make_store(schema, tmp_path / "journal", meter_provider=provider)
    await asyncio.gather(*(store.put(event(True)) for _ in range(20)))
    for _ in range(5):
        store.put_nowait(event())
    for _ in range(3):
        store.put_nowait(error())
    assert store.flush(10)
    assert store.close(5)
    assert store.put_nowait(event()) is False  # after close: dropped, and counted

    data = reader.get_metrics_data()
    assert data is not None
    found = {
        m.name: (
            m.unit,
            [(dict(p.attributes or {}), getattr(p, "value", None)) for p in m.data.data_points],
        )
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert found[names.STORE_ROWS_WRITTEN][0] == "{row}"
    rows = {a["chatai.store.table"]: v for a, v in found[names.STORE_ROWS_WRITTEN][1]}
    assert rows == {"business_event_log": 25, "error_log": 3}
    assert found[names.STORE_RECORDS_DROPPED] == (
        "{record}",
        [({"chatai.store.drop.reason": "closed", "chatai.store.record.kind": "event"}, 1)],
    )
    assert found[names.STORE_QUEUE_SIZE] == ("{record}", [({}, 0)])
    unit, points = found[names.STORE_JOURNAL_SIZE]
    assert unit == "By" and points[0][1] > 0
    assert found[names.STORE_WRITE_DURATION][0] == "s"


async def test_write_failures_are_counted_while_the_database_is_away(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    store = DurableStore(
        pg_url(port=1),
        journal_dir=tmp_path / "journal",
        meter_provider=MeterProvider(metric_readers=[reader]),
    ).start()
    store.put_nowait(event())
    deadline = asyncio.get_running_loop().time() + 15  # a loaded machine may take a while
    while True:
        await asyncio.sleep(0.1)
        data = reader.get_metrics_data()
        assert data is not None
        failures = [
            p
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == names.STORE_WRITE_FAILURES
            for p in m.data.data_points
        ]
        if failures or asyncio.get_running_loop().time() > deadline:
            break
    assert failures and failures[0].value >= 1
    assert failures[0].attributes == {"error.type": "OperationalError"}
    store.close(0.1)


async def test_orphaned_slot_of_a_dead_process_is_adopted_and_drained(
    schema: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    first = make_store(schema, journal)  # slot-0
    dead = make_store(schema, journal, url=pg_url(port=1))  # slot-1, never reaches the database
    records = [event(True, data={"seq": i}) for i in range(40)]
    for record in records:
        await dead.put(record)
    dead.close(0.1)
    assert first.close(5)
    assert sorted(p.name for p in journal.iterdir()) == ["slot-0", "slot-1"]

    third = make_store(schema, journal)  # takes slot-0, adopts slot-1
    assert third.flush(20)
    assert third.close(5)
    rows = query(f'SELECT data FROM "{schema}".business_event_log ORDER BY id')
    assert [r[0]["seq"] for r in rows] == list(range(40))
    assert segments(journal) == []


def test_forked_child_gets_its_own_slot_and_writer(schema: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    store = make_store(schema, journal)
    assert store.put_nowait(event(data={"who": "parent"}))
    assert store.flush(10)
    pid = os.fork()
    if pid == 0:  # the child: threads did not survive fork; the store restarts on first use
        code = 1
        try:
            ok = store.put_nowait(event(data={"who": "child"}))
            code = 0 if ok and store.flush(20) and store.close(5) else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store.put_nowait(event(data={"who": "parent"}))
    assert store.close(10)
    rows = query(f"SELECT data->>'who' FROM \"{schema}\".business_event_log ORDER BY id")
    assert sorted(r[0] for r in rows) == ["child", "parent", "parent"]
    assert sorted(p.name for p in journal.iterdir()) == ["slot-0", "slot-1"]


async def test_integers_json_cannot_carry_are_kept_as_digits(schema: str, tmp_path: Path) -> None:
    store = make_store(schema, tmp_path / "journal")
    await store.put(event(True, data={"big": 2**70, "fine": 2**40, "nested": [{"n": -(2**65)}]}))
    assert store.flush(10)
    assert store.close(5)
    assert query(f'SELECT data FROM "{schema}".business_event_log') == [
        ({"big": str(2**70), "fine": 2**40, "nested": [{"n": str(-(2**65))}]},)
    ]


async def test_an_audit_record_larger_than_the_budget_is_kept_not_waited_on_forever(
    schema: str, tmp_path: Path
) -> None:
    # A 1 MiB budget never has room for a 1 MB record: it must not wait for room that cannot come.
    store = make_store(schema, tmp_path / "journal", disk_budget=1 << 20)
    huge = event(True, data={"blob": "x" * 1_000_000})
    await asyncio.wait_for(store.put(huge), 10)
    after = event(True, data={"seq": 1})  # and the journal goes on taking records
    await asyncio.wait_for(store.put(after), 10)
    assert store.flush(20)
    assert store.close(5)
    rows = query(
        f"SELECT event_id::text, length(data->>'blob') FROM \"{schema}\".business_event_log "
        "ORDER BY id"
    )
    assert rows == [(huge.event_id, 1_000_000), (after.event_id, None)]


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg_async", "psycopg2"])
async def test_a_host_apps_url_with_another_driver_is_written_through_psycopg(
    schema: str, tmp_path: Path, driver: str
) -> None:
    # The app's DATABASE_URL, as is: the store's writer thread needs the blocking psycopg 3.
    url = pg_url().replace("postgresql://", f"postgresql+{driver}://")
    store = make_store(schema, tmp_path / "journal", url=url)
    await store.put(event(True, data={"driver": driver}))
    assert store.flush(20)
    assert store.close(5)
    assert query(f'SELECT data FROM "{schema}".business_event_log') == [({"driver": driver},)]
