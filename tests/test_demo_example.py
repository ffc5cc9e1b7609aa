"""The example ChatAI backend on PostgreSQL (DATABASE_URL) with Redis rate limiting (REDIS_URL).

The backend runs as the README says, ``opentelemetry-instrument uvicorn chatai.main:app``;
the worker as ``python -m chatai.worker``; the scripted workload drives them; a burst of
messages trips the Redis rate limit. Schema, queue and Redis keys are this run's own.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from chatai_otel.testing.receiver import OTLPReceiver
from conftest import AppProcess, bin_path, free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chatai"
DSN = "postgresql://postgres@127.0.0.1:5432/test"
SERVER, CONSUMER = 2, 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    run = uuid.uuid4().hex[:8]
    schema = f"chatai_example_{run}"
    queue = f"test:chatai:{run}:jobs"
    prefix = f"test:chatai:{run}:rl"
    with OTLPReceiver() as receiver:
        env = telemetry_env(
            receiver,
            PYTHONPATH=str(EXAMPLE),
            DATABASE_URL=DSN,
            DATABASE_SCHEMA=schema,
            REDIS_URL="redis://127.0.0.1:6379/0",
            CHATAI_QUEUE=queue,
            CHATAI_RATE_LIMIT="5",
            CHATAI_RATE_LIMIT_PREFIX=prefix,
        )
        port = free_port()
        backend = AppProcess(
            [
                bin_path("opentelemetry-instrument"),
                bin_path("uvicorn"),
                "chatai.main:app",
                "--port",
                str(port),
                "--no-access-log",
            ],
            {**env, "OTEL_SERVICE_NAME": "chatai-backend"},
            port,
            tmp,
        )
        worker = None
        try:
            backend.wait_ready("/health/live")
            worker = AppProcess(
                [sys.executable, "-m", "chatai.worker"],
                {**env, "OTEL_SERVICE_NAME": "chatai-worker"},
                None,
                tmp,
            )
            sys.path.insert(0, str(EXAMPLE))
            try:
                workload = importlib.import_module("chatai.workload")
            finally:
                sys.path.remove(str(EXAMPLE))
            session = workload.Workload(backend.url)
            report = session.run()
            yield receiver, backend, session, report, schema
        finally:
            for process in (worker, backend):
                if process is not None:
                    process.signal()
                    try:
                        process.wait(20)
                    finally:
                        process.stop()
            client = redis.Redis(host="127.0.0.1", port=6379)
            client.delete(queue, *client.keys(f"{prefix}:*"))
            client.close()
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_workload_runs_as_scripted_on_postgresql(stack):
    receiver, _backend, _session, report, schema = stack
    assert report.failures == []
    with psycopg.connect(DSN) as conn:
        users = conn.execute(f'SELECT count(*) FROM "{schema}".users').fetchone()[0]
        processed = conn.execute(f'SELECT status FROM "{schema}".documents').fetchall()
    assert users == 2 and processed == [("processed",)]
    statements = receiver.wait_for_spans(
        1, lambda s: s.attributes.get("db.system.name") == "postgresql"
    )
    assert "$" not in statements[0].name  # the span names the operation, not the parameters


def test_the_document_job_crosses_from_backend_to_worker(stack):
    receiver, *_ = stack
    upload = receiver.wait_for_spans(
        1, lambda s: s.kind == SERVER and s.attributes.get("http.route") == "/documents"
    )[0]
    process = receiver.wait_for_spans(
        1, lambda s: s.kind == CONSUMER and s.trace_id == upload.trace_id
    )[0]
    assert process.resource["service.name"] == "chatai-worker"
    assert upload.attributes["user.id"] == process.attributes["user.id"]  # bind_user, carried


def test_a_burst_of_messages_hits_the_redis_rate_limit(stack):
    receiver, backend, session, _report, _schema = stack
    headers = {"Authorization": f"Bearer {session.tokens['alice']}"}
    dialog = httpx.post(f"{backend.url}/dialogs", json={"title": "burst"}, headers=headers)
    # The limit (5) counts per minute of the clock: the burst stays inside one minute.
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60 + 0.1)
    statuses = [
        httpx.post(
            f"{backend.url}/dialogs/{dialog.json()['dialog_id']}/messages",
            json={"text": f"message {n}"},
            headers=headers,
            timeout=10,
        ).status_code
        for n in range(7)
    ]
    # The script's 4 messages count when they fell in the same minute: then 1 passes, else 5.
    passed = statuses.count(200)
    assert passed in (1, 5) and statuses == [200] * passed + [429] * (7 - passed), statuses
    limited = receiver.wait_for_spans(
        7 - passed,
        lambda s: s.kind == SERVER and s.attributes.get("http.response.status_code") == 429,
    )
    trace_ids = {s.trace_id for s in limited}
    # the stock Redis instrumentation: db.system.name under the stable database conventions
    # the distro opts into; releases before they existed (0.61b0, the lowest supported) write
    # the old db.system
    assert receiver.wait_for_spans(
        2,
        lambda s: (
            s.trace_id in trace_ids
            and "redis" in (s.attributes.get("db.system.name"), s.attributes.get("db.system"))
        ),
    )
    receiver.wait_for_metrics(
        1,
        lambda p: (
            p.name == "chatai.business.events"
            and p.attributes["event.type"] == "rate_limit_exceeded"
            and p.value == 7 - passed
        ),
        timeout=20,
    )
