"""Logging: cost per log line on the calling thread, inside an active span.

Alternatives, each in its own fresh process, rounds interleaved:

(a) seed    -- the seed's StructuredFormatter through stdlib logging to a file
(b) ours    -- chatai-otel, JSON lines to a file only (no stdout, no export)
(c) ours+otlp -- chatai-otel, JSON lines to a file plus OTLP/gRPC export to a local
               receiver running in its own process (``python -m chatai_otel.testing.receiver``)
(d) stock   -- opentelemetry-instrumentation-logging's handler (SDK BatchLogRecordProcessor,
               OTLP/gRPC exporter) plus the seed's JSON file handler
(e) as (c), but the lines come from a stdlib logger (how uvicorn, SQLAlchemy, httpx log)
(h) as (b), with two keys bound by ``structlog.contextvars.bind_contextvars`` (merged on
    every line)
(i) as (b), after keys were bound by ``structlog.contextvars`` and cleared again (as after
    a request whose middleware clears them): what a line pays when nothing is bound any more;
    (b) itself is a process where structlog's contextvars were never used
(s) structlog alone, in the configuration its performance guide recommends (a filtering
    bound logger cached on first use, log level and ISO timestamp, orjson, a BytesLogger on
    the file): the floor for a JSON line in Python, with no scrubbing, no trace ids, no export

Diagnostics, not run by default (``--variants=bcfg``): (f) is (c) with the encoder replaced
by a constant (records are queued and batches sent, nothing encoded), (g) is (c) encoding
every batch but not sending it.

Reported: median microseconds per line on the calling thread (the timed loop), CPU time of
the whole process per line (includes the export thread), the time to deliver everything
after the loop ended, and how many records the receiver counted.

    ./dev bench logging [--lines N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.receiver_process import receiver_counts, receiver_process

VARIANTS = {
    "a": "seed StructuredFormatter -> file",
    "b": "chatai-otel JSON -> file",
    "c": "chatai-otel JSON -> file + OTLP",
    "d": "stock instrumentation-logging + JSON file",
    "e": "chatai-otel, stdlib logger -> file + OTLP",
    "h": "(b) with 2 structlog.contextvars bound",
    "i": "(b) after structlog.contextvars were cleared",
    "s": "structlog alone, its fastest documented JSON setup -> file",
    # diagnostics (--variants=bcfg): where (c)'s time goes
    "f": "(c) with the OTLP encoding skipped",
    "g": "(c) encoding, not sending",
}


# --- the child: one variant, one process ------------------------------------------------


def _seed_formatter() -> Any:
    """The seed's StructuredFormatter, as written in logging-and-observability.md."""
    from benchmarks.seed_logging import StructuredFormatter

    return StructuredFormatter()


def _child(variant: str, lines: int, path: str, endpoint: str) -> dict[str, Any]:
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")
    flush: Any = None
    processor: Any = None

    if variant in ("a", "d"):
        handler = logging.FileHandler(path)
        handler.setFormatter(_seed_formatter())
        logger = logging.getLogger("bench")
        logger.setLevel(logging.INFO)
        root = logging.getLogger()
        root.setLevel(logging.INFO)
        root.addHandler(handler)
        if variant == "d":
            from opentelemetry._logs import set_logger_provider
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.instrumentation.logging import LoggingInstrumentor
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            provider = LoggerProvider()
            provider.add_log_record_processor(
                BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
            )
            set_logger_provider(provider)
            LoggingInstrumentor().instrument()
            flush = provider.force_flush

        def log_one(i: int) -> None:
            logger.info("bench.line", extra={"extra_fields": {"i": i, "user": "alice"}})

    elif variant == "s":
        import orjson
        import structlog

        out = open(path, "wb")  # noqa: SIM115 - open for the life of the child process
        structlog.configure(
            cache_logger_on_first_use=True,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(out),
        )
        plain = structlog.get_logger("bench")

        def log_one(i: int) -> None:
            plain.info("bench.line", i=i, user="alice")

        flush = out.flush

    else:
        os.environ.update(
            {
                "OTEL_SERVICE_NAME": "bench",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none" if variant in ("b", "h", "i") else "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "CHATAI_OTEL_LOG_STDOUT": "false",
                "CHATAI_OTEL_LOG_FILE": path,
                "CHATAI_OTEL_LOG_FORMAT": "json",
            }
        )
        from chatai_otel import configure, context, get_logger
        from chatai_otel.export.logs import processor_of

        telemetry = configure()
        processor = processor_of(telemetry.logger_provider)
        if variant == "f":
            processor._encoder.encode = lambda batch, resource: b""
        elif variant == "g":
            processor._exporter.export_encoded = lambda payload, count: True
        flush = telemetry.force_flush
        log = get_logger("bench")
        std = logging.getLogger("bench.std")
        context.bind(request_id="req-1")
        if variant in ("h", "i"):
            import structlog

            structlog.contextvars.bind_contextvars(tenant="acme", job_id=7)
            if variant == "i":
                structlog.contextvars.clear_contextvars()

        if variant == "e":

            def log_one(i: int) -> None:
                std.info("bench.line", extra={"i": i, "user": "alice"})

        else:

            def log_one(i: int) -> None:
                log.info("bench.line", i=i, user="alice")

    with tracer.start_as_current_span("bench"):
        for i in range(1000):  # warm caches, imports, the exporter's channel
            log_one(i)
        if flush is not None:
            flush()
        cpu0 = time.process_time()
        thread0 = time.thread_time()
        started = time.perf_counter()
        for i in range(lines):
            log_one(i)
        elapsed = time.perf_counter() - started
        thread_cpu = time.thread_time() - thread0
        drain_started = time.perf_counter()
        if flush is not None:
            flush()
        drain = time.perf_counter() - drain_started
        cpu = time.process_time() - cpu0
    return {
        "per_line_us": elapsed / lines * 1e6,
        "thread_cpu_per_line_us": thread_cpu / lines * 1e6,
        "cpu_per_line_us": cpu / lines * 1e6,
        "drain_s": drain,
        "dropped": getattr(processor, "dropped", None),
        "written": sum(1 for _ in open(path, "rb")),
    }


# --- the parent ----------------------------------------------------------------------------


def _counts(http_port: int) -> dict[str, int]:
    return receiver_counts({"http_port": http_port})


def _wait_for_logs(http_port: int, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    logs = _counts(http_port)["logs"]
    while logs < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        logs = _counts(http_port)["logs"]
    time.sleep(0.3)  # anything extra (a duplicate) would arrive now
    return _counts(http_port)["logs"]


def _run_variant(variant: str, lines: int, grpc_port: int, http_port: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "app.log")
        before = _counts(http_port)["logs"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_logging",
                "--child",
                variant,
                "--lines",
                str(lines),
                "--path",
                path,
                "--endpoint",
                f"http://127.0.0.1:{grpc_port}",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"variant {variant} failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        expected = lines + 1000
        if variant in ("c", "d", "e"):
            result["delivered"] = _wait_for_logs(http_port, before + expected) - before
        result["expected"] = expected
        return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench logging")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="abcdehis")
    parser.add_argument("--child", choices=sorted(VARIANTS))
    parser.add_argument("--path", default="")
    parser.add_argument("--endpoint", default="")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.lines, args.path, args.endpoint)), flush=True)
        return

    with receiver_process() as ports:
        load_before = os.getloadavg()[0]
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
        for round_number in range(args.rounds):
            for variant in args.variants:
                result = _run_variant(variant, args.lines, ports["grpc_port"], ports["http_port"])
                results[variant].append(result)
                print(
                    f"round {round_number + 1} ({variant}) {result['per_line_us']:.2f} µs/line, "
                    f"cpu {result['cpu_per_line_us']:.2f} µs/line, "
                    f"delivered {result.get('delivered', '-')}/{result['expected']}",
                    file=sys.stderr,
                    flush=True,
                )
        _print_table(results, args.lines, args.rounds, (load_before, os.getloadavg()[0]))


def _print_table(
    results: dict[str, list[dict[str, Any]]], lines: int, rounds: int, load: tuple[float, float]
) -> None:
    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    base = median("a", "per_line_us") if "a" in results else None
    print(
        f"\n{lines:,} lines per run inside an active span, median of {rounds} interleaved runs, "
        f"each variant in a fresh process; {os.cpu_count()} CPUs shared with other work "
        f"(load average {load[0]:.1f} before, {load[1]:.1f} after)\n"
    )
    print(
        "| variant | µs/line, calling thread (wall) | vs (a) | calling thread CPU µs/line "
        "| process CPU µs/line | drain after loop (s) | OTLP records delivered / sent | file lines |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for variant, runs in results.items():
        per_line = median(variant, "per_line_us")
        ratio = f"{per_line / base:.2f}x" if base else "-"
        if "delivered" in runs[0]:
            delivered = f"{min(r['delivered'] for r in runs):,} / {runs[0]['expected']:,} (min)"
        else:
            delivered = "-"
        written = f"{min(r['written'] for r in runs):,}"
        print(
            f"| ({variant}) {VARIANTS[variant]} | {per_line:.2f} | {ratio} "
            f"| {median(variant, 'thread_cpu_per_line_us'):.2f} "
            f"| {median(variant, 'cpu_per_line_us'):.2f} | {median(variant, 'drain_s'):.2f} "
            f"| {delivered} | {written} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
