"""``configure_logging``: settings -> one pipeline for the whole process, structlog and the
stdlib routed into it; ``reset_logging`` for tests and tools."""

from __future__ import annotations

import logging
import logging.config
import sys

from chatai_otel._sdk_compat import LoggerProvider
from chatai_otel.config import Settings
from chatai_otel.export.logs import processor_of

# --- configuration ----------------------------------------------------------------------------
from chatai_otel.logs import pipeline as core
from chatai_otel.logs import stdlib_bridge
from chatai_otel.logs.outputs import FileOutput
from chatai_otel.logs.pipeline import (
    AUDIT_LOGGER,
    Pipeline,
    default_pipeline,
    install_pipeline,
    pipeline_lock,
)
from chatai_otel.logs.stdlib_bridge import (
    UVICORN_ACCESS,
    capture_stdlib_logging,
    wrap_logging_config,
)
from chatai_otel.logs.structlog_bridge import configure_structlog, follow_levels
from chatai_otel.redaction import (
    configure_scrubber,
)


def _level(name: str) -> int:
    return int(logging.getLevelName(name.upper()))


def configure_logging(settings: Settings, logger_provider: LoggerProvider | None) -> None:
    """Install the pipeline for the whole process (a second call replaces the first)."""
    scrubber = configure_scrubber(settings.redaction.keys, settings.redaction.safe_keys)
    stdout_tty = False
    try:
        stdout_tty = sys.stdout.isatty()
    except Exception:
        pass
    console = settings.logging.format == "console" or (
        settings.logging.format == "auto" and stdout_tty
    )
    files = {
        "app_file": (settings.logging.file, "CHATAI_OTEL_LOG_FILE"),
        "error_file": (settings.logging.error_file, "CHATAI_OTEL_LOG_ERROR_FILE"),
        "audit_file": (settings.logging.audit_file, "CHATAI_OTEL_LOG_AUDIT_FILE"),
    }
    opened = {key: FileOutput(path, variable) for key, (path, variable) in files.items() if path}
    pipeline = Pipeline(
        scrubber=scrubber,
        max_value_size=settings.logging.max_value_size,
        stdout=settings.logging.stdout,
        console=console,
        colors=console and stdout_tty,
        stdout_interval=settings.logging.stdout_interval,
        processor=processor_of(logger_provider),
        **opened,
    )
    with pipeline_lock:
        previous = core.active
        install_pipeline(pipeline)
    if previous is not None:
        previous.close()

    root = logging.getLogger()
    root.setLevel(_level(settings.logging.level))
    for name, level in settings.logging.levels.items():
        logging.getLogger(name).setLevel(_level(level))
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.setLevel(1)  # never filtered by level
    audit.disabled = False

    stdlib_bridge.keep_quiet(
        (UVICORN_ACCESS,) if settings.web.access_log and not settings.web.uvicorn_access_log else ()
    )

    configure_structlog()
    follow_levels(True)
    stdlib_bridge.install_bridge()
    capture_stdlib_logging()
    wrap_logging_config()


def reset_logging() -> None:
    """Remove the bridge and go back to the default pipeline (for tests and tools)."""
    stdlib_bridge.keep_quiet(())
    stdlib_bridge.remove_bridge()
    with pipeline_lock:
        previous = core.active
        install_pipeline(default_pipeline())
    if previous is not None:
        previous.close()
    follow_levels(False)
