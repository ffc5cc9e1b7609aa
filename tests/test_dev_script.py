"""``./dev test`` on a fresh machine: it provisions what the suite needs, or stops at once.

``tools/provision.py`` is run for real with a PATH from which the tools (and ``apt-get``) are
hidden and with PostgreSQL/Redis looked for on closed ports: it must print one list of what
is missing with the command that installs it, and ``./dev test`` must not run a test then.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

ROOT = Path(__file__).resolve().parents[1]
PROVISION = ROOT / "tools" / "provision.py"
TOOLS = {
    "promtool", "amtool", "wrk", "redis-server", "pg_ctlcluster", "pg_createcluster", "chromium",
}  # fmt: skip


def _path_without(tmp_path: Path, hidden: set[str]) -> str:
    """One directory of links to every command on PATH except ``hidden``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name in hidden or target.exists() or target.is_symlink():
                continue
            target.symlink_to(entry.path)
    return str(bin_dir)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _provision(
    path: str, *args: str, user: str | None = None, python: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [python or sys.executable, str(PROVISION), *args]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(
        command,
        env={**os.environ, "PATH": path, "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_without_the_tools_and_without_apt_it_lists_everything_missing_and_how_to_install(
    tmp_path: Path,
) -> None:
    pg_port, redis_port = _closed_port(), _closed_port()
    path = _path_without(tmp_path, TOOLS | {"apt-get"})
    done = _provision(
        path, "test", "--postgres-port", str(pg_port), "--redis-port", str(redis_port)
    )
    assert done.returncode == 3, done.stderr
    report = done.stderr
    for line in (
        f"PostgreSQL on 127.0.0.1:{pg_port} (Debian package postgresql): not installed",
        f"Redis on 127.0.0.1:{redis_port} (Debian package redis-server): not installed",
        "promtool (",
        "amtool (",
        "wrk (",
        "chromium (the real browser of the frontend tests; Debian package chromium)",
        "install with: apt-get install chromium postgresql prometheus prometheus-alertmanager "
        "redis-server wrk  (no apt-get on PATH)",
    ):
        assert line in report, report
    assert report.count("\n  - ") == 6, report
    assert "installing" not in report  # it tried nothing


def test_a_user_who_cannot_install_is_told_to_use_sudo(tmp_path: Path) -> None:
    user = None
    if os.geteuid() == 0:  # root: the same run as an ordinary user, with the system Python
        user = "nobody"
        tmp_path = Path(tempfile.mkdtemp(prefix="provision-"))  # where nobody can read
        tmp_path.chmod(0o755)
    try:
        path = _path_without(tmp_path, {"wrk"})
        done = _provision(path, "bench", user=user, python="/usr/bin/python3" if user else None)
    finally:
        if user:
            shutil.rmtree(tmp_path)
    assert done.returncode == 3, done.stderr
    assert "wrk (the load generator of the web benchmarks; Debian package wrk)" in done.stderr
    assert "install with: sudo apt-get install wrk  (not root)" in done.stderr


def test_dev_test_stops_before_any_test_runs_when_something_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, {"promtool", "amtool", "apt-get"})}
    done = subprocess.run(
        [str(ROOT / "dev"), "test", "-q", "-p", "no:cacheprovider", "tests/test_dev_script.py"],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "install with: apt-get install prometheus prometheus-alertmanager" in done.stderr
    assert done.stdout == ""  # pytest never started: not a handful of failures mid-suite


def test_the_demo_needs_none_of_it(tmp_path: Path) -> None:
    path = _path_without(tmp_path, TOOLS | {"apt-get"})
    closed = str(_closed_port())
    done = _provision(path, "demo", "--postgres-port", closed, "--redis-port", closed)
    assert (done.returncode, done.stderr) == (0, "")


def test_on_a_provisioned_machine_a_second_run_finds_everything_and_says_nothing() -> None:
    assert shutil.which("promtool") and shutil.which("wrk"), "./dev test provisions these first"
    done = _provision(os.environ["PATH"], "test")
    assert (done.returncode, done.stderr) == (0, "")
