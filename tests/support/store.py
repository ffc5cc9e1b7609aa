"""Helpers for the event store tests: a TCP proxy to take PostgreSQL away, schemas, records."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from chatai_otel.store.records import ErrorRecord, EventRecord, new_event_id
from chatai_otel.store.writer import DurableStore

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_DSN = f"host={PG_HOST} port={PG_PORT} dbname=test user=postgres"


def pg_url(port: int = PG_PORT, **query: str) -> str:
    suffix = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql://postgres@127.0.0.1:{port}/test" + (f"?{suffix}" if suffix else "")


@contextlib.contextmanager
def pg_schema(prefix: str = "store_test") -> Iterator[str]:
    """A schema of its own (others use the same database concurrently), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def wait_durable(store: DurableStore, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` records are fsynced in the journal, before a short ``close()``.

    A close with the database away only waits ``timeout`` for the last group commit; on a
    loaded machine that fsync may take longer, and the test would copy a journal without it.
    """
    deadline = time.monotonic() + timeout
    while store.stats()["durable"] < count:
        assert time.monotonic() < deadline, store.stats()
        time.sleep(0.01)


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


def event(
    audit: bool = False,
    *,
    data: dict[str, Any] | None = None,
    event_type: str = "message_sent",
    user_id: int | str | None = 7,
    event_id: str | None = None,
    **fields: Any,
) -> EventRecord:
    values: dict[str, Any] = dict(
        event_id=event_id or new_event_id(),
        event_type=event_type,
        timestamp=datetime.now(UTC),
        service_name="store-test",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        request_id="req-1",
        user_id=user_id,
        entity_id=42,
        entity_type="dialog",
        data=data if data is not None else {"model_used": "gpt-4o-mini", "input_tokens": 500},
        audit=audit,
    )
    values.update(fields)
    return EventRecord(**values)


def error(**fields: Any) -> ErrorRecord:
    values: dict[str, Any] = dict(
        event_id=new_event_id(),
        timestamp=datetime.now(UTC),
        service_name="store-test",
        trace_id=None,
        span_id=None,
        request_id="req-2",
        user_id=7,
        error_type="ValueError",
        message="bad input",
        category="validation",
        severity="low",
        context={"endpoint": "/dialogs", "method": "POST"},
        stacktrace="Traceback (most recent call last): ...",
        fingerprint="3f2a",
    )
    values.update(fields)
    return ErrorRecord(**values)


class TcpProxy:
    """A loopback TCP proxy in front of PostgreSQL that a test can take down and bring back.

    ``stop()`` closes the listening socket and every open connection (the
    store sees connection resets, then refused connections); ``start()``
    listens on the same port again.
    """

    def __init__(self, target: tuple[str, int] = (PG_HOST, PG_PORT)) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
