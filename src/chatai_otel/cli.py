"""The ``chatai-otel`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from chatai_otel.config import ConfigError, load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    parsed = urllib.parse.urlsplit(endpoint)
    try:
        with socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 4317), timeout
        ):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo(args: argparse.Namespace) -> int:
    """Run the quickstart backend under opentelemetry-instrument and drive a few requests."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatai-otel: configuration error: {error}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    receiver = None
    if _endpoint_answers(settings.traces.endpoint):
        print(f"demo: exporting to the collector at {settings.traces.endpoint}")
    else:
        from chatai_otel.receiver import OTLPReceiver

        receiver = OTLPReceiver().start()
        env.update(receiver.env())
        print(
            f"demo: no collector at {settings.traces.endpoint}; "
            f"using an embedded OTLP receiver on {receiver.grpc_endpoint}"
        )
    env.setdefault("OTEL_SERVICE_NAME", "chatai-quickstart")
    env.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "1000")
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [
            str(bin_dir / "opentelemetry-instrument"),
            str(bin_dir / "uvicorn"),
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=str(EXAMPLES / "quickstart"),
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/ping", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        for dialog_id in range(args.requests):
            urllib.request.urlopen(f"{base}/dialogs/{dialog_id}", timeout=5).read()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    if receiver is not None:
        time.sleep(0.5)
        counts = receiver.counts()
        receiver.stop()
        print(
            f"demo: received {counts['spans']} spans, {counts['logs']} log records, "
            f"{counts['metric_points']} metric points"
        )
    return 0


def store_command(args: argparse.Namespace) -> int:
    """``store create-tables``: the event store's tables; ``store drain``: replay left journals."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"chatai-otel: configuration error: {error}", file=sys.stderr)
        return 2
    url = args.url or settings.store_url
    schema = args.schema or settings.store_schema
    if not url:
        print("chatai-otel: set CHATAI_OTEL_STORE_URL or pass --url", file=sys.stderr)
        return 2
    from chatai_otel import store

    if args.store_command == "create-tables":
        store.create_tables(url, schema)
        where = f" in schema {schema}" if schema else ""
        print(f"store: tables business_event_log and error_log are ready{where}")
        return 0
    durable = store.DurableStore(
        url, journal_dir=args.journal_dir or settings.store_journal_dir, schema=schema
    ).start()
    drained = durable.flush(args.timeout) and durable.close(args.timeout)
    print("store: journal drained" if drained else "store: records remain in the journal")
    return 0 if drained else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatai-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the example backend and show its telemetry")
    demo_parser.add_argument("--requests", type=int, default=20)
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
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
