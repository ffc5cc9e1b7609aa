"""The test receiver decodes what real exporters send, and agrees with an independent collector.

rotel (PyPI package `rotel`) ships a Rust OTLP collector binary. We send a
worker's telemetry to rotel, which prints what *it* decoded and forwards the
data to our receiver; both must see the same spans and log records.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rotel

from conftest import APPS, free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

ROTEL_AGENT = Path(rotel.__file__).parent / "rotel-agent"


def run_worker(env: dict[str, str], jobs: int) -> str:
    done = subprocess.run(
        [sys.executable, str(APPS / "worker.py"), str(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_receiver_decodes_both_transports(receiver, protocol, compression):
    stdout = run_worker(
        telemetry_env(receiver, protocol, OTEL_EXPORTER_OTLP_COMPRESSION=compression), 3
    )
    spans = receiver.wait_for_spans(3, lambda s: s.name == "job")
    assert sorted(s.attributes["job.number"] for s in spans) == [0, 1, 2]
    logs = receiver.wait_for_logs(3, lambda r: r.body == "job.done")
    assert {r.trace_id for r in logs} == set(re.findall(r'"trace_id":"([0-9a-f]{32})"', stdout))
    assert receiver.counts()["traces_requests"] >= 1


def test_receiver_agrees_with_rotel(receiver, tmp_path):
    grpc_port, http_port = free_port(), free_port()
    output = tmp_path / "rotel.out"
    with output.open("w") as sink:
        agent = subprocess.Popen(
            [
                str(ROTEL_AGENT),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                receiver.grpc_endpoint,
                "--debug-log",
                "traces",
                "--debug-log",
                "logs",
                "--debug-log-verbosity",
                "detailed",
                "--pid-file",
                str(tmp_path / "rotel.pid"),
                "--log-file",
                str(tmp_path / "rotel.log"),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while "Starting Rotel" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        env = telemetry_env(None, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{grpc_port}")
        run_worker(env, 5)
        spans = receiver.wait_for_spans(5, lambda s: s.name == "job")
        logs = receiver.wait_for_logs(5, lambda r: r.body == "job.done")
        time.sleep(0.5)
        printed = output.read_text()
    finally:
        agent.terminate()
        agent.wait(10)

    rotel_trace_ids = set(re.findall(r"Trace ID\s*:\s*([0-9a-f]{32})", printed))
    rotel_span_ids = set(re.findall(r"\bID\s*:\s*([0-9a-f]{16})\b", printed))
    assert {s.trace_id for s in spans} == rotel_trace_ids
    assert {s.span_id for s in spans} <= rotel_span_ids
    assert {r.span_id for r in logs} == {s.span_id for s in spans}
    assert printed.count("Name           : job") == 5
    assert printed.count("Body: Str(job.done)") == 5
    for span in spans:
        assert f"job.number: Int({span.attributes['job.number']})" in printed
        assert span.resource["service.instance.id"] in printed
