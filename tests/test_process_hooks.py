"""Fork, exit and SIGTERM hooks live in one registry (chatai_otel.process_hooks): nothing
else registers with the OS, and a real fork runs them in the documented order."""

from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatai_otel import process_hooks

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chatai_otel"
REGISTRY = PACKAGE / "process_hooks.py"


def test_only_the_registry_registers_fork_exit_and_signal_hooks():
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == REGISTRY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("register_at_fork", "register"):
                owner = node.value
                if isinstance(owner, ast.Name) and (
                    (owner.id == "os" and node.attr == "register_at_fork")
                    or (owner.id == "atexit" and node.attr == "register")
                ):
                    found.append(
                        f"{path.relative_to(PACKAGE)}:{node.lineno} {owner.id}.{node.attr}"
                    )
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "signal"
                and node.args
                and isinstance(node.args[0], ast.Attribute)
                and node.args[0].attr == "SIGTERM"
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} signal.signal(SIGTERM)")
    assert not found, found


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork exists on Linux, where CI runs")
def test_a_real_fork_runs_the_hooks_in_order_skips_dead_owners_and_survives_a_raising_hook():
    calls: list[str] = []

    class Owner:
        def __init__(self, name: str) -> None:
            self.name = name

        def child(self) -> None:
            calls.append(f"child:{self.name}")

        def before(self) -> None:
            calls.append(f"before:{self.name}")

        def parent(self) -> None:
            calls.append(f"parent:{self.name}")

    def boom() -> None:
        raise RuntimeError("a broken hook")

    kept = Owner("kept")
    gone = Owner("gone")
    process_hooks.on_fork_of(gone, after_in_child="child")
    process_hooks.on_fork(after_in_child=lambda: calls.append("child:first"))
    process_hooks.on_fork(after_in_child=boom, before=boom)
    process_hooks.on_fork_of(
        kept, before="before", after_in_parent="parent", after_in_child="child"
    )
    del gone
    gc.collect()

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what ran in it, then leaves at once
        os.close(read)
        os.write(write, json.dumps(calls).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        in_child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert in_child[-2:] == ["child:first", "child:kept"]  # registration order, no "gone"
    assert "before:kept" in in_child  # the before hooks ran in the parent, pre-fork
    assert calls[-2:] == ["before:kept", "parent:kept"]


def test_exit_hooks_run_once_in_reverse_order_and_sigterm_flushes_then_dies_of_it(tmp_path):
    script = f"""
import os, signal, sys
from chatai_otel import process_hooks
log = open({str(tmp_path / "log")!r}, "a")
process_hooks.at_exit(lambda: print("exit:first", file=log, flush=True))
process_hooks.at_exit(lambda: print("exit:second", file=log, flush=True))
process_hooks.on_sigterm(lambda: print("sigterm flush", file=log, flush=True))
if sys.argv[1] == "exit":
    sys.exit(0)
os.kill(os.getpid(), signal.SIGTERM)
"""
    done = subprocess.run([sys.executable, "-c", script, "exit"], timeout=30)
    assert done.returncode == 0
    assert (tmp_path / "log").read_text().splitlines() == ["exit:second", "exit:first"]
    (tmp_path / "log").unlink()
    done = subprocess.run([sys.executable, "-c", script, "sigterm"], timeout=30)
    assert done.returncode == -15  # died of SIGTERM, as without the hook
    assert (tmp_path / "log").read_text().splitlines() == ["sigterm flush"]
