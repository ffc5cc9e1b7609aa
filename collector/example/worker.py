"""The example worker of docker-compose.yml: a periodic job that calls the backend.

It is there so that Jaeger shows traces crossing two services (worker -> backend) as soon as
the stack is up, without anyone clicking. Configured the worker way: one import.
Environment: BACKEND_URL, WORKER_INTERVAL (seconds), WORKER_ROUNDS (0 = forever),
WORKER_HEARTBEAT (a file touched every round; the compose healthcheck reads its age).
"""

from __future__ import annotations

import os
import pathlib
import time

import httpx
from opentelemetry import trace
from opentelemetry.propagate import inject

import chatai_otel.setup  # noqa: F401  (configures traces, metrics and logs once)
from chatai_otel import get_logger

BACKEND = os.environ.get("BACKEND_URL", "http://backend:8000").rstrip("/")
INTERVAL = float(os.environ.get("WORKER_INTERVAL", "2"))
ROUNDS = int(os.environ.get("WORKER_ROUNDS", "0"))
HEARTBEAT = pathlib.Path(os.environ.get("WORKER_HEARTBEAT", "/tmp/worker-heartbeat"))

log = get_logger("example.worker")
tracer = trace.get_tracer("example.worker")


def one_round(client: httpx.Client, number: int) -> None:
    """One job: open a dialog on the backend, inside a span whose context the request carries."""
    with tracer.start_as_current_span("worker.sync_dialog") as span:
        dialog_id = number % 50
        span.set_attribute("dialog.id", dialog_id)
        headers: dict[str, str] = {}
        inject(headers)  # traceparent: the backend's server span joins this trace
        try:
            response = client.get(f"{BACKEND}/dialogs/{dialog_id}", headers=headers)
            log.info("worker.dialog_synced", dialog_id=dialog_id, status=response.status_code)
        except httpx.HTTPError as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            log.warning("worker.backend_unreachable", error=type(exc).__name__)


def main() -> None:
    number = 0
    with httpx.Client(timeout=5.0) as client:
        while ROUNDS == 0 or number < ROUNDS:
            one_round(client, number)
            HEARTBEAT.touch()
            number += 1
            time.sleep(INTERVAL)
    print("WORKER-DONE", flush=True)


if __name__ == "__main__":
    main()
