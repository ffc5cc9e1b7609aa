"""The scale-out tier's throughput: spans per second that tail-sampling gateways sustain.

Arms, interleaved over rounds, all ``otelcol-chatai`` with the bundled configs:

* ``1 gateway``   — two load processes (``benchmarks/span_blaster.py``: whole 3-span traces,
  5 % errors, 5 % slow) send straight to one gateway (``collector/gateway.yaml``: spanmetrics,
  tail sampling with the bundled policies, batch), which exports what it keeps to a counting
  receiver in Jaeger's place;
* ``2 gateways``  — the same load through two agents (``collector/agent-scaleout.yaml``,
  load-balancing by trace id with the dns resolver over /etc/hosts) to two gateways.

Each round runs the load for a warm-up and a measured window; the accepted-spans counters of
the gateways and the CPU time of every process are read at both ends of the window. Reported:
spans/s the gateways accepted, spans refused (memory limiter), the CPU each process used (in
cores), and spans per gateway CPU-second, the figure to size a tier by: the machine has
``os.cpu_count()`` cores, so the load processes, agents and gateways share them. Root is
needed (/etc/hosts).

    ./dev bench gateway [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.scaleout import (
    GATEWAY_ADDRESSES,
    Collector,
    free_port,
    gateway_port,
    hosts_entries,
    start_agent,
    start_gateway,
)

from benchmarks.receiver_process import receiver_counts, receiver_process

WARMUP_S = 3.0


def _blasters(endpoints: list[str], seconds: float) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.span_blaster", endpoint, str(seconds), str(n + 1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, endpoint in enumerate(endpoints)
    ]


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def _wait_healthy(collectors: list[Collector]) -> None:
    deadline = time.monotonic() + 60
    while not all(c.healthy() for c in collectors):
        if time.monotonic() > deadline:
            sys.exit("bench_gateway: the collectors did not start")
        time.sleep(0.2)


def _round(
    gateways: list[Collector], agents: list[Collector], endpoints: list[str], seconds: float
) -> dict[str, Any]:
    blasters = _blasters(endpoints, WARMUP_S + seconds + 1)
    time.sleep(WARMUP_S)
    everyone = gateways + agents

    def total(name_part: str) -> float:
        return sum(v for g in gateways for k, v in g.telemetry().items() if name_part in k)

    def snapshot() -> tuple[float, float, float, dict[str, float], float]:
        accepted = total("otelcol_receiver_accepted_spans")
        refused = total("otelcol_receiver_refused_spans")
        too_early = total("dropped_too_early")
        cpu = {c.name: c.cpu_seconds() for c in everyone}
        cpu["load"] = sum(_proc_cpu(b.pid) for b in blasters)
        return accepted, refused, too_early, cpu, time.monotonic()

    accepted0, refused0, early0, cpu0, t0 = snapshot()
    time.sleep(seconds)
    accepted1, refused1, early1, cpu1, t1 = snapshot()
    in_memory = total("traces_on_memory")
    rss = sum(_rss_bytes(g.process.pid) for g in gateways)
    reports = [json.loads(b.communicate(timeout=60)[0]) for b in blasters]
    wall = t1 - t0
    gateway_cpu = sum(cpu1[g.name] - cpu0[g.name] for g in gateways)
    return {
        "spans_per_s": (accepted1 - accepted0) / wall,
        "refused_per_s": (refused1 - refused0) / wall,
        "cores": {name: (cpu1[name] - cpu0[name]) / wall for name in cpu1},
        "per_gateway_core": (accepted1 - accepted0) / gateway_cpu if gateway_cpu else 0.0,
        "too_early_per_s": (early1 - early0) / wall,
        "bytes_per_trace": rss / in_memory if in_memory else 0.0,
        "traces_in_memory": in_memory,
        "failed": sum(r["failed"] for r in reports),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench gateway", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    hostname = f"chatai-otel-bench-{uuid.uuid4().hex[:8]}.test"
    port = gateway_port(GATEWAY_ADDRESSES[:2])
    results: dict[str, list[dict[str, Any]]] = {"1 gateway": [], "2 gateways": []}
    kept: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(hosts_entries(hostname, GATEWAY_ADDRESSES[:2]))
        single_receiver = stack.enter_context(receiver_process())
        tier_receiver = stack.enter_context(receiver_process())
        single = start_gateway(
            "single",
            GATEWAY_ADDRESSES[2],
            port,
            f"127.0.0.1:{single_receiver['grpc_port']}",
            folder,
        )
        tier = [
            start_gateway(
                f"gateway-{n}", address, port, f"127.0.0.1:{tier_receiver['grpc_port']}", folder
            )
            for n, address in enumerate(GATEWAY_ADDRESSES[:2])
        ]
        agent_ports = [free_port(), free_port()]
        agents = [
            start_agent(f"agent-{n}", agent_ports[n], hostname, port, folder) for n in range(2)
        ]
        everyone = [single, *tier, *agents]
        try:
            _wait_healthy(everyone)
            for round_number in range(args.rounds):
                arms = [
                    ("1 gateway", [single], [], [f"{GATEWAY_ADDRESSES[2]}:{port}"] * 2),
                    ("2 gateways", tier, agents, [f"127.0.0.1:{p}" for p in agent_ports]),
                ]
                for name, gateways, via, endpoints in (
                    arms[round_number % 2 :] + arms[: round_number % 2]
                ):
                    result = _round(gateways, via, endpoints, args.seconds)
                    results[name].append(result)
                    print(
                        f"round {round_number + 1} {name}: {result['spans_per_s']:.0f} spans/s, "
                        f"{result['per_gateway_core']:.0f} per gateway core-second",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(14)  # the last decisions (10 s wait) and batches leave
            kept["1 gateway"] = receiver_counts(single_receiver)["spans"]
            kept["2 gateways"] = receiver_counts(tier_receiver)["spans"]
        finally:
            for collector in everyone:
                collector.stop()
    _print_table(results, kept, args)


def _print_table(
    results: dict[str, list[dict[str, Any]]], kept: dict[str, int], args: argparse.Namespace
) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(
        f"\n{args.rounds} interleaved rounds, {args.seconds:g} s measured after {WARMUP_S:g} s "
        f"of warm-up; two load processes; {os.cpu_count()} cores shared by every process; "
        "medians over rounds."
    )
    print(
        "| arm | spans/s accepted | refused/s | traces/s dropped before their decision | "
        "spans per gateway CPU-second | CPU in cores: gateways / agents / load | "
        "traces held, RSS per held trace |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    for name, runs in results.items():
        cores: dict[str, list[float]] = {}
        for run in runs:
            for process, used in run["cores"].items():
                cores.setdefault(process, []).append(used)
        gateways = sum(
            statistics.median(v) for k, v in cores.items() if "gateway" in k or k == "single"
        )
        agents = sum(statistics.median(v) for k, v in cores.items() if k.startswith("agent"))
        load = statistics.median(cores["load"])
        print(
            f"| {name} | {median(name, 'spans_per_s'):.0f} | {median(name, 'refused_per_s'):.0f} "
            f"| {median(name, 'too_early_per_s'):.0f} "
            f"| {median(name, 'per_gateway_core'):.0f} | {gateways:.2f} / {agents:.2f} / "
            f"{load:.2f} | {median(name, 'traces_in_memory'):.0f}, "
            f"{median(name, 'bytes_per_trace') / 1024:.1f} KiB |"
        )
    for name, runs in results.items():
        failed = sum(r["failed"] for r in runs)
        print(
            f"\n{name}: {kept.get(name, 0)} spans kept by the policies and exported; "
            f"{failed} spans in requests the load processes saw fail",
            end="",
        )
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
