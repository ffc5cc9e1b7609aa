"""µs per business event on the calling path: chatai-otel's emit against the seed's way.

Arms, interleaved round by round in one child process that exports over OTLP/gRPC
to a receiver running in its own process (``python -m chatai_otel.testing.receiver``):

* ``emit`` in a request span (a server span as the web layer opens it): span event + counter + JSON log line (to a file) and
  OTLP log record + store hand-off. The store is the real durable store
  (``chatai_otel.store``, its defaults: every record journaled, batches copied into the
  real PostgreSQL at 127.0.0.1:5432, database ``test``, a schema of its own dropped at
  the end).
* ``await log_event`` in a request span, the same sink.
* ``emit`` with no active span: the event gets a short span of its own.
* ``emit`` in a span on a thread with no event loop (a sync worker): its stdout lines are
  written one by one, at once (``chatai_otel.logs.line_writer``).
* the seed's way: one JSON log line through stdlib ``logging`` to a file, then a new
  SQLAlchemy session, one INSERT and a COMMIT per event into the real PostgreSQL at
  127.0.0.1:5432 (database ``test``, a table of its own, dropped at the end). Fewer
  events for this arm: per-event figures are compared.

Each call is timed on its own (``perf_counter_ns``); the request spans around every
ten events are not part of the figure. The arms of ours run on an asyncio event loop,
as a FastAPI request handler does (so stdout lines are batched on the loop,
``chatai_otel.logs.line_writer``), yielding to it between requests. After the run the
receiver's ``/counts`` say how much telemetry arrived.

``./dev bench events [--events N] [--seed-events M] [--rounds R]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.receiver_process import receiver_counts, receiver_process
from benchmarks.seed_logging import StructuredFormatter

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_REQUEST = 10


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench events")
    parser.add_argument("--events", type=int, default=100_000, help="events per chatai-otel arm")
    parser.add_argument("--seed-events", type=int, default=2_000, help="events for the seed arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args([a for a in argv if a.startswith("--")] if argv else [])
    if args.child:
        _child(args)
        return
    _parent(args)


# --- the parent: receiver, child, table ---------------------------------------------------


def _parent(args: argparse.Namespace) -> None:
    with receiver_process() as ports:
        with tempfile.TemporaryDirectory() as tmp:
            result_path = Path(tmp) / "result.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_"))}
            env.update(
                {
                    "OTEL_SERVICE_NAME": "bench-events",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc_port']}",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                    "CHATAI_OTEL_LOG_FORMAT": "json",
                    "CHATAI_OTEL_SHUTDOWN_TIMEOUT": "30",
                    "PYTHONPATH": str(ROOT),
                }
            )
            with (Path(tmp) / "app-stdout.jsonl").open("w") as stdout:
                child = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_events",
                        f"--child={result_path}",
                        f"--events={args.events}",
                        f"--seed-events={args.seed_events}",
                        f"--rounds={args.rounds}",
                    ],
                    env=env,
                    cwd=str(ROOT),
                    stdout=stdout,
                    timeout=3600,
                )
            if child.returncode != 0:
                sys.exit(f"bench events: child failed with exit code {child.returncode}")
            result = json.loads(result_path.read_text())
        time.sleep(1.0)
        counts = receiver_counts(ports)
    _print(result, counts, args)


def _print(result: dict[str, Any], counts: dict[str, int], args: argparse.Namespace) -> None:
    arms = result["arms"]
    seed = arms["seed: log line + INSERT + COMMIT"]["median_us"]
    load = ", ".join(f"{value:.1f}" for value in result["load"])
    print(
        f"{args.rounds} interleaved rounds; {os.cpu_count()} cores shared with other work "
        f"(the receiver process and whatever else runs; 1-minute load average at each round: {load}): "
        "ratios from the same run are what count.\n"
    )
    print("| arm | events | median µs/event | p99 µs/event | seed's way ÷ this |")
    print("|---|---:|---:|---:|---:|")
    for name, arm in arms.items():
        print(
            f"| {name} | {arm['events']:,} | {arm['median_us']:.1f} | {arm['p99_us']:.1f} "
            f"| {seed / arm['median_us']:.1f}x |"
        )
    emitted = result["emitted"]
    print(
        f"\nDelivered to the receiver: {counts['spans']:,} spans ({emitted['spans_sent']:,} sent, "
        f"{emitted['spans_dropped']:,} dropped by the bounded span queue), "
        f"{counts['logs']:,} log records "
        f"({emitted['log_records']:,} written: {emitted['log_records'] - counts['logs']:,} "
        f"dropped by the bounded log queue), {counts['metric_points']:,} metric points; "
        f"durable store: {emitted['store_written']:,} records committed to PostgreSQL, "
        f"{emitted['store_dropped']:,} dropped by its bounded queue."
    )


# --- the child: both ways, interleaved ----------------------------------------------------


STORE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _child(args: argparse.Namespace) -> None:
    from sqlalchemy import text

    import chatai_otel
    from chatai_otel import EventType
    from chatai_otel.store.database import create_tables, engine_for
    from chatai_otel.store.records import set_sink
    from chatai_otel.store.writer import DurableStore
    from chatai_otel.tracking import events

    telemetry = chatai_otel.configure()
    from chatai_otel.export.cheap_spans import FastTracer

    # The request span is what the web layer opens for a request: a FastSpan.
    tracer = FastTracer("chatai_otel.web")
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    schema = f"bench_events_{uuid.uuid4().hex[:8]}"
    create_tables(STORE_URL, schema)
    store = DurableStore(STORE_URL, journal_dir=str(workdir / "journal"), schema=schema).start()
    set_sink(store)
    seed = _SeedWay(workdir / "seed.log")

    data = {"dialog_id": 42, "message_length": 120, "channel": "telegram", "api_key": "sk-x"}

    def timed_emit(number: int) -> int:
        began = time.perf_counter_ns()
        events.emit(
            EventType.MESSAGE_SENT, user_id=number, entity_id=42, entity_type="dialog", data=data
        )
        return time.perf_counter_ns() - began

    # The arms of ours run on an asyncio event loop, as a FastAPI request handler does,
    # but for one: a sync worker thread, where every stdout line is written at once.
    def ours_emit_sync(count: int, samples: list[int]) -> None:
        for start in range(0, count, EVENTS_PER_REQUEST):
            with tracer.start_as_current_span("process job"):
                for number in range(start, min(count, start + EVENTS_PER_REQUEST)):
                    samples.append(timed_emit(number))

    def ours_emit(count: int, samples: list[int]) -> None:
        async def run() -> None:
            for start in range(0, count, EVENTS_PER_REQUEST):
                with tracer.start_as_current_span("POST /api/dialogs/{dialog_id}/messages"):
                    for number in range(start, min(count, start + EVENTS_PER_REQUEST)):
                        samples.append(timed_emit(number))
                await asyncio.sleep(0)  # between requests the loop runs its callbacks

        asyncio.run(run())

    def ours_no_span(count: int, samples: list[int]) -> None:
        async def run() -> None:
            for number in range(count):
                samples.append(timed_emit(number))
                if number % EVENTS_PER_REQUEST == EVENTS_PER_REQUEST - 1:
                    await asyncio.sleep(0)

        asyncio.run(run())

    def ours_log_event(count: int, samples: list[int]) -> None:
        async def run() -> None:
            for start in range(0, count, EVENTS_PER_REQUEST):
                with tracer.start_as_current_span("POST /api/dialogs/{dialog_id}/messages"):
                    for number in range(start, min(count, start + EVENTS_PER_REQUEST)):
                        began = time.perf_counter_ns()
                        await events.log_event(
                            events.BusinessEvent(
                                event_type=EventType.MESSAGE_SENT,
                                user_id=number,
                                entity_id=42,
                                entity_type="dialog",
                                data=data,
                            )
                        )
                        samples.append(time.perf_counter_ns() - began)
                await asyncio.sleep(0)

        asyncio.run(run())

    def seed_way(count: int, samples: list[int]) -> None:
        for number in range(count):
            began = time.perf_counter_ns()
            seed.log_event("message_sent", number, 42, "dialog", data)
            samples.append(time.perf_counter_ns() - began)

    per_round = args.events // args.rounds
    seed_per_round = args.seed_events // args.rounds
    arms: dict[str, tuple[Any, int]] = {
        "chatai-otel: emit in a request span": (ours_emit, per_round),
        "chatai-otel: await log_event in a request span": (ours_log_event, per_round),
        "chatai-otel: emit, no active span (own span)": (ours_no_span, per_round),
        "chatai-otel: emit in a span, sync thread (no event loop)": (ours_emit_sync, per_round),
        "seed: log line + INSERT + COMMIT": (seed_way, seed_per_round),
    }
    samples: dict[str, list[list[int]]] = {name: [] for name in arms}
    try:
        # warm-up: imports, caches, the connection pool
        for function, _count in arms.values():
            function(50, [])
        names = list(arms)
        load: list[float] = []
        for round_number in range(args.rounds):
            load.append(os.getloadavg()[0])
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                function, count = arms[name]
                round_samples: list[int] = []
                function(count, round_samples)
                samples[name].append(round_samples)
    finally:
        seed.drop()
    store.flush(60)
    stored = store.stats()
    store.close()
    engine = engine_for(STORE_URL)
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
    from opentelemetry import trace

    from chatai_otel.export.spans import processor_of

    spans = processor_of(trace.get_tracer_provider())
    telemetry.shutdown(30)

    result: dict[str, Any] = {"arms": {}, "load": load}
    for name, rounds in samples.items():
        every = sorted(s for r in rounds for s in r)
        medians = [statistics.median(r) / 1000 for r in rounds]
        result["arms"][name] = {
            "events": len(every),
            "median_us": statistics.median(medians),
            "p99_us": every[int(len(every) * 0.99)] / 1000,
        }
    ours_events = sum(
        len(r) for name, rounds in samples.items() if name.startswith("chatai") for r in rounds
    )
    result["emitted"] = {
        "log_records": ours_events + 50 * sum(1 for name in arms if name.startswith("chatai")),
        "store_written": stored["committed"],
        "store_dropped": sum(stored["dropped"].values()),
        "spans_sent": spans.exported if spans is not None else -1,
        "spans_dropped": spans.dropped + spans.failed if spans is not None else -1,
    }
    Path(args.child).write_text(json.dumps(result))


class _SeedWay:
    """The seed's BusinessEventLogger: a JSON log line, then a session, INSERT, COMMIT per event."""

    def __init__(self, log_path: Path) -> None:
        from sqlalchemy import JSON, Column, DateTime, Integer, String, create_engine
        from sqlalchemy.orm import declarative_base, sessionmaker

        self.table = f"bench_events_seed_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        base = declarative_base()

        class BusinessEventLog(base):  # type: ignore[misc, valid-type]
            __tablename__ = self.table
            id = Column(Integer, primary_key=True)
            event_type = Column(String(64))
            user_id = Column(Integer)
            entity_id = Column(Integer)
            entity_type = Column(String(64))
            data = Column(JSON)
            timestamp = Column(DateTime)
            request_id = Column(String(64))

        base.metadata.create_all(self.engine)
        self.model = BusinessEventLog
        self.session_factory = sessionmaker(bind=self.engine)
        self.logger = logging.getLogger("seed.business_events")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler = logging.FileHandler(log_path)
        handler.setFormatter(StructuredFormatter())
        self.logger.addHandler(handler)

    def log_event(
        self, event_type: str, user_id: int, entity_id: int, entity_type: str, data: dict[str, Any]
    ) -> None:
        from datetime import datetime

        now = datetime.utcnow()
        event_data = {
            "event_type": event_type,
            "user_id": user_id,
            "entity_id": entity_id,
            "entity_type": entity_type,
            "timestamp": now.isoformat(),
            "request_id": None,
            "data": data,
        }
        self.logger.info(f"BUSINESS_EVENT: {event_type}", extra=event_data)
        db = self.session_factory()
        try:
            db.add(
                self.model(
                    event_type=event_type,
                    user_id=user_id,
                    entity_id=entity_id,
                    entity_type=entity_type,
                    data=data,
                    timestamp=now,
                    request_id=None,
                )
            )
            db.commit()
        finally:
            db.close()

    def drop(self) -> None:
        from sqlalchemy import text

        with self.engine.begin() as connection:
            connection.execute(text(f'DROP TABLE IF EXISTS "{self.table}"'))
        self.engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
