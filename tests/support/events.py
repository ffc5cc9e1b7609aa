"""Running the scenarios of ``tests/apps/events_app.py`` (business events, errors, @track and
AI calls in a real process) and reading what they printed and exported."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from chatai_otel.testing.receiver import OTLPReceiver, ReceivedMetricPoint
from conftest import APPS, telemetry_env

APP = APPS / "events_app.py"


def run_scenario(
    receiver: OTLPReceiver | None, scenario: str, *args: str, timeout: float = 120, **env: str
) -> tuple[Any, str]:
    """Run one scenario of tests/apps/events_app.py; return (its result, its stdout)."""
    done = subprocess.run(
        [sys.executable, str(APP), scenario, *args],
        env=telemetry_env(receiver, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(APPS),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith('{"result"')]
    assert lines, done.stderr[-4000:]
    return json.loads(lines[-1])["result"], done.stdout


def last_points(receiver: OTLPReceiver, name: str) -> dict[tuple, ReceivedMetricPoint]:
    """The latest point per attribute set of one metric (cumulative points repeat per export)."""
    latest: dict[tuple, ReceivedMetricPoint] = {}
    for point in receiver.metrics():
        if point.name == name:
            key = tuple(sorted(point.attributes.items()))
            if key not in latest or point.time_ns >= latest[key].time_ns:
                latest[key] = point
    return latest


def stdout_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
