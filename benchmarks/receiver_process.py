"""The counting OTLP receiver (``python -m chatai_otel.testing.receiver``) in a process of its own,
for every benchmark: its work stays off the measured interpreter."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def receiver_process(prefix: Sequence[str] = ()) -> Iterator[dict[str, int]]:
    """The receiver's ``{"grpc_port", "http_port"}``; ``prefix`` wraps the command (taskset)."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "chatai_otel.testing.receiver"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


def receiver_counts(ports: dict[str, int]) -> dict[str, int]:
    """What the receiver has decoded so far (spans, logs, metric points, requests)."""
    url = f"http://127.0.0.1:{ports['http_port']}/counts"
    with urllib.request.urlopen(url, timeout=5) as answer:
        counts: dict[str, int] = json.loads(answer.read())
        return counts
