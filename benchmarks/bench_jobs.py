"""µs per job for carrying the trace context through a Redis list (chatai_otel.propagation).

Arms, interleaved round by round in one child process configured with
``import chatai_otel.setup`` and exporting over OTLP/gRPC to a receiver in its
own process (``python -m chatai_otel.testing.receiver``), against the real Redis at
127.0.0.1:6379 (a list of its own, deleted at the end):

* ``bare``: LPUSH of the JSON job, then BRPOP and ``json.loads`` — no telemetry
  of ours (the stock Redis instrumentation is suppressed in every arm, so only
  the helpers differ);
* ``propagated``: the same inside ``producing(job, queue=...)`` (a PRODUCER span,
  the context injected into the job) and ``consuming(job, queue=...)`` (a
  CONSUMER span, its parent extracted from the job, the log context bound);
* ``helpers only``: ``producing`` + ``consuming`` around an in-memory list, to
  isolate what the helpers cost without the Redis round trips.

The producer side (enqueue) and the consumer side (dequeue and handle) are timed
separately per job with ``perf_counter_ns``; all enqueue calls of a round run
inside one request span, as in the API.

``./dev bench jobs [--jobs N] [--rounds R]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.receiver_process import receiver_counts, receiver_process

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("bare", "propagated", "helpers only")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench jobs")
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs per arm per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args([a for a in argv if a.startswith("--")] if argv else [])
    if args.child:
        _child(args)
        return
    _parent(args)


def _parent(args: argparse.Namespace) -> None:
    with receiver_process() as ports:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc_port']}",
                "OTEL_SERVICE_NAME": "bench-jobs",
                "CHATAI_OTEL_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT),
            }
        )
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_jobs", "--child",
             f"--jobs={args.jobs}", f"--rounds={args.rounds}"],
            env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(done.stderr[-4000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        time.sleep(1.0)
        counts = receiver_counts(ports)
    _table(result, counts, args)


def _table(result: dict[str, Any], counts: dict[str, int], args: argparse.Namespace) -> None:
    base = result["bare"]
    print(
        f"{args.jobs:,} jobs per arm per round, {args.rounds} rounds interleaved; "
        f"load average {result['load'][0]:.2f}-{result['load'][1]:.2f} (2 cores, shared)\n"
    )
    print(
        "| arm | enqueue median µs | enqueue p99 µs | dequeue+handle median µs | dequeue p99 µs "
        "| both, ÷ bare |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for arm in ARMS:
        row = result[arm]
        both = row["enqueue"][0] + row["dequeue"][0]
        bare_both = base["enqueue"][0] + base["dequeue"][0]
        print(
            f"| {arm} | {row['enqueue'][0]:.1f} | {row['enqueue'][1]:.1f} | "
            f"{row['dequeue'][0]:.1f} | {row['dequeue'][1]:.1f} | {both / bare_both:.2f}x |"
        )
    print(
        f"\nDelivered to the receiver: {counts['spans']:,} spans (the two helper arms make "
        f"{2 * 2 * args.jobs * args.rounds:,} PRODUCER and CONSUMER spans; the rest are the "
        "request spans)."
    )


# --- the child: the arms ------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    import chatai_otel.setup  # noqa: F401, I001  (first, as in a worker)

    import redis
    from opentelemetry import trace
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    from chatai_otel import context
    from chatai_otel.integrations.jobs import consuming, producing

    client = redis.Redis(host="127.0.0.1", port=6379)
    key = f"bench:jobs:{uuid.uuid4().hex}"
    tracer = trace.get_tracer("bench")
    samples: dict[str, dict[str, list[int]]] = {a: {"enqueue": [], "dequeue": []} for a in ARMS}
    loads = [os.getloadavg()[0]]
    clock = time.perf_counter_ns

    def run(arm: str) -> None:
        enqueue, dequeue = samples[arm]["enqueue"], samples[arm]["dequeue"]
        memory: list[str] = []
        with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER):
            context.bind(request_id="bench-request", user_id=7)
            for number in range(args.jobs):
                job: dict[str, Any] = {"id": number, "type": "work", "document_id": number}
                started = clock()
                if arm == "bare":
                    client.lpush(key, json.dumps(job))
                elif arm == "propagated":
                    with producing(job, queue=key):
                        client.lpush(key, json.dumps(job))
                else:
                    with producing(job, queue=key):
                        memory.append(json.dumps(job))
                enqueue.append(clock() - started)
            context.unbind("request_id", "user_id")
        for _ in range(args.jobs):
            started = clock()
            if arm == "helpers only":
                job = json.loads(memory.pop(0))
            else:
                _key, raw = client.brpop([key], timeout=10)
                job = json.loads(raw)
            if arm == "bare":
                job["document_id"] += 1
            else:
                with consuming(job, queue=key):
                    job["document_id"] += 1
            dequeue.append(clock() - started)

    try:
        with suppress_instrumentation():  # the stock Redis spans are the same in every arm
            run("bare")  # warm-up round, discarded
            for side in samples["bare"].values():
                side.clear()
            for _ in range(args.rounds):
                for arm in ARMS:
                    run(arm)
                loads.append(os.getloadavg()[0])
    finally:
        client.delete(key)
        client.close()

    def figures(values: list[int]) -> tuple[float, float]:
        ordered = sorted(values)
        return (
            statistics.median(ordered) / 1000,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
        )

    result: dict[str, Any] = {
        arm: {side: figures(values) for side, values in sides.items()}
        for arm, sides in samples.items()
    }
    result["load"] = (min(loads), max(loads))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
