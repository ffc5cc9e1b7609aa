"""Shared fixtures: a real OTLP receiver on loopback and real app processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tools.scaleout import free_port as scaleout_free_port

from chatai_otel.testing.receiver import OTLPReceiver
from support.logs import make_pipeline  # noqa: F401  (a fixture, for test_logs*.py)

TESTS = Path(__file__).parent
APPS = TESTS / "apps"
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``unit`` on every test not marked ``e2e``: ``./dev test -m unit`` is the quick loop (in
    this process, with the real receiver, PostgreSQL and Redis); ``e2e`` tests start other
    processes (apps, servers, builds, a browser)."""
    for item in items:
        if item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    """A real OTLP receiver (gRPC and HTTP) on free loopback ports."""
    with OTLPReceiver() as running:
        yield running


def free_port() -> int:
    """A free port, never the same twice in the test process (see tools.scaleout.free_port)."""
    return scaleout_free_port()


def wait_until(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.5) -> Any:
    """``check()``'s first truthy result; AssertionError with the last one after ``timeout``."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s; last result: {result!r}"[:3000])


def drop_table(table: str) -> None:
    """Drop one table of the test database (PostgreSQL on loopback), if it is there."""
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def cors_preflight(url: str, origin: str, request_headers: str = "") -> httpx.Response:
    """A browser's CORS preflight for a POST to ``url`` from ``origin``."""
    headers = {"origin": origin, "access-control-request-method": "POST"}
    if request_headers:
        headers["access-control-request-headers"] = request_headers
    return httpx.options(url, headers=headers, timeout=5)


def telemetry_env(
    receiver: OTLPReceiver | None, protocol: str = "grpc", **extra: str
) -> dict[str, str]:
    """A child environment exporting fast to ``receiver`` (or to a closed port when None)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "CHATAI_OTEL_"))
    }
    env.update(
        {
            "PYTHONPATH": str(APPS),
            "PYTHONUNBUFFERED": "1",
            "OTEL_SERVICE_NAME": "test-app",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "CHATAI_OTEL_LOG_FORMAT": "json",
        }
    )
    if receiver is not None:
        env.update(receiver.env(protocol))
    else:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    env.update(extra)
    return env


class AppProcess:
    """A real server process (uvicorn, gunicorn, ...) with its output kept in files."""

    def __init__(self, args: list[str], env: dict[str, str], port: int | None, tmp: Path) -> None:
        self.port = port
        self.stdout_path = tmp / f"stdout-{port}.log"
        self.stderr_path = tmp / f"stderr-{port}.log"
        self._stdout = self.stdout_path.open("wb")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=self._stdout,
            stderr=self._stderr,
            cwd=str(APPS),
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str = "/ping", timeout: float = 90.0) -> None:
        """Until ``path`` answers. Generous: at load 10 on two cores, the start-up of
        ``opentelemetry-instrument`` plus spawned workers alone was seen to take over 30 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s: {self.output()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._stdout.close()
        self._stderr.close()

    def stdout(self) -> str:
        self._stdout.flush()
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"\n--- stdout ---\n{self.stdout()[-4000:]}\n--- stderr ---\n{self.stderr()[-4000:]}"


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[object]:
    """Start a server process: ``start_app(args, env, port)``; all are killed after the test."""
    started: list[AppProcess] = []

    def start(args: list[str], env: dict[str, str], port: int | None = None) -> AppProcess:
        app = AppProcess(args, env, port, tmp_path)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def bin_path(name: str) -> str:
    """A console script of this virtualenv (opentelemetry-instrument, uvicorn, gunicorn)."""
    return str(VENV_BIN / name)
