"""The logging pipeline configured for real in the test process (real SDK providers, the real
log export processor and OTLP/gRPC exporter to the receiver fixture): the ``make_pipeline``
fixture and the :class:`Harness` that reads what it printed and exported."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatai_otel import context
from chatai_otel.config import load_settings
from chatai_otel.logs.configure import configure_logging, reset_logging
from chatai_otel.providers import Telemetry, build_telemetry
from chatai_otel.testing.receiver import OTLPReceiver, ReceivedLog


class Harness:
    """A configured pipeline plus what it printed and exported."""

    def __init__(self, telemetry: Telemetry, receiver: OTLPReceiver, capsys: Any) -> None:
        self.telemetry = telemetry
        self.receiver = receiver
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def _read(self) -> None:
        captured = self.capsys.readouterr()
        self.out += captured.out
        self.err += captured.err

    def stdout_lines(self) -> list[str]:
        self._read()
        return self.out.splitlines()

    def stdout_json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_lines()]

    def stderr_json(self) -> list[dict[str, Any]]:
        self._read()
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]

    def exported(self, count: int, predicate: Callable[[ReceivedLog], bool]) -> list[ReceivedLog]:
        assert self.telemetry.force_flush(10)
        return self.receiver.wait_for_logs(count, predicate, timeout=10)

    def all_exported(self) -> list[ReceivedLog]:
        assert self.telemetry.force_flush(10)
        return self.receiver.logs()


@pytest.fixture
def make_pipeline(receiver, capsys) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []
    levels: list[str] = []

    def make(**env: str) -> Harness:
        settings = load_settings(
            {
                **receiver.env("grpc"),
                "OTEL_SERVICE_NAME": "test-logs",
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_BLRP_SCHEDULE_DELAY": "50",
                "CHATAI_OTEL_LOG_FORMAT": "json",
                **env,
            }
        )
        levels.extend(settings.logging.levels)
        telemetry = build_telemetry(settings)
        configure_logging(settings, telemetry.logger_provider)
        harness = Harness(telemetry, receiver, capsys)
        made.append(harness)
        return harness

    yield make
    reset_logging()
    for harness in made:
        harness.telemetry.shutdown(5)
    logging.getLogger().setLevel(logging.WARNING)
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    context.clear()
