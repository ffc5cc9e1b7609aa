"""The distro and configurator that ``opentelemetry-instrument`` loads through entry points.

The distro runs first and only sets defaults; the configurator then calls the
same :func:`chatai_otel.bootstrap.configure` that ``import chatai_otel.setup``
uses, so both ways of launching give the same result and never configure
twice. The distro also passes our options to each instrumentor it loads.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator

from chatai_otel.bootstrap import ConfigError, configure, exit_on_config_error

# Per instrumentor, the keyword arguments we pass when opentelemetry-instrument loads it.
INSTRUMENTOR_OPTIONS: dict[str, dict[str, Any]] = {
    # Without this, every request gets two extra internal `http send` spans.
    "fastapi": {"exclude_spans": ["send", "receive"]},
}


class ChatAIDistro(BaseDistro):  # type: ignore[misc]
    """Sets the defaults of our distribution before anything is configured."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "otlp")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        options = {**INSTRUMENTOR_OPTIONS.get(entry_point.name, {}), **kwargs}
        instrumentor = entry_point.load()
        instrumentor().instrument(**options)


class ChatAIConfigurator(_BaseConfigurator):
    """Configures the SDK with chatai-otel's settings instead of the stock ones."""

    def _configure(self, **kwargs: Any) -> None:
        try:
            configure()
        except ConfigError as error:
            exit_on_config_error(error)
            # sitecustomize cannot exit cleanly with SystemExit (Python reports a fatal
            # error with a traceback), so leave at once with the message already written.
            os._exit(2)
