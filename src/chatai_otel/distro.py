"""The distro and configurator that ``opentelemetry-instrument`` loads through entry points.

The distro runs first and only sets defaults; the configurator then calls the
same :func:`chatai_otel.bootstrap.configure` that ``import chatai_otel.setup``
uses, so both ways of launching give the same result and never configure
twice. The distro also passes our options to each instrumentor it loads,
and replaces the stock FastAPI instrumentation with our lean middleware
(:func:`chatai_otel.integrations.fastapi.enable_auto_instrumentation`).
"""

from __future__ import annotations

import os
from typing import Any

from chatai_otel._sdk_compat import ConfiguratorBase, DistroBase
from chatai_otel.bootstrap import ConfigError, configure, exit_on_config_error
from chatai_otel.integrations.fastapi import enable_auto_instrumentation
from chatai_otel.integrations.instrumentors import (
    activate_on_import,
    inactive_libraries,
    instrument_with_options,
    report_inactive,
)

# Per instrumentor, the keyword arguments we pass when opentelemetry-instrument loads it.
INSTRUMENTOR_OPTIONS: dict[str, dict[str, Any]] = {
    # sqlcommenter would put trace ids into every statement text (plan-cache misses).
    "sqlalchemy": {"enable_commenter": False},
}
# Instrumentors we replace with our own: the stock ASGI middleware costs ~84 µs per request.
REPLACED_INSTRUMENTORS = frozenset({"fastapi", "starlette", "asgi"})
# Instrumentors we never load: chatai_otel.logs.pipeline already prints and exports every stdlib
# record once; the stock logging instrumentor would add a second exporting root handler.
SKIPPED_INSTRUMENTORS = frozenset({"logging"})


class ChatAIDistro(DistroBase):  # type: ignore[misc]
    """Sets the defaults of our distribution before anything is configured."""

    def set_defaults(self) -> None:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "otlp")
        # Stable semantic conventions for the stock client instrumentations (db.query.text,
        # server.address, http.client.request.duration), matching our server spans.
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name in REPLACED_INSTRUMENTORS:
            return  # the configurator installed ours (see _enable_web)
        if entry_point.name in SKIPPED_INSTRUMENTORS:
            return
        options = {**INSTRUMENTOR_OPTIONS.get(entry_point.name, {}), **kwargs}

        def activate() -> None:  # loading the instrumentor imports its library
            instrumentor = entry_point.load()
            instrument_with_options(entry_point.name, instrumentor(), **options)

        activate_on_import(entry_point.name, activate)


class ChatAIConfigurator(ConfiguratorBase):  # type: ignore[misc]
    """Configures the SDK with chatai-otel's settings instead of the stock ones."""

    def configure_sdk(self) -> None:
        try:
            configure()
        except ConfigError as error:
            exit_on_config_error(error)
            # sitecustomize cannot exit cleanly with SystemExit (Python reports a fatal
            # error with a traceback), so leave at once with the message already written.
            os._exit(2)
        try:
            _enable_web()
            report_inactive()  # one line per library we cannot instrument, never silent
            _instrument_spawned_children_too()
        except Exception:
            pass


def _instrument_spawned_children_too() -> None:
    """Keep opentelemetry-instrument's sitecustomize on PYTHONPATH for child interpreters.

    opentelemetry-instrumentation before 0.66 takes its directory off PYTHONPATH for good when
    it starts, so workers that are spawned rather than forked (``uvicorn --workers N``,
    multiprocessing's spawn) ran without telemetry; 0.66 puts it back after initialising.
    We do the same on every release, once our configuration is done."""
    import sys
    from pathlib import Path

    site = sys.modules.get("sitecustomize")
    site_file = getattr(site, "__file__", None)
    if not site_file:
        return
    directory = str(Path(site_file).resolve().parent)
    if Path(directory).name != "auto_instrumentation":
        return  # not started by opentelemetry-instrument
    current = os.environ.get("PYTHONPATH", "")
    entries = [entry for entry in current.split(os.pathsep) if entry]
    if directory not in (str(Path(entry).resolve()) for entry in entries):
        os.environ["PYTHONPATH"] = os.pathsep.join([directory, *entries])


def _enable_web() -> None:
    """Our FastAPI instrumentation, unless disabled or FastAPI is absent or out of range."""
    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    names = {name.strip() for name in disabled.split(",")}
    if "fastapi" in names or "*" in names:
        return
    if any(library.entry_point == "fastapi" for library, _found in inactive_libraries()):
        return
    enable_auto_instrumentation()
