"""``./dev test`` on a fresh machine: it says what to install, not only what failed.

The README's second command must be all a newcomer needs; the collector bundle's tests need
promtool and amtool (Debian packages), which ``.ci/run`` installs but a fresh machine lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = "tests/test_propagation.py"
HINT = "apt-get install prometheus prometheus-alertmanager"


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


def _dev_test_stderr(path: str) -> str:
    env = {**os.environ, "PATH": path}
    done = subprocess.run(
        [str(ROOT / "dev"), "test", "--collect-only", "-q", "-p", "no:cacheprovider", TARGET],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stderr


def test_dev_test_says_how_to_install_missing_promtool_and_amtool(tmp_path: Path) -> None:
    stderr = _dev_test_stderr(_path_without(tmp_path, {"promtool", "amtool"}))
    assert "promtool amtool not found" in stderr
    assert HINT in stderr


def test_dev_test_is_quiet_when_the_tools_are_there() -> None:
    if not (shutil.which("promtool") and shutil.which("amtool")):
        pytest.fail(f"promtool/amtool are not installed: {HINT} (.ci/run does it)")
    stderr = _dev_test_stderr(os.environ.get("PATH", ""))
    assert HINT not in stderr
