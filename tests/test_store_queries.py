"""The SQL that docs/store.md documents over the store's tables runs, and answers, on real PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from chatai_otel.store.database import create_tables
from chatai_otel.store.writer import DurableStore
from support.store import PG_DSN, error, event, pg_schema, pg_url

STORE_DOC = Path(__file__).resolve().parents[1] / "docs" / "store.md"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def documented_queries() -> dict[str, str]:
    text = STORE_DOC.read_text()
    start = text.index("## The seed's log-analysis queries, over these tables")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    blocks = re.findall(r"```sql\n(.*?)```", text[start:end], re.S)
    return {block.splitlines()[0].removeprefix("-- ").split(":")[0]: block for block in blocks}


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[str]:
    """A schema with an hour of events and errors written through the store."""
    with pg_schema("store_sql") as schema:
        create_tables(pg_url(), schema)
        store = DurableStore(pg_url(), journal_dir=tmp_path / "journal", schema=schema).start()
        now = datetime.now(UTC)
        for i in range(30):  # user 7 is the most active
            store.put_nowait(event(user_id=7, request_id=f"r{i % 10}", timestamp=now))
        for i in range(5):
            store.put_nowait(event(user_id=8, request_id=f"s{i}", timestamp=now))
        for seconds, model in ((7.5, "gpt-4o"), (9.5, "gpt-4o"), (1.0, "gpt-4o"), (6.0, "mini")):
            store.put_nowait(
                event(
                    event_type="ai_response_generated",
                    user_id=8,
                    data={"model_used": model, "response_time_seconds": seconds},
                    timestamp=now,
                )
            )
        store.put_nowait(event(user_id=9, timestamp=now - timedelta(days=3)))  # out of range
        store.put_nowait(error(severity="critical", request_id="r1", trace_id=TRACE))
        store.put_nowait(error(severity="low", request_id="r1"))
        store.put_nowait(error(severity="high", request_id="r2", category="database"))
        assert store.flush(20)
        assert store.close(5)
        yield schema


def run(schema: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(sql).fetchall()


def test_the_readme_documents_the_four_queries() -> None:
    assert sorted(documented_queries()) == [
        "Error rate per hour, last 24 h",
        "Everything one request did, events and errors in order",
        "Slow requests",
        "User activity",
    ]


def test_error_rate_per_hour(filled: str) -> None:
    rows = run(filled, documented_queries()["Error rate per hour, last 24 h"])
    assert len(rows) == 1
    _, errors, serious, requests, top = rows[0]
    assert (errors, serious, requests, top) == (3, 2, 2, "validation")


def test_slow_requests(filled: str) -> None:
    rows = run(filled, documented_queries()["Slow requests"])
    assert [(r[0], r[1]) for r in rows] == [("gpt-4o", 2), ("mini", 1)]
    assert float(rows[0][2]) == 8.5 and rows[0][3] == 9.5  # type: ignore[arg-type]


def test_user_activity(filled: str) -> None:
    rows = run(filled, documented_queries()["User activity"])
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("7", 30, 10, 0), ("8", 9, 6, 4)]


def test_everything_one_request_did(filled: str) -> None:
    rows = run(
        filled, documented_queries()["Everything one request did, events and errors in order"]
    )
    kinds = [r[1] for r in rows]
    assert kinds.count("error") == 1 and kinds.count("event") == 40  # event() uses TRACE too
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # type: ignore[type-var]
