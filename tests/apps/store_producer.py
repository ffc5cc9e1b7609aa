"""A producer process for the crash test: audit events as fast as it can, ids logged on return.

``python store_producer.py URL SCHEMA JOURNAL_DIR IDS_FILE RUN PRODUCERS [--drain]``

Each of PRODUCERS tasks loops: ``await store.put(audit event)``, then appends
the event id to IDS_FILE (one ``write`` per line, so a line is whole or
absent). The test kills this process with SIGKILL at a random moment; every id
in the file had its ``put()`` return, so it must reach the database. With
``--drain`` it only starts the store (which replays what the journal holds),
flushes and exits.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime

from chatai_otel.store.records import EventRecord, new_event_id
from chatai_otel.store.writer import DurableStore


async def produce(store: DurableStore, ids_fd: int, run: int, producer: int) -> None:
    seq = 0
    while True:
        record = EventRecord(
            event_id=new_event_id(),
            event_type="balance_topped_up",
            timestamp=datetime.now(UTC),
            service_name="crash-test",
            trace_id=None,
            span_id=None,
            request_id=None,
            user_id=producer,
            entity_id=seq,
            entity_type="run",
            data={"run": run, "producer": producer, "seq": seq},
            audit=True,
        )
        await store.put(record)
        os.write(ids_fd, f"{record.event_id}\n".encode())
        seq += 1


async def main(argv: list[str]) -> None:
    url, schema, journal_dir, ids_path, run, producers = argv[:6]
    store = DurableStore(
        url, journal_dir=journal_dir, schema=schema, batch_size=500, disk_budget=64 << 20
    ).start()
    if "--drain" in argv:
        ok = store.flush(60)
        print("drained" if ok and store.close(30) else "not drained", flush=True)
        return
    ids_fd = os.open(ids_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("producing", flush=True)
    await asyncio.gather(*(produce(store, ids_fd, int(run), p) for p in range(int(producers))))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
