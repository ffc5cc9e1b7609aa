"""The ``chatai-otel`` command line: ``demo``, ``doctor``, ``view``, ``store``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from chatai_otel.config import ConfigError, load_settings


def demo(args: argparse.Namespace) -> int:
    """The example backend and worker under the distro, a scripted workload, the result."""
    from chatai_otel.cli.demo import DemoOptions, run

    redis = "off" if args.no_redis else (args.redis_url or "auto")
    options = DemoOptions(
        output=Path(args.output),
        redis=redis,
        traces=args.traces,
        example=Path(args.example) if args.example else None,
        browser=args.browser,
    )
    return run(options)


def doctor(args: argparse.Namespace) -> int:
    """Effective configuration, endpoint reachability, instrumentations, versions."""
    from chatai_otel.cli.doctor import run

    return run(timeout=args.timeout)


def view(args: argparse.Namespace) -> int:
    """The terminal waterfall (and metrics) of OTLP/JSON files."""
    from chatai_otel.cli.view import (
        Collected,
        group_traces,
        pick_traces,
        render_metrics,
        render_trace,
    )
    from chatai_otel.export.otlp_json import read

    collected = Collected()
    try:
        collected.extend(read(args.files))
    except (OSError, ValueError) as error:
        print(f"chatai-otel view: {error}", file=sys.stderr)
        return 2
    spans = collected.spans()
    if args.trace:
        wanted = [t for t in group_traces(spans) if t.trace_id.startswith(args.trace.lower())]
        if not wanted:
            print(f"chatai-otel view: no trace {args.trace} in {len(spans)} spans", file=sys.stderr)
            return 1
        traces = wanted
    else:
        traces = pick_traces(spans, args.limit)
    if not traces and not collected.metrics.names():
        print("chatai-otel view: no spans and no metrics in these files", file=sys.stderr)
        return 1
    total = len(group_traces(spans))
    print(f"{len(spans)} spans in {total} traces; showing {len(traces)}\n")
    for trace in traces:
        render_trace(trace)
        print()
    if not args.no_metrics:
        render_metrics(collected.metrics, collected.logs())
    return 0


def store_command(args: argparse.Namespace) -> int:
    """``store create-tables``: the event store's tables; ``store drain``: replay left journals."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatai-otel: configuration error: {error}", file=sys.stderr)
        return 2
    url = args.url or settings.store.url
    schema = args.schema or settings.store.schema
    if not url:
        print("chatai-otel: set CHATAI_OTEL_STORE_URL or pass --url", file=sys.stderr)
        return 2
    from chatai_otel.store.database import create_tables
    from chatai_otel.store.writer import DurableStore

    if args.store_command == "create-tables":
        create_tables(url, schema)
        where = f" in schema {schema}" if schema else ""
        print(f"store: tables business_event_log and error_log are ready{where}")
        return 0
    durable = DurableStore(
        url, journal_dir=args.journal_dir or settings.store.journal_dir, schema=schema
    ).start()
    drained = durable.flush(args.timeout) and durable.close(args.timeout)
    print("store: journal drained" if drained else "store: records remain in the journal")
    return 0 if drained else 1


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `chatai-otel doctor | head` ends quietly, like other tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = argparse.ArgumentParser(prog="chatai-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser(
        "demo", help="run the example backend and worker under the distro and show the telemetry"
    )
    demo_parser.add_argument(
        "--output", default="telemetry", help="directory for OTLP/JSON files and app logs"
    )
    demo_parser.add_argument("--no-redis", action="store_true", help="in-process queue only")
    demo_parser.add_argument(
        "--redis-url",
        help="Redis for the job queue (default: REDIS_URL, else 127.0.0.1:6379 when it answers)",
    )
    demo_parser.add_argument("--traces", type=int, default=4, help="waterfalls to show")
    demo_parser.add_argument("--example", help="the examples/chatai directory")
    demo_parser.add_argument(
        "--browser",
        action="store_true",
        help="first click through the Next.js frontend in headless Chromium (needs Node.js)",
    )
    demo_parser.set_defaults(run=demo)
    store_parser = commands.add_parser("store", help="the durable event and error store")
    store_commands = store_parser.add_subparsers(dest="store_command", required=True)
    for name, help_text in (
        ("create-tables", "create business_event_log and error_log (and the schema) if missing"),
        ("drain", "write what journals of stopped processes still hold to the database"),
    ):
        sub = store_commands.add_parser(name, help=help_text)
        sub.add_argument("--url", help="SQLAlchemy URL (default: CHATAI_OTEL_STORE_URL)")
        sub.add_argument("--schema", help="schema (default: CHATAI_OTEL_STORE_SCHEMA)")
        if name == "drain":
            sub.add_argument("--journal-dir", help="default: CHATAI_OTEL_STORE_JOURNAL_DIR")
            sub.add_argument("--timeout", type=float, default=60.0, help="seconds")
        sub.set_defaults(run=store_command)

    doctor_parser = commands.add_parser(
        "doctor", help="configuration, endpoint, instrumentations and versions, checked"
    )
    doctor_parser.add_argument("--timeout", type=float, default=2.0, help="seconds per probe")
    doctor_parser.set_defaults(run=doctor)

    view_parser = commands.add_parser("view", help="waterfall and metrics of OTLP/JSON files")
    view_parser.add_argument("files", nargs="+", help="OTLP/JSON files or directories of them")
    view_parser.add_argument("--trace", help="a trace id (or its start) to show")
    view_parser.add_argument("--limit", type=int, default=5, help="traces to show")
    view_parser.add_argument("--no-metrics", action="store_true")
    view_parser.set_defaults(run=view)

    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
