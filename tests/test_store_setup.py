"""The store as users meet it: settings, ``configure()``, shutdown, the command line, SQLite."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine

from chatai_otel.config import ConfigError, load_settings
from chatai_otel.integrations.sql import instrument_sqlalchemy, uninstrument_sqlalchemy
from chatai_otel.store.database import create_tables
from chatai_otel.store.writer import DurableStore
from chatai_otel.testing.receiver import OTLPReceiver
from conftest import APPS, bin_path, telemetry_env
from support.store import error, event, pg_schema, pg_url, query, wait_durable

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema("store_setup") as name:
        yield name


# --- settings ------------------------------------------------------------------------------


def test_store_settings_defaults_and_values() -> None:
    default = load_settings({"OTEL_SERVICE_NAME": "chatai-bot", "XDG_STATE_HOME": "/var/state"})
    assert default.store.url is None
    assert default.store.journal_dir == "/var/state/chatai-otel/journal/chatai-bot"
    assert default.store.disk_budget == 1 << 30
    assert (default.store.durability, default.store.batch_size) == ("all", 1000)
    settings = load_settings(
        {
            "CHATAI_OTEL_STORE_URL": "postgresql://app:secret@db/chatai",
            "CHATAI_OTEL_STORE_SCHEMA": "telemetry",
            "CHATAI_OTEL_STORE_JOURNAL_DIR": "/data/journal",
            "CHATAI_OTEL_STORE_DISK_BUDGET": "512MiB",
            "CHATAI_OTEL_STORE_DURABILITY": "audit",
            "CHATAI_OTEL_STORE_BATCH_SIZE": "500",
            "CHATAI_OTEL_STORE_FLUSH_INTERVAL": "0.05",
            "CHATAI_OTEL_STORE_QUEUE_SIZE": "100",
            "CHATAI_OTEL_STORE_CREATE_TABLES": "true",
        }
    )
    assert settings.store.url == "postgresql://app:secret@db/chatai"
    assert "secret" not in repr(settings)
    assert settings.store.schema == "telemetry"
    assert settings.store.journal_dir == "/data/journal"
    assert settings.store.disk_budget == 512 << 20
    assert settings.store.durability == "audit"
    assert (settings.store.batch_size, settings.store.queue_size) == (500, 100)
    assert settings.store.flush_interval == 0.05
    assert settings.store.create_tables is True


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("CHATAI_OTEL_STORE_DISK_BUDGET", "10 parsecs", "a size of at least 1048576 bytes"),
        ("CHATAI_OTEL_STORE_DISK_BUDGET", "1000", "a size of at least 1048576 bytes"),
        ("CHATAI_OTEL_STORE_DURABILITY", "some", "one of all, audit"),
        ("CHATAI_OTEL_STORE_BATCH_SIZE", "0", "an integer > 0"),
        ("CHATAI_OTEL_STORE_FLUSH_INTERVAL", "-1", "a number >= 0"),
        ("CHATAI_OTEL_STORE_CREATE_TABLES", "maybe", "true or false"),
    ],
)
def test_bad_store_settings_name_the_variable(variable: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert accepted in str(caught.value)


def test_a_bad_store_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CHATAI_OTEL_STORE_URL": "mysql://root:hunter2@db/x"})
    assert caught.value.variable == "CHATAI_OTEL_STORE_URL"
    assert "hunter2" not in str(caught.value)


# --- configure() and shutdown --------------------------------------------------------------


def tagged(stdout: str) -> dict[str, list[str]]:
    """The app's own output lines (``TAG value``), not its JSON log lines."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        tag, _, value = line.partition(" ")
        if tag in ("SINK", "TRACE", "ID", "ENDING"):
            out.setdefault(tag, []).append(value)
    return out


def run_store_app(count: int, ending: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """tests/apps/store_app.py: ``count`` events of each kind, then exit or SIGTERM."""
    return subprocess.run(
        [sys.executable, str(APPS / "store_app.py"), str(count), ending],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_configure_installs_the_store_and_shutdown_flushes_it(
    receiver: OTLPReceiver, schema: str, tmp_path: Path, ending: str
) -> None:
    create_tables(pg_url(), schema)
    journal = tmp_path / "journal"
    env = telemetry_env(
        receiver,
        CHATAI_OTEL_STORE_URL=pg_url(),
        CHATAI_OTEL_STORE_SCHEMA=schema,
        CHATAI_OTEL_STORE_JOURNAL_DIR=str(journal),
        CHATAI_OTEL_STORE_FLUSH_INTERVAL="5",  # nothing is written before shutdown but audit ones
    )
    done = run_store_app(200, ending, env)
    out = tagged(done.stdout)
    assert out["SINK"] == ["DurableStore"], done.stderr
    (trace_id,), ids = out["TRACE"], out["ID"]
    assert len(ids) == 401
    events = query(
        "SELECT event_id::text, event_type, trace_id, data, service "
        f'FROM "{schema}".business_event_log ORDER BY id'
    )
    assert sorted(r[0] for r in events) == sorted(ids[:400])
    assert {r[1] for r in events} == {"user_login", "message_sent"}
    assert {r[2] for r in events} == {trace_id}  # the span the events happened in
    assert {r[4] for r in events} == {"test-app"}
    logins = [r[3] for r in events if r[1] == "user_login"]
    assert logins[0] == {"seq": 0, "password": "[REDACTED]"}  # scrubbed before it is stored
    errors = query(
        "SELECT event_id::text, error_type, error_message, category, severity, context "
        f'FROM "{schema}".error_log'
    )
    assert errors == [
        (
            ids[400],
            "ValueError",
            "card 4111 declined",
            "external_service",
            "high",
            {"endpoint": "/pay"},
        )
    ]
    assert not list(journal.glob("slot-*/[0-9]*-*.journal"))


def test_a_database_away_at_shutdown_leaves_time_for_spans_and_logs(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """With the database away, a shutdown still ends within its deadline, what the store
    could not write stays in its journal, and the spans and logs still leave although each
    export here takes 1 s (the store gets half the deadline at most)."""
    receiver.delay = 1.0
    journal = tmp_path / "journal"
    env = telemetry_env(
        receiver,
        CHATAI_OTEL_STORE_URL="postgresql+psycopg://postgres@127.0.0.1:1/test",  # nobody there
        CHATAI_OTEL_STORE_JOURNAL_DIR=str(journal),
        CHATAI_OTEL_SHUTDOWN_TIMEOUT="4",
        OTEL_BSP_SCHEDULE_DELAY="60000",  # spans and logs leave at shutdown only
        OTEL_BLRP_SCHEDULE_DELAY="60000",
    )
    done = run_store_app(20, "exit", env)
    shutdown_seconds = time.time() - float(tagged(done.stdout)["ENDING"][0])
    out = tagged(done.stdout)
    assert out["SINK"] == ["DurableStore"], done.stderr
    assert shutdown_seconds < 4 + 1.5  # the deadline, and the interpreter's own teardown
    (trace_id,) = out["TRACE"]
    assert receiver.wait_for_spans(1, lambda s: s.trace_id == trace_id and s.name == "work")
    assert receiver.wait_for_logs(1, lambda r: r.trace_id == trace_id)
    assert list(journal.glob("slot-*/[0-9]*-*.journal"))  # kept for the next start


def test_without_a_url_the_sink_stays_the_null_sink(receiver: OTLPReceiver) -> None:
    done = run_store_app(1, "exit", telemetry_env(receiver))
    out = tagged(done.stdout)
    assert out["SINK"] == ["NullSink"], done.stderr
    assert len(out["ID"]) == 3  # events and errors work the same without a store


def test_a_store_that_cannot_start_leaves_the_app_running_without_it(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the journal directory cannot be created under a file
    env = telemetry_env(
        receiver,
        CHATAI_OTEL_STORE_URL=pg_url(),
        CHATAI_OTEL_STORE_JOURNAL_DIR=str(blocker / "journal"),
    )
    done = run_store_app(2, "exit", env)
    assert done.returncode == 0, done.stderr
    out = tagged(done.stdout)
    assert out["SINK"] == ["NullSink"], done.stderr
    assert len(out["ID"]) == 5  # events and errors go on without the SQL copy
    assert "the event store did not start" in done.stdout + done.stderr


# --- the command line ----------------------------------------------------------------------


def test_create_tables_command_on_postgresql(schema: str) -> None:
    done = subprocess.run(
        [bin_path("chatai-otel"), "store", "create-tables", "--schema", schema],
        env={**telemetry_env(None), "CHATAI_OTEL_STORE_URL": pg_url()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    tables = query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
        schema,
    )
    assert tables == [("business_event_log",), ("error_log",)]
    indexes = {
        r[0] for r in query("SELECT indexname FROM pg_indexes WHERE schemaname = %s", schema)
    }
    assert {
        "uq_business_event_log_event_id",
        "ix_business_event_log_timestamp",
        "ix_business_event_log_event_type_timestamp",
        "uq_error_log_event_id",
        "ix_error_log_category_timestamp",
    } <= indexes


def test_drain_command_writes_what_a_stopped_process_left(schema: str, tmp_path: Path) -> None:
    create_tables(pg_url(), schema)
    journal = tmp_path / "journal"
    left = DurableStore(pg_url(port=1), journal_dir=journal, schema=schema).start()
    for _ in range(25):
        left.put_nowait(event())
    assert left.flush(0.3) is False
    wait_durable(left, 25)
    left.close(0.1)
    done = subprocess.run(
        [
            bin_path("chatai-otel"),
            "store",
            "drain",
            "--url",
            pg_url(),
            "--schema",
            schema,
            "--journal-dir",
            str(journal),
        ],
        env=telemetry_env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "drained" in done.stdout, done.stderr
    assert query(f'SELECT count(*) FROM "{schema}".business_event_log') == [(25,)]


# --- SQLite --------------------------------------------------------------------------------


def sqlite_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_sqlite_path_stores_events_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    done = subprocess.run(
        [bin_path("chatai-otel"), "store", "create-tables", "--url", f"sqlite:///{db}"],
        env=telemetry_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    store = DurableStore(f"sqlite:///{db}", journal_dir=tmp_path / "journal").start()
    audit = event(True, user_id="u-9", data={"amount": 10, "nul": "a\x00b"})
    await store.put(audit)
    for seq in range(100):
        store.put_nowait(event(data={"seq": seq}))
    store.put_nowait(error(severity="critical"))
    assert store.flush(20)
    assert store.close(5)
    rows = sqlite_rows(
        db, "SELECT event_id, event_type, user_id, data FROM business_event_log ORDER BY id"
    )
    assert len(rows) == 101
    assert rows[0][:3] == (audit.event_id, "message_sent", "u-9")
    assert '"nul": "ab"' in str(rows[0][3]) or '"nul":"ab"' in str(rows[0][3])
    assert [int(r[3].split(":")[1].rstrip("}")) for r in rows[1:]] == list(range(100))
    assert sqlite_rows(db, "SELECT severity, category FROM error_log") == [
        ("critical", "validation")
    ]


async def test_sqlite_replay_after_an_unavailable_database_stores_each_record_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "events.db"
    create_tables(f"sqlite:///{db}")
    journal = tmp_path / "journal"
    # A path SQLite cannot open: every write fails, the records stay in the journal.
    away = DurableStore(f"sqlite:///{tmp_path}/missing/dir/events.db", journal_dir=journal).start()
    records = [event(i % 4 == 0, data={"seq": i}) for i in range(60)]
    for record in records:
        await away.put(record)
    wait_durable(away, 60)
    assert not away.close(0.3)
    shutil.copytree(journal, tmp_path / "copy")
    for _ in range(2):  # replayed twice, as after a crash between commit and cleanup
        back = DurableStore(f"sqlite:///{db}", journal_dir=journal).start()
        assert back.flush(20)
        assert back.close(5)
        shutil.rmtree(journal)
        shutil.copytree(tmp_path / "copy", journal)
    rows = sqlite_rows(db, "SELECT event_id FROM business_event_log ORDER BY id")
    assert [r[0] for r in rows] == [r.event_id for r in records]


async def test_the_stores_own_statements_make_no_spans(tmp_path: Path) -> None:
    """chatai-otel's SQL instrumentation is on (as under opentelemetry-instrument): the store's
    CREATE, INSERT and PRAGMA statements must not become traces of their own."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert instrument_sqlalchemy(provider)
    try:
        db = tmp_path / "events.db"
        store = DurableStore(
            f"sqlite:///{db}", journal_dir=tmp_path / "journal", create_tables=True
        ).start()
        await store.put(event(True))
        store.put_nowait(error())
        assert store.flush(20)
        assert store.close(5)
        assert sqlite_rows(db, "SELECT count(*) FROM business_event_log") == [(1,)]
        # The instrumentation works: a statement of the test's own is traced.
        probe = create_engine(f"sqlite:///{db}")
        with probe.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM error_log")
        probe.dispose()
    finally:
        uninstrument_sqlalchemy()
    assert [s.name for s in exporter.get_finished_spans()] == [f"SELECT {db}"]
