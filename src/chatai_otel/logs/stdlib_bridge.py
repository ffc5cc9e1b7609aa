"""The stdlib's door into the pipeline: a root handler for every library's records, and the
framework console handlers removed (at configure time, after every dictConfig, after fork)."""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from chatai_otel import process_hooks
from chatai_otel.logs import pipeline as core
from chatai_otel.logs.pipeline import AUDIT_LOGGER, current_pipeline, report_failure, safe_str
from chatai_otel.logs.values import safe_repr

# --- stdlib --------------------------------------------------------------------------------

# Attributes every LogRecord has (and those the OTel record factory or uvicorn add):
# everything else on a record is an `extra` field.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {
        "message",
        "asctime",
        "taskName",
        "otelSpanID",
        "otelTraceID",
        "otelTraceSampled",
        "otelServiceName",
        "color_message",
    }
)

_PLAIN_RECORD_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


class StdlibBridge(logging.Handler):
    """The root handler that sends every stdlib record into the pipeline."""

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the pipeline is thread-safe and writes whole lines under its own.
        if self.filters and not self.filter(record):
            return False
        try:
            _emit_stdlib(record)
        except Exception as error:
            report_failure(error)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def _emit_stdlib(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        if record.args:
            message = f"{safe_repr(record.msg)} % {safe_repr(record.args)} (could not format)"
        else:
            message = safe_str(record.msg)
    attributes = record.__dict__
    fields: dict[str, Any] = {}
    if len(attributes) > _PLAIN_RECORD_SIZE:
        # LogRecord.__init__ sets the standard attributes first; `extra` (and what formatters
        # or record factories add) comes after them
        fields = {
            key: attributes[key]
            for key in islice(attributes, _PLAIN_RECORD_SIZE, None)
            if key not in _RECORD_ATTRIBUTES
        }
        if "extra_fields" in fields:  # the seed's StructuredFormatter convention
            seed_fields = fields.pop("extra_fields")
            if isinstance(seed_fields, Mapping):
                fields.update(seed_fields)
    name = record.name
    (core.active or current_pipeline()).handle(
        name,
        record.levelno,
        message,
        fields,
        (record.pathname, record.funcName, record.lineno, record.module),
        int(record.created * 1e9),
        record.exc_info,
        record.stack_info,
        name == AUDIT_LOGGER or name.startswith(AUDIT_LOGGER + "."),
    )


def _is_console_handler(handler: logging.Handler) -> bool:
    if isinstance(handler, (StdlibBridge, logging.FileHandler)):
        return False
    if not isinstance(handler, logging.StreamHandler):
        return False
    stream = getattr(handler, "stream", None)
    return stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


_bridge: StdlibBridge | None = None
# Loggers kept silent while the pipeline runs: uvicorn's access logger, whose line would
# repeat our access line without route, duration or status class. With no handler and no
# propagation, uvicorn sees ``hasHandlers()`` false and does not even format its line.
UVICORN_ACCESS = "uvicorn.access"
_quiet_loggers: tuple[str, ...] = ()


def install_bridge() -> None:
    """Create the root handler once; :func:`capture_stdlib_logging` puts it in place."""
    global _bridge
    if _bridge is None:
        _bridge = StdlibBridge()


def remove_bridge() -> None:
    global _bridge
    if _bridge is not None:
        logging.getLogger().removeHandler(_bridge)
        _bridge = None


def keep_quiet(names: tuple[str, ...]) -> None:
    """Silence exactly ``names`` (the loggers silenced before propagate again)."""
    global _quiet_loggers
    for name in _quiet_loggers:
        logging.getLogger(name).propagate = True
    _quiet_loggers = names


def capture_stdlib_logging() -> None:
    """Route every stdlib logger into the pipeline, once.

    Puts the bridge on the root logger and removes console (stdout/stderr)
    handlers that frameworks installed on their own loggers, making those
    loggers propagate. File, socket and other handlers are left alone.
    """
    bridge = _bridge
    if bridge is None:
        return
    root = logging.getLogger()
    if bridge not in root.handlers:
        root.addHandler(bridge)
    loggers: list[logging.Logger] = [root]
    loggers.extend(
        item for item in list(logging.Logger.manager.loggerDict.values())
        if isinstance(item, logging.Logger)
    )  # fmt: skip
    for logger in loggers:
        removed = False
        for handler in list(logger.handlers):
            if _is_console_handler(handler):
                logger.removeHandler(handler)
                removed = True
        if removed and logger is not root and not logger.handlers:
            logger.propagate = True
    for name in _quiet_loggers:
        quiet = logging.getLogger(name)
        for handler in list(quiet.handlers):
            if _is_console_handler(handler):
                quiet.removeHandler(handler)
        quiet.propagate = False


_config_functions_wrapped = False


def wrap_logging_config() -> None:
    """Re-capture after every dictConfig/fileConfig/basicConfig (uvicorn configures after us)."""
    global _config_functions_wrapped
    if _config_functions_wrapped:
        return
    _config_functions_wrapped = True

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def configure_then_capture(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            finally:
                capture_stdlib_logging()

        configure_then_capture.__wrapped__ = function  # type: ignore[attr-defined]
        configure_then_capture.__doc__ = function.__doc__
        return configure_then_capture

    logging.config.dictConfig = wrap(logging.config.dictConfig)
    logging.config.fileConfig = wrap(logging.config.fileConfig)
    logging.basicConfig = wrap(logging.basicConfig)


def _after_fork_in_child() -> None:
    pipeline = core.active
    if pipeline is not None:
        pipeline.after_fork()
    capture_stdlib_logging()


process_hooks.on_fork(after_in_child=_after_fork_in_child)
