"""``chatai-otel demo --browser``: the frontend's first steps clicked through in Debian's
Chromium before the workload, the browser's telemetry through the backend's tunnel, and the
waterfall of one trace from the browser through the backend to the worker (real Redis)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chatai_otel.cli.view import Collected, group_traces
from chatai_otel.export import otlp_json as otlpjson
from conftest import bin_path, free_port

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


def test_demo_browser_shows_one_trace_from_the_browser_through_the_backend_to_the_worker(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env.pop("REDIS_URL", None)  # the demo finds the suite's Redis on 127.0.0.1:6379
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # no collector: files
    done = subprocess.run(
        [bin_path("chatai-otel"), "demo", "--browser", "--traces", "5"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "clicking through it in headless Chromium" in output, output[-4000:]
    assert "queued as job" in output, output[-4000:]  # the page's status after the upload
    assert "chatai-frontend -> chatai-backend -> chatai-worker" in output, output[-6000:]

    collected = Collected()
    for line in (tmp_path / "telemetry" / "traces.jsonl").read_text().splitlines():
        collected.add(*otlpjson.decode(line))
    crossing = [t for t in group_traces(collected.spans()) if t.root.name == "upload document"]
    assert crossing and crossing[0].services == [
        "chatai-frontend",
        "chatai-backend",
        "chatai-worker",
    ]
    page_loads = [s for s in collected.spans() if s.name == "documentLoad"]
    assert page_loads and page_loads[0].resource["service.name"] == "chatai-frontend"
