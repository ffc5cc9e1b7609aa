"""The logging pipeline in real processes exporting to the real OTLP receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from conftest import APPS, bin_path, free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_no_line_twice_stdout_lines_and_otlp_records_equal_calls(receiver):
    count = 300
    done = subprocess.run(
        [sys.executable, str(APPS / "log_app.py"), str(count)],
        env=telemetry_env(receiver, OTEL_SERVICE_NAME="log-app"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "LOG-APP-DONE" in done.stdout
    lines = [line for line in json_lines(done.stdout) if line["message"] == "unit.done"]
    assert len(lines) == count
    assert sorted(line["n"] for line in lines) == list(range(count))

    records = receiver.wait_for_logs(count, lambda r: r.body == "unit.done", timeout=10)
    time.sleep(1.0)  # a duplicate would have arrived by now
    records = [r for r in receiver.logs() if r.body == "unit.done"]
    assert len(records) == count
    assert sorted(r.attributes["n"] for r in records) == list(range(count))

    # the same trace on stdout and in OTLP, one trace per unit of work
    trace_of = {line["n"]: (line["trace_id"], line["span_id"]) for line in lines}
    assert len({t for t, _ in trace_of.values()}) == count
    for record in records:
        assert (record.trace_id, record.span_id) == trace_of[record.attributes["n"]]
        assert record.attributes["request_id"] == f"req-{record.attributes['n']}"

    # structlog and stdlib lines: the same keys
    by_kind = {line["kind"]: set(line) for line in lines}
    assert by_kind["structlog"] == by_kind["stdlib"]

    # the SDK's own loggers are printed (stderr), never exported
    assert "internal diagnostic" in done.stderr
    assert not [r for r in receiver.logs() if r.body == "internal diagnostic"]
    assert "internal diagnostic" not in done.stdout


@pytest.mark.parametrize("uvicorn_access", [False, True], ids=["default", "uvicorn-access-on"])
def test_uvicorn_lines_come_out_once_in_the_same_shape_and_are_exported_once(
    receiver, start_app, uvicorn_access
):
    """uvicorn with its defaults (access log on): one access line per request, ours; with
    CHATAI_OTEL_UVICORN_ACCESS_LOG=true uvicorn's own line too, once, its query scrubbed."""
    port = free_port()
    args = [
        bin_path("opentelemetry-instrument"),
        bin_path("uvicorn"),
        "basic_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = telemetry_env(receiver, CHATAI_OTEL_UVICORN_ACCESS_LOG=str(uvicorn_access).lower())
    app = start_app(args, env, port)
    app.wait_ready()
    assert httpx.get(f"{app.url}/work/1?sig=signedsecret123&page=2").status_code == 200
    receiver.wait_for_logs(1, lambda r: r.body == "Application startup complete.")
    receiver.wait_for_logs(
        1, lambda r: r.body == "HTTP_REQUEST_COMPLETE" and r.attributes["path"] == "/work/1"
    )
    if uvicorn_access:
        receiver.wait_for_logs(1, lambda r: r.scope == "uvicorn.access" and "/work/1" in r.body)
    time.sleep(1.0)
    lines = json_lines(app.stdout())
    startup = [line for line in lines if line["message"] == "Application startup complete."]
    assert len(startup) == 1
    assert startup[0]["logger"] == "uvicorn.error"
    assert {"timestamp", "level", "logger", "message", "module", "function", "line"} <= set(
        startup[0]
    )
    assert "Application startup complete" not in app.stderr()
    exported = [r for r in receiver.logs() if r.body == "Application startup complete."]
    assert len(exported) == 1
    ours = [line for line in lines if line["message"] == "HTTP_REQUEST_COMPLETE"]
    assert [line["path"] for line in ours if line["route"] == "/work/{item}"] == ["/work/1"]
    theirs = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(theirs) == (2 if uvicorn_access else 0)  # the readiness probe's and ours
    theirs = [line for line in theirs if "/work/1" in line["message"]]
    access = [r for r in receiver.logs() if r.scope == "uvicorn.access" and "/work/1" in r.body]
    if uvicorn_access:
        assert len(theirs) == 1 and len(access) == 1
        assert "/work/1?sig=[REDACTED]&page=2" in theirs[0]["message"]
    else:
        assert theirs == [] and access == []
    assert "signedsecret123" not in app.stdout() + app.stderr() + repr(receiver.logs())
    work = [line for line in lines if line["message"] == "work.done"]
    assert len(work) == 1 and len([r for r in receiver.logs() if r.body == "work.done"]) == 1
