"""The example ChatAI backend (``examples/chatai``) and its worker as real processes, for the
tests that need a trace crossing two services: on PostgreSQL (a schema of their own) and Redis
(a job queue of their own), each exporting where its environment says."""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import redis

from conftest import AppProcess, bin_path, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chatai"
DSN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def example_apps(
    tmp: Path, backend_env: dict[str, str], worker_env: dict[str, str]
) -> Iterator[AppProcess]:
    """The backend under ``opentelemetry-instrument uvicorn`` (service chatai-backend) and
    ``python -m chatai.worker`` (chatai-worker), ready; yields the backend."""
    run = uuid.uuid4().hex[:8]
    schema, queue = f"chatai_example_{run}", f"test:chatai:{run}:jobs"
    shared = {
        "PYTHONPATH": str(EXAMPLE),
        "DATABASE_URL": DSN,
        "DATABASE_SCHEMA": schema,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "CHATAI_QUEUE": queue,
        "CHATAI_RATE_LIMIT": "1000",
    }
    processes: list[AppProcess] = []
    try:
        port = free_port()
        backend = AppProcess(
            [bin_path("opentelemetry-instrument"), bin_path("uvicorn"), "chatai.main:app",
             "--port", str(port)],
            {**backend_env, **shared, "OTEL_SERVICE_NAME": "chatai-backend"}, port, tmp,
        )  # fmt: skip
        processes.append(backend)
        backend.wait_ready("/health/live")
        processes.append(
            AppProcess(
                [sys.executable, "-m", "chatai.worker"],
                {**worker_env, **shared, "OTEL_SERVICE_NAME": "chatai-worker"},
                None,
                tmp,
            )
        )
        yield backend
    finally:
        for process in processes[::-1]:
            process.signal()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            process.stop()
        client = redis.Redis(host="127.0.0.1", port=6379)
        client.delete(queue)
        client.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def workload_for(url: str) -> Any:
    """The demo's scripted session (``chatai.workload.Workload``) for the backend at ``url``."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        workload = importlib.import_module("chatai.workload")
    finally:
        sys.path.remove(str(EXAMPLE))
    return workload.Workload(url)


def run_workload(url: str) -> Any:
    """The scripted session run once against the backend at ``url``; the session, after."""
    session = workload_for(url)
    report = session.run()
    assert report.failures == [], report.failures
    return session
