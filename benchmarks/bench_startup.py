"""Start-up time and idle memory: what the telemetry adds before the first request is served.

Arms, interleaved round by round, each a fresh process on loopback exporting over OTLP/gRPC to
a counting receiver in its own process:

* ``bare``: ``uvicorn web_app:app`` (bench_web's app: no telemetry at all);
* ``chatai-otel``: ``opentelemetry-instrument uvicorn web_app:app`` with our distro;
* ``stock``: the same under the stock ``opentelemetry-distro`` (its own virtualenv);
* ``example bare``: the example backend (``examples/chatai``) under plain uvicorn with
  ``OTEL_SDK_DISABLED=true`` (its code still calls chatai-otel's API, which is then a no-op);
* ``example``: the example backend under ``opentelemetry-instrument uvicorn``.

Measured per start: seconds from ``Popen`` to the first answered request (polled every
10 ms), and the server's resident memory (``VmRSS``) after it has answered 200 requests and
sat idle for 2 s. Medians of the rounds, and the difference to the bare arm of the same app.

``./dev bench startup [--rounds R]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.bench_web import (
    HERE,
    ROOT,
    VENV_BIN,
    _free_port,
    _server_env,
    ensure_stock_venv,
)
from benchmarks.receiver_process import receiver_process

EXAMPLE = ROOT / "examples" / "chatai"
ARMS = ("bare", "chatai-otel", "stock", "example bare", "example")
BASELINE = {"chatai-otel": "bare", "stock": "bare", "example": "example bare"}


def _command(arm: str, port: int, stock_bin: Path) -> tuple[list[str], str, str]:
    """(argv, app module, ready path) of one arm."""
    uvicorn = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if arm == "bare":
        return [str(VENV_BIN / "uvicorn"), "web_app:app", *uvicorn], "web", "/ping"
    if arm == "chatai-otel":
        instrument = [str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "uvicorn")]
        return [*instrument, "web_app:app", *uvicorn], "web", "/ping"
    if arm == "stock":
        instrument = [str(stock_bin / "opentelemetry-instrument"), str(stock_bin / "uvicorn")]
        return [*instrument, "web_app:app", *uvicorn], "web", "/ping"
    if arm == "example bare":
        return [str(VENV_BIN / "uvicorn"), "chatai.main:app", *uvicorn], "example", "/health/live"
    instrument = [str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "uvicorn")]
    return [*instrument, "chatai.main:app", *uvicorn], "example", "/health/live"


def _env(arm: str, ports: dict[str, int], work: Path) -> dict[str, str]:
    if arm in ("bare", "chatai-otel", "stock"):
        web_arm = {"bare": "bare", "chatai-otel": "chatai", "stock": "stock"}[arm]
        return _server_env(web_arm, ports, f"sqlite:///{work / 'bench.db'}", "bench_messages")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env.update(
        {
            "PYTHONPATH": str(EXAMPLE),
            "DATABASE_URL": f"sqlite:///{work / 'chatai.db'}",
            "OTEL_SERVICE_NAME": "bench-startup-example",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc_port']}",
            "CHATAI_OTEL_LOG_STDOUT": "false",
            "CHATAI_OTEL_STORE_JOURNAL_DIR": str(work / "journal"),
        }
    )
    env.pop("REDIS_URL", None)
    if arm == "example bare":
        env["OTEL_SDK_DISABLED"] = "true"
    return env


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _one_start(arm: str, ports: dict[str, int], stock_bin: Path) -> tuple[float, float]:
    port = _free_port()
    argv, app, path = _command(arm, port, stock_bin)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        cwd = str(HERE if app == "web" else work)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, env=_env(arm, ports, work), cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}{path}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{arm}: the server exited with {proc.returncode}")
                try:
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    time.sleep(0.01)
                if time.monotonic() - started > 90:
                    raise RuntimeError(f"{arm}: not ready in 90 s")
            ready = time.monotonic() - started
            for _ in range(200):
                with urllib.request.urlopen(url, timeout=5) as answer:
                    answer.read()
            time.sleep(2.0)
            rss = _rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return ready, rss


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench startup")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args([a for a in argv if a.startswith("--")] if argv else [])
    stock_bin = ensure_stock_venv()
    results: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ARMS}
    with receiver_process() as ports:
        for _round in range(args.rounds):
            for arm in ARMS:
                results[arm].append(_one_start(arm, ports, stock_bin))
    ready = {arm: statistics.median(r[0] for r in results[arm]) for arm in ARMS}
    rss = {arm: statistics.median(r[1] for r in results[arm]) for arm in ARMS}
    print(
        f"{args.rounds} interleaved rounds; start-up = Popen to the first answered request; "
        "RSS after 200 requests and 2 s idle\n"
    )
    print("| arm | start-up s | vs bare | idle RSS MB | vs bare |")
    print("|---|---:|---:|---:|---:|")
    for arm in ARMS:
        base = BASELINE.get(arm)
        dt = f"+{ready[arm] - ready[base]:.2f} s" if base else "-"
        dm = f"+{rss[arm] - rss[base]:.1f} MB" if base else "-"
        print(f"| {arm} | {ready[arm]:.2f} | {dt} | {rss[arm]:.1f} | {dm} |")
