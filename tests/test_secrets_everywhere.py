"""Property: a generated secret planted on any path never reaches stdout, OTLP or the store.

The paths: log fields at any depth, stdlib ``extra`` and %-args, message and exception text,
business event data, ``track_error`` context, span attributes, events and links on internal
(SDK), server (ours) and client (httpx) spans, request headers, query strings (signed URLs),
context bound our way and the structlog way. Secrets come by key name and by value shape.
The examples run in a process of their own (tests/apps/secrets_everywhere.py: real uvicorn,
real OTLP receiver, the store on real PostgreSQL); 1000 of them in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import APPS, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

EXAMPLES = 1000 if os.environ.get("CI") else 300


def test_no_generated_secret_leaves_the_process_on_any_path(tmp_path: Path) -> None:
    schema = f"secrets_{uuid.uuid4().hex[:10]}"
    stdout_file = tmp_path / "stdout.jsonl"
    try:
        with stdout_file.open("wb") as stdout:
            done = subprocess.run(
                [
                    sys.executable,
                    str(APPS / "secrets_everywhere.py"),
                    str(EXAMPLES),
                    schema,
                    str(stdout_file),
                ],
                env=telemetry_env(None),
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
                timeout=900,
                cwd=str(APPS),
            )
        assert done.returncode == 0, done.stderr[-6000:]
        assert f"EXAMPLES {EXAMPLES}" in done.stderr
    finally:
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
