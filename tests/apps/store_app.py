"""A worker that stores events through ``import chatai_otel.setup`` and CHATAI_OTEL_STORE_URL.

``python store_app.py N exit|sigterm``: inside one span, N audit events through
``await events.log_event``, N ordinary ones through ``events.emit`` and one
``track_error``; prints (tagged, among the JSON log lines) the sink's class, the trace id,
then every event id.
Then a normal exit or SIGTERM to itself: either way the shutdown callback must
write what is still queued within the telemetry deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from opentelemetry import trace

import chatai_otel.setup  # noqa: F401
from chatai_otel.store.records import get_sink
from chatai_otel.tracking import events
from chatai_otel.tracking.errors import ErrorCategory, ErrorSeverity, track_error
from chatai_otel.tracking.events import BusinessEvent, EventType


async def main(count: int) -> None:
    print("SINK", type(get_sink()).__name__, flush=True)
    with trace.get_tracer("store-app").start_as_current_span("work") as span:
        print("TRACE", format(span.get_span_context().trace_id, "032x"), flush=True)
        for seq in range(count):
            event_id = await events.log_event(
                BusinessEvent(
                    EventType.USER_LOGIN, user_id=seq, data={"seq": seq, "password": "hunter2"}
                )
            )
            print("ID", event_id, flush=True)
        for seq in range(count):
            print(
                "ID",
                events.emit(EventType.MESSAGE_SENT, user_id=seq, data={"seq": seq}),
                flush=True,
            )
        try:
            raise ValueError("card 4111 declined")
        except ValueError as exc:
            report = track_error(
                exc, ErrorCategory.EXTERNAL_SERVICE, ErrorSeverity.HIGH, {"endpoint": "/pay"}
            )
        print("ID", report.event_id, flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
    print("ENDING", time.time(), flush=True)  # the shutdown (atexit or SIGTERM) starts now
    if sys.argv[2] == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
