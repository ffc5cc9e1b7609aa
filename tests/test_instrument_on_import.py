"""Client libraries are instrumented when the app first imports them, not at start-up.

Real processes under ``opentelemetry-instrument`` (and ``import chatai_otel.setup``), real
Redis on 127.0.0.1:6379, the test receiver for what they export.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy  # imported here: activation for it runs at once

from chatai_otel.integrations.instrumentors import activate_on_import
from conftest import bin_path, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

CLIENT = 3  # SpanKind.CLIENT in OTLP

# Prints which libraries were imported before the app's own imports, then uses each.
APP = """
import json, sys
before = {name: name in sys.modules for name in ("redis", "httpx", "httpx2")}
{imports}
import httpx, redis
redis.Redis(host="127.0.0.1", port=6379).set("on-import-test", "1")
httpx.get("{url}")
from opentelemetry import trace
trace.get_tracer_provider().force_flush()
print(json.dumps(before))
"""


def _run(receiver, *, imports: str = "", instrument: bool = True) -> tuple[dict, str]:
    url = f"http://127.0.0.1:{receiver.http_port}/counts"
    code = textwrap.dedent(APP).replace("{imports}", imports).replace("{url}", url)
    command = [sys.executable, "-c", code]
    if instrument:
        command = [bin_path("opentelemetry-instrument"), *command]
    done = subprocess.run(
        command, env=telemetry_env(receiver), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), done.stdout + done.stderr


def _client_spans(receiver) -> dict[str, object]:
    spans = receiver.wait_for_spans(2, lambda s: s.kind == CLIENT)
    return {span.name: span for span in spans}


def test_libraries_are_not_imported_at_start_up_and_are_instrumented_on_import(receiver) -> None:
    before, output = _run(receiver)
    assert before == {"redis": False, "httpx": False, "httpx2": False}
    names = set(_client_spans(receiver))
    assert "SET" in names and "GET" in names, names
    assert "failed to start" not in output


def test_importing_the_instrumentor_module_first_still_instruments(receiver) -> None:
    """The app imports the stock instrumentor (to instrument one client by hand), which imports
    httpx from inside its own import: activation waits until that module is complete."""
    _before, output = _run(
        receiver, imports="from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor"
    )
    assert "GET" in _client_spans(receiver)
    assert "failed to start" not in output


def test_import_chatai_otel_setup_instruments_on_import_too(receiver) -> None:
    before, output = _run(receiver, imports="import chatai_otel.setup", instrument=False)
    assert before == {"redis": False, "httpx": False, "httpx2": False}
    names = set(_client_spans(receiver))
    assert "SET" in names and "GET" in names, names
    assert "failed to start" not in output


def test_activation_runs_at_once_for_an_imported_or_unknown_library() -> None:
    calls: list[str] = []
    activate_on_import("json-like-unknown", lambda: calls.append("unknown"))
    assert sqlalchemy.__name__ in sys.modules
    activate_on_import("sqlalchemy", lambda: calls.append("sqlalchemy"))
    assert calls == ["unknown", "sqlalchemy"]


def test_a_failing_activation_is_logged_not_raised_into_the_import(capsys) -> None:
    def broken() -> None:
        raise RuntimeError("instrumentor exploded")

    activate_on_import("sqlalchemy", broken)  # imported: activates now, inside this call
    assert "sqlalchemy instrumentation failed to start" in capsys.readouterr().out
