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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatai-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the example backend and show its telemetry")
    demo_parser.add_argument("--requests", type=int, default=20)
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
