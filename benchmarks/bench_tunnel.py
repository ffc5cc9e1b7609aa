"""What the browser telemetry tunnel costs the backend's own requests.

One server, ``opentelemetry-instrument uvicorn benchmarks.tunnel_app:app`` (a ``/ping`` route
and :func:`chatai_otel.integrations.browser_tunnel.mount_browser_tunnel`, its rate limit lifted), on CPU 0,
exporting to a counting receiver in its own process. Arms, interleaved round by round:

* ``alone``: ``wrk`` on ``/ping``, nothing else;
* ``+ N exports/s``: the same while a poster process sends N browser export requests per
  second (30 spans each, OTLP/HTTP protobuf, like a page's batch) to ``/otlp/v1/traces``.

Reported per arm: ``/ping`` requests/s, p50 and p99 (medians of the rounds) and their ratio to
``alone``; what the poster sent and what the tunnel answered; spans that reached the receiver.
Also, in this process: µs of CPU per browser span for decoding and rewriting a request
(forcing ``service.name``, scrubbing every value), protobuf and JSON.

``./dev bench tunnel [--rounds R] [--seconds S]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_web import VENV_BIN, _free_port, _taskset, run_wrk, wait_ready
from benchmarks.receiver_process import receiver_counts, receiver_process

ROOT = Path(__file__).resolve().parent.parent
RATES = (0, 20, 100)  # browser export requests per second posted beside the load
SPANS_PER_REQUEST = 30


def browser_request(index: int, spans: int = SPANS_PER_REQUEST, distinct: bool = False) -> Any:
    """An export request like a page's batch: fetch spans with URLs, the same ones in every
    request (pages fetch the same routes), or with ``distinct`` a URL of its own per span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [kv("service.name", "chatai-frontend"), kv("session.id", f"session-{index}"),
         kv("telemetry.sdk.language", "webjs"), kv("browser.language", "en-US")]
    )  # fmt: skip
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "@opentelemetry/instrumentation-fetch"
    trace_id = index.to_bytes(16, "big")
    for n in range(spans):
        span = scope.spans.add()
        span.trace_id, span.span_id = trace_id, (n + 1).to_bytes(8, "big")
        span.name, span.kind = "POST", 3
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + n * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + 50_000_000
        span.attributes.extend(
            [kv("http.request.method", "POST"),
             kv("url.full", f"http://127.0.0.1:8000/dialogs/{index * spans * distinct + n}"
                            "/messages?page=2"),
             kv("http.response.status_code", "200"), kv("user_agent.original", "Mozilla/5.0")]
        )  # fmt: skip
        event = span.events.add()
        event.name, event.time_unix_nano = "fetchStart", span.start_time_unix_nano
    return request


def _post(url: str, rate: float, seconds: float) -> None:
    """The poster process: ``rate`` requests/s for ``seconds``; prints what was answered."""
    import httpx

    bodies = [browser_request(i + 1).SerializeToString() for i in range(50)]
    statuses: dict[str, int] = {}
    sent = 0
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        while (now := time.monotonic() - started) < seconds:
            due = sent / rate
            if due > now:
                time.sleep(due - now)
            answer = client.post(
                url,
                content=bodies[sent % len(bodies)],
                headers={"content-type": "application/x-protobuf"},
            )
            statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
            sent += 1
    print(json.dumps({"sent": sent, "statuses": statuses}))


def _micro(rounds: int = 15, requests: int = 50) -> dict[str, float]:
    """µs per span for decode + rewrite, protobuf and JSON (median of ``rounds``); URLs
    repeated across requests as pages repeat them, and all distinct (the worst case)."""
    from chatai_otel.export import otlp_json as otlpjson
    from chatai_otel.integrations.browser_tunnel import decode_request, rewrite_request

    def bodies_of(distinct: bool, encode: Any, first: int = 1) -> list[bytes]:
        return [encode(browser_request(first + i, distinct=distinct)) for i in range(requests)]

    def as_json(request: Any) -> bytes:
        return otlpjson.encode(request).encode()

    def proto(request: Any) -> bytes:
        return bytes(request.SerializeToString())

    arms: dict[str, tuple[list[list[bytes]], str]] = {
        "protobuf": ([bodies_of(False, proto)] * rounds, "application/x-protobuf"),
        "json": ([bodies_of(False, as_json)] * rounds, "application/json"),
        # new URLs in every round: the memo never hits
        "protobuf, every URL new": (
            [bodies_of(True, proto, 1 + r * requests) for r in range(rounds)],
            "application/x-protobuf",
        ),
    }
    result = {}
    for name, (per_round, media) in arms.items():
        times = []
        for bodies in per_round:
            started = time.process_time()
            for body in bodies:
                rewrite_request("traces", decode_request("traces", body, media), "chatai-frontend")
            times.append((time.process_time() - started) / (requests * SPANS_PER_REQUEST) * 1e6)
        result[name] = statistics.median(times)
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench tunnel")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--post", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args([a for a in argv if a.startswith("--")] if argv else [])
    if args.post:
        _post(args.post, args.rate, args.seconds)
        return
    results: dict[int, list[dict[str, float]]] = {rate: [] for rate in RATES}
    answered: dict[int, dict[str, int]] = {rate: {} for rate in RATES}
    with receiver_process(_taskset(1)) as ports:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc_port']}",
                "OTEL_SERVICE_NAME": "bench-tunnel",
                "CHATAI_OTEL_LOG_STDOUT": "false",
                "PYTHONPATH": str(ROOT),
            }
        )
        server = subprocess.Popen(
            [*_taskset(0), str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "uvicorn"),
             "benchmarks.tunnel_app:app", "--port", str(port), "--log-level", "warning"],
            env=env, cwd=str(ROOT),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, server, path="/ping")
            run_wrk(url + "/ping", 2, args.connections)  # warm-up
            before = receiver_counts(ports)["spans"]
            for _round in range(args.rounds):
                for rate in RATES:
                    poster = None
                    if rate:
                        poster = subprocess.Popen(
                            [*_taskset(1), sys.executable, "-m", "benchmarks.bench_tunnel",
                             f"--post={url}/otlp/v1/traces", f"--rate={rate}",
                             f"--seconds={args.seconds}"],
                            cwd=str(ROOT), stdout=subprocess.PIPE, text=True,
                        )  # fmt: skip
                        time.sleep(0.3)
                    results[rate].append(run_wrk(url + "/ping", args.seconds, args.connections))
                    if poster is not None:
                        out, _ = poster.communicate(timeout=args.seconds + 60)
                        report = json.loads(out.strip().splitlines()[-1])
                        for status, count in report["statuses"].items():
                            answered[rate][status] = answered[rate].get(status, 0) + count
            time.sleep(3.0)  # the forwarder's queue drains
            arrived = receiver_counts(ports)["spans"] - before
        finally:
            server.terminate()
            server.wait(20)
    _table(results, answered, arrived, _micro(), args)


def _table(
    results: dict[int, list[dict[str, float]]],
    answered: dict[int, dict[str, int]],
    arrived: int,
    micro: dict[str, float],
    args: argparse.Namespace,
) -> None:
    alone = {key: statistics.median(r[key] for r in results[0]) for key in ("rps", "p50", "p99")}
    print(
        f"{args.rounds} interleaved rounds x {args.seconds:g} s per arm, wrk -t1 "
        f"-c{args.connections} on /ping; browser exports of {SPANS_PER_REQUEST} spans each "
        "(OTLP/HTTP protobuf) posted beside the load\n"
    )
    print("| arm | /ping req/s | vs alone | p50 ms | p99 ms | p99 vs alone | exports answered |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for rate in RATES:
        rps = statistics.median(r["rps"] for r in results[rate])
        p50 = statistics.median(r["p50"] for r in results[rate])
        p99 = statistics.median(r["p99"] for r in results[rate])
        name = "alone" if rate == 0 else f"+ {rate} exports/s ({rate * SPANS_PER_REQUEST} spans/s)"
        codes = ", ".join(f"{count} x {code}" for code, count in sorted(answered[rate].items()))
        print(
            f"| {name} | {rps:,.0f} | {rps / alone['rps']:.2f}x | {p50:.2f} | {p99:.2f} | "
            f"{p99 / alone['p99']:.2f}x | {codes or '-'} |"
        )
    accepted = sum(a.get("200", 0) for a in answered.values()) * SPANS_PER_REQUEST
    pings = sum(int(r["requests"]) for arm in results.values() for r in arm)
    print(
        f"\nspans at the receiver: {arrived:,} = {pings:,} /ping server spans (wrk's count of "
        f"completed requests, which misses the few in flight as each run ends) + {arrived - pings:,} browser spans, of {accepted:,} accepted (200)"
    )
    print(
        "decode + rewrite (service.name forced, every value scrubbed), CPU µs per browser span: "
        + ", ".join(f"{name} {value:.2f}" for name, value in micro.items())
    )


if __name__ == "__main__":
    main(sys.argv[1:])
