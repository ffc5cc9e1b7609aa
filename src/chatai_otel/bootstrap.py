"""``configure()``: settings -> SDK providers -> logging pipeline, exactly once per process.

Both entry paths land here: ``import chatai_otel.setup`` (workers, the bot) and
the ``opentelemetry-instrument`` configurator (the backend). Whichever comes
first configures; the other gets the same handle back and changes nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from chatai_otel._sdk_compat import report_fallbacks
from chatai_otel.config import ConfigError, Settings, load_settings
from chatai_otel.logs.configure import configure_logging
from chatai_otel.providers import (
    Telemetry,
    build_telemetry,
    install_globally,
    install_process_hooks,
)

__all__ = ["ConfigError", "configure", "current", "exit_on_config_error", "when_configured"]

_lock = threading.Lock()
_telemetry: Telemetry | None = None
_when_configured: list[Callable[[], None]] = []


def when_configured(callback: Callable[[], None]) -> None:
    """Run ``callback`` once this process is configured (at once if it already is).

    For work that only a configured process should start (warming data off the request
    path), so that importing the package stays free of it.
    """
    with _lock:
        if _telemetry is None:
            _when_configured.append(callback)
            return
    callback()


def configure(**overrides: Any) -> Telemetry:
    """Configure traces, metrics and logs for this process and return the handle.

    ``overrides`` are field names of :class:`chatai_otel.config.Settings` and win
    over the environment. A second call returns the first handle unchanged.
    Raises :class:`ConfigError` for a bad configuration value.
    """
    global _telemetry
    with _lock:
        if _telemetry is not None:
            return _telemetry
        settings = load_settings(**overrides)
        telemetry = build_telemetry(settings)
        install_globally(telemetry)
        configure_logging(settings, telemetry.logger_provider)
        if not settings.sdk_disabled:
            report_fallbacks(_fast_paths_used(settings))  # one line per path that is off
        install_process_hooks(telemetry)
        if settings.store.url:
            _install_store(settings, telemetry)
        _telemetry = telemetry
        callbacks = _when_configured[:]
        _when_configured.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logging.getLogger("chatai_otel").debug(
                "a when_configured callback failed", exc_info=True
            )
    return telemetry


def _fast_paths_used(settings: Settings) -> tuple[str, ...]:
    used = ["cheap spans", "request histogram"]
    for signal in ("traces", "logs"):
        if settings.exporter_kind(signal) == "otlp":
            grpc = settings.exporter_for(signal).protocol == "grpc"
            used.append("encoded gRPC export" if grpc else "encoded HTTP export")
    return tuple(dict.fromkeys(used))


def _install_store(settings: Settings, telemetry: Telemetry) -> None:
    """Start the durable event store (imported only when configured: it needs SQLAlchemy)."""
    try:
        from chatai_otel.store.writer import install

        install(settings, telemetry.add_shutdown_callback)
    except Exception:
        logging.getLogger("chatai_otel.store").exception(
            "chatai-otel: the event store did not start; events are not stored in SQL"
        )


def current() -> Telemetry | None:
    """The handle of this process, or None before configure()."""
    return _telemetry


def exit_on_config_error(error: ConfigError) -> str:
    """Write the one-line start-up error to stderr and return it (the caller decides how to exit)."""
    line = f"chatai-otel: configuration error: {error}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return line
