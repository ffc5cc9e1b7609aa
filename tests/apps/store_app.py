"""A worker that stores events through ``import chatai_otel.setup`` and CHATAI_OTEL_STORE_URL.

``python store_app.py N exit|sigterm``: N audit events awaited, N ordinary ones
queued, their ids printed; then a normal exit or SIGTERM to itself. Either way
the shutdown callback must flush the queued ones within the telemetry deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

import chatai_otel.setup  # noqa: F401
from chatai_otel.records import EventRecord, get_sink, new_event_id


def record(audit: bool, seq: int) -> EventRecord:
    return EventRecord(
        event_id=new_event_id(),
        event_type="user_login" if audit else "message_sent",
        timestamp=datetime.now(UTC),
        service_name="store-app",
        trace_id=None,
        span_id=None,
        request_id=None,
        user_id=seq,
        entity_id=None,
        entity_type=None,
        data={"seq": seq},
        audit=audit,
    )


async def main(count: int) -> None:
    sink = get_sink()
    print(type(sink).__name__, flush=True)
    for seq in range(count):
        audit = record(True, seq)
        await sink.put(audit)
        print(audit.event_id, flush=True)
    for seq in range(count):
        ordinary = record(False, seq)
        assert sink.put_nowait(ordinary)
        print(ordinary.event_id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
    if sys.argv[2] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
