"""The database side of the store: engines, ``create_tables``, and the two batch writers
(PostgreSQL ``COPY`` into a temporary table then ``INSERT ... SELECT``; ``executemany``
elsewhere), idempotent on the record's ``event_id``."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    create_engine,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url

from chatai_otel.store.encoding import DOC_COLUMNS, python_row, strip_nul
from chatai_otel.store.tables import TABLES, metadata

# --- the database side -------------------------------------------------------------------


def engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for the store: PostgreSQL always through psycopg 3; SQLite works too.

    The writer is a thread with a blocking connection, so a host app's own URL
    (``postgresql+asyncpg://``, ``+psycopg_async``, ``+psycopg2``) is reused with psycopg 3
    instead: an async driver would fail every write, a missing one would stop the store.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {
            "connect_timeout": 5,
            "application_name": "chatai-otel-store",
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        for key in list(connect_args):
            if key in parsed.query:
                del connect_args[key]  # what the URL says wins
        kwargs.setdefault("connect_args", connect_args)
    elif backend == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        raise ValueError(
            f"the event store supports PostgreSQL and SQLite URLs, not {parsed.drivername!r}"
        )
    if backend != "sqlite":
        kwargs.setdefault("pool_size", 1)
    return create_engine(parsed, **kwargs)


def _translated(engine: Engine, schema: str | None) -> Engine:
    if not schema:
        return engine
    return engine.execution_options(schema_translate_map={None: schema})


def create_tables(url_or_engine: str | Engine, schema: str | None = None) -> None:
    """Create the schema (PostgreSQL) and both tables with their indexes, if missing."""
    engine = engine_for(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.begin() as conn:
            if schema and engine.dialect.name == "postgresql":
                quoted = engine.dialect.identifier_preparer.quote_schema(schema)
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
            translated = conn.execution_options(schema_translate_map={None: schema})
            metadata.create_all(translated if schema else conn)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def is_record_error(exc: BaseException) -> bool:
    """True when this batch failed because of a record in it (retrying it as is cannot help)."""
    if isinstance(exc, ValueError | TypeError | KeyError | UnicodeError):
        return True  # could not build the row
    original = getattr(exc, "orig", None) or exc
    state = getattr(original, "sqlstate", None)
    if isinstance(state, str) and state:
        return state[:2] in ("22", "23")  # data exception, integrity constraint violation
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    return isinstance(original, sqlite3.DataError | sqlite3.IntegrityError)


class Database:
    """The writer thread's one connection: a batch in one transaction, inserts idempotent."""

    def __init__(self, engine: Engine, schema: str | None, create: bool) -> None:
        self.engine = engine
        self.schema = schema
        self._create = create

    def write(self, payloads: list[bytes]) -> dict[str, int]:
        """Insert journal payloads in order and commit; return the new rows per record kind."""
        raise NotImplementedError

    def reset(self) -> None:
        """Drop the connection after a failure (the next write reconnects)."""
        raise NotImplementedError

    def close(self) -> None:
        self.reset()
        self.engine.dispose()

    def _maybe_create(self) -> None:
        if self._create:
            create_tables(self.engine, self.schema)
            self._create = False


def _column_from_doc(column: Column[Any], dialect: Any) -> str:
    """The SQL that takes one column's value out of the staged JSON document ``doc``."""
    name = column.name
    if name in DOC_COLUMNS:  # absent or JSON null: an empty object, as the seed stored
        return f"coalesce(nullif(doc->'{name}', 'null'::jsonb), '{{}}'::jsonb)"
    value = f"doc->>'{name}'"
    length = getattr(column.type, "length", None)
    if length is not None:
        return f"left({value}, {int(length)})"  # clipped, not refused
    if name in ("event_id", "timestamp"):
        return f"({value})::{column.type.compile(dialect)}"
    return value


def _copy_data(payloads: list[bytes]) -> bytes:
    """The batch in COPY text format, one document a line, built in two C calls.

    orjson writes no tab or newline (it escapes them), so the only character
    COPY treats specially is the backslash, which is doubled.
    """
    data = b"\n".join(payloads)
    if b"\\u0000" in data:  # jsonb refuses NUL even escaped: drop the NUL, not the record
        data = b"\n".join(
            orjson.dumps(strip_nul(orjson.loads(p))) if b"\\u0000" in p else p for p in payloads
        )
    return (data + b"\n").replace(b"\\", b"\\\\")


class _PostgresCopy(Database):
    """COPY the journal's JSON documents into a temporary table; INSERT ... SELECT from it.

    PostgreSQL takes the columns out of the documents itself (``doc->>'name'``),
    so the writer thread does almost no work per row in Python, and holds the
    GIL that the application's threads and event loop need as little as it can.
    """

    def __init__(self, engine: Engine, schema: str | None, create: bool) -> None:
        super().__init__(engine, schema, create)
        self._raw: Any = None
        preparer = engine.dialect.identifier_preparer
        prefix = f"{preparer.quote_schema(schema)}." if schema else ""
        self._ddl = [
            "SET client_encoding TO 'UTF8'",
            "CREATE TEMPORARY TABLE IF NOT EXISTS chatai_stage "
            "(ord bigint GENERATED ALWAYS AS IDENTITY, doc jsonb) ON COMMIT DELETE ROWS",
        ]
        self._inserts: dict[str, str] = {}
        for kind, table in TABLES.items():
            columns = [c for c in table.columns if c.name != "id"]
            names = ", ".join(preparer.quote(c.name) for c in columns)
            values = ", ".join(_column_from_doc(c, engine.dialect) for c in columns)
            self._inserts[kind] = (
                f"INSERT INTO {prefix}{preparer.quote(table.name)} ({names}) "
                f"SELECT {values} FROM chatai_stage WHERE doc->>'kind' = '{kind}' ORDER BY ord "
                "ON CONFLICT (event_id) DO NOTHING"
            )

    def _connection(self) -> Any:
        if self._raw is None:
            self._maybe_create()
            raw = self.engine.raw_connection()
            try:
                driver: Any = raw.driver_connection
                with driver.cursor() as cur:
                    for statement in self._ddl:
                        cur.execute(statement)
                driver.commit()
            except BaseException:
                raw.invalidate()
                raise
            self._raw = raw
        return self._raw.driver_connection

    def write(self, payloads: list[bytes]) -> dict[str, int]:
        driver = self._connection()
        data = _copy_data(payloads)
        written: dict[str, int] = {}
        with driver.cursor() as cur:
            with cur.copy("COPY chatai_stage (doc) FROM STDIN") as copy:
                copy.write(data)
            for kind, statement in self._inserts.items():
                cur.execute(statement)
                written[kind] = max(int(cur.rowcount), 0)
        driver.commit()
        return written

    def reset(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()
            except Exception:
                pass


class _SqlAlchemyInsert(Database):
    """SQLite (and PostgreSQL without psycopg): executemany of INSERT ... ON CONFLICT DO NOTHING."""

    def __init__(self, engine: Engine, schema: str | None, create: bool) -> None:
        super().__init__(engine, schema, create)
        self._conn: Any = None
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._statements = {
            kind: dialect.insert(table).on_conflict_do_nothing(index_elements=["event_id"])
            for kind, table in TABLES.items()
        }

    def _connection(self) -> Any:
        if self._conn is None:
            self._maybe_create()
            self._conn = _translated(self.engine, self.schema).connect()
        return self._conn

    def write(self, payloads: list[bytes]) -> dict[str, int]:
        conn = self._connection()
        rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in TABLES}
        for payload in payloads:
            doc = orjson.loads(payload)
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind not in rows:
                raise ValueError(f"unknown record kind {kind!r}")
            rows[kind].append(python_row(kind, doc))
        written: dict[str, int] = {}
        for kind, batch in rows.items():
            if batch:
                count = conn.execute(self._statements[kind], batch).rowcount
                written[kind] = count if isinstance(count, int) and count >= 0 else len(batch)
        conn.commit()
        return written

    def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                pass


def open_database(engine: Engine, schema: str | None, create: bool) -> Database:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return _PostgresCopy(engine, schema, create)
    return _SqlAlchemyInsert(engine, schema, create)
