"""structlog's door into the pipeline: a BoundLogger that checks the level first, finds the
call site and hands over, and ``get_logger``/``get_audit_logger``."""

from __future__ import annotations

import logging
import logging.config
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

import structlog

# --- structlog -----------------------------------------------------------------------------
from chatai_otel.logs import pipeline as core
from chatai_otel.logs.callsite import callsite
from chatai_otel.logs.pipeline import AUDIT_LOGGER, METHOD_LEVELS, current_pipeline, report_failure


class _Gate:
    """What structlog calls "the wrapped logger": the level check of one logger name.

    Once the pipeline is configured, levels come from the stdlib logger of the same
    name, so CHATAI_OTEL_LOG_LEVELS (and ``logging.getLogger(name).setLevel``) govern
    structlog and stdlib lines alike. Before that, INFO and above pass (our default
    level; stdlib's unconfigured WARNING would hide a script's info lines).
    """

    __slots__ = ("__weakref__", "audit", "enabled", "name")

    def __init__(self, name: str | None, audit: bool = False) -> None:
        self.name = name
        self.audit = audit
        self.enabled: Callable[[int], bool] = _always
        self.follow_levels(_levels_configured)
        _gates.add(self)

    def follow_levels(self, configured: bool) -> None:
        if self.audit:
            self.enabled = _always
        elif configured:
            self.enabled = logging.getLogger(self.name or None).isEnabledFor
        else:
            self.enabled = _info_and_above

    def __getattr__(self, _method: str) -> Callable[..., None]:
        return _ignore


def _always(_level: int) -> bool:
    return True


def _info_and_above(level: int) -> bool:
    return level >= logging.INFO


_gates: weakref.WeakSet[_Gate] = weakref.WeakSet()
_levels_configured = False


def follow_levels(configured: bool) -> None:
    global _levels_configured
    _levels_configured = configured
    for gate in list(_gates):
        gate.follow_levels(configured)


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def _gate_factory(*args: Any) -> _Gate:
    name = args[0] if args else None
    if name == AUDIT_LOGGER:
        return _Gate(AUDIT_LOGGER, audit=True)
    return _Gate(name if isinstance(name, str) else None)


def _from_structlog(gate: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
    """The one structlog processor (for ``structlog.get_logger()`` and wrapped chains)."""
    message = event_dict.pop("event", "")
    levelno = event_dict.pop("_levelno", None) or METHOD_LEVELS.get(method, logging.INFO)
    _hand_over(gate, method, levelno, message, event_dict)
    return ""


def _hand_over(
    gate: Any, method: str, levelno: int, message: Any, fields: MutableMapping[str, Any]
) -> None:
    """Find the call site and hand one structlog call to the pipeline."""
    exc_info = fields.pop("exc_info", None) if "exc_info" in fields else None
    if method == "exception" and exc_info is None:
        exc_info = True
    stack = None
    if "stack_info" in fields and fields.pop("stack_info"):
        stack = "".join(traceback.format_stack(sys._getframe(2)))
    if "extra" in fields:  # the seed's style: log.info("...", extra={...})
        extra = fields["extra"]
        if isinstance(extra, Mapping):
            del fields["extra"]
            fields.update(extra)
    code, module_name = callsite(2)
    (core.active or current_pipeline()).handle(
        getattr(gate, "name", None) or module_name or "root",
        levelno,
        message,
        fields,
        code,
        time.time_ns(),
        exc_info,
        stack,
        bool(getattr(gate, "audit", False)),
    )


class BoundLogger(structlog.BoundLoggerBase):
    """structlog's bound logger with per-name levels and calls that never raise.

    ``log.info("event", key=value)``, ``log.bind(...)``, ``log.exception(...)``,
    ``log.info("user %s", name)`` (positional arguments are %-interpolated) and
    the seed's ``log.info("message", extra={...})`` all work.
    """

    def _log(self, method: str, levelno: int, event: Any, args: tuple[Any, ...], kw: Any) -> None:
        try:
            if args:
                try:
                    event = str(event) % args
                except Exception:
                    event = f"{event} {args!r}"
            processors = self._processors
            if (
                processors is _PROCESSORS
                and len(processors) == 1
                and processors[0] is _from_structlog
            ):
                # only our processor configured: skip structlog's generic event-dict loop
                context = self._context
                _hand_over(
                    self._logger, method, levelno, event, {**context, **kw} if context else kw
                )
                return
            if levelno != METHOD_LEVELS.get(method):
                kw["_levelno"] = levelno
            self._process_event(method, event, kw)
        except structlog.DropEvent:  # a BaseException: a processor (e.g. a test capture) dropped it
            pass
        except Exception as error:
            report_failure(error)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.DEBUG):
            self._log("debug", logging.DEBUG, event, args, kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.INFO):
            self._log("info", logging.INFO, event, args, kw)

    msg = info

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.WARNING):
            self._log("warning", logging.WARNING, event, args, kw)

    warn = warning

    def error(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.ERROR):
            self._log("error", logging.ERROR, event, args, kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.ERROR):
            kw.setdefault("exc_info", True)
            self._log("exception", logging.ERROR, event, args, kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> None:
        if self._logger.enabled(logging.CRITICAL):
            self._log("critical", logging.CRITICAL, event, args, kw)

    fatal = critical

    def log(self, level: int | str, event: Any = None, *args: Any, **kw: Any) -> None:
        """Log at a numeric (or named) level, as stdlib's ``Logger.log``."""
        levelno = (
            METHOD_LEVELS.get(level.lower(), logging.INFO) if isinstance(level, str) else level
        )
        if self._logger.enabled(levelno):
            method = logging.getLevelName(levelno)
            self._log(
                method.lower() if isinstance(method, str) else "info", levelno, event, args, kw
            )

    def is_enabled_for(self, level: int) -> bool:
        """Whether a record at ``level`` would be emitted (skip expensive work otherwise)."""
        return bool(self._logger.enabled(level))

    # async spellings, as structlog's own loggers offer; logging never waits, so they just log
    async def adebug(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self.debug(event, *args, **kw)

    async def ainfo(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self.info(event, *args, **kw)

    async def awarning(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self.warning(event, *args, **kw)

    async def aerror(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self.error(event, *args, **kw)

    async def aexception(self, event: Any = None, *args: Any, **kw: Any) -> None:
        kw.setdefault("exc_info", True)
        self.exception(event, *args, **kw)

    async def acritical(self, event: Any = None, *args: Any, **kw: Any) -> None:
        self.critical(event, *args, **kw)


_structlog_done = False
# One list for good: loggers hold it, and structlog.testing.capture_logs() edits it in place.
_PROCESSORS: list[Any] = [_from_structlog]


def configure_structlog() -> None:
    global _structlog_done
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=BoundLogger,
        logger_factory=_gate_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    _structlog_done = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A logger named ``name`` (default: the calling module), with ``initial`` fields bound."""
    if not _structlog_done:
        configure_structlog()
    if name is None:
        name = str(sys._getframe(1).f_globals.get("__name__", "root"))
    # A concrete logger (no lazy proxy: one attribute lookup less per call). It holds the
    # configured processor list, which never changes but for test captures, in place.
    processors = structlog.get_config()["processors"]
    return BoundLogger(_gate_factory(name), processors, dict(initial))


class LineEmitter(Protocol):
    """What :func:`line_emitter` returns."""

    def __call__(
        self, levelno: int, message: Any, fields: Mapping[str, Any], *, cleaned: bool = False
    ) -> None: ...


def line_emitter(name: str, code: tuple[str, str, int, str] | None = None) -> LineEmitter:
    """``emit(levelno, message, fields)`` for one logger name and one fixed call site.

    For a hot path that writes one shape of line from one place (the web layer's
    access line, once per request; a business event): it skips structlog's call
    chain and the call-site search (``code`` is ``(path, function, line, module)``),
    which are a third of a line's cost. Levels, context fields, scrubbing, the JSON
    line and the OTLP record are the pipeline's as for any other line; while a
    test captures structlog output, records go through structlog instead.
    ``emit(..., cleaned=True)``: ``fields`` came out of :func:`clean_fields`.
    ``name`` may be the audit stream (:func:`get_audit_logger`'s name).
    """
    logger = get_logger(name)
    gate = logger._logger
    audit = bool(gate.audit)

    def emit(
        levelno: int, message: Any, fields: Mapping[str, Any], *, cleaned: bool = False
    ) -> None:
        if not gate.enabled(levelno):
            return
        if len(_PROCESSORS) != 1 or _PROCESSORS[0] is not _from_structlog:
            logger.log(levelno, message, **fields)
            return
        (core.active or current_pipeline()).handle(
            name, levelno, message, fields, code, time.time_ns(), None, None, audit, cleaned
        )

    return emit


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as a log line carries them: scrubbed, JSON-safe, long values truncated.

    For a caller that puts the same values on a span or in a record too: it cleans
    them once, uses the result everywhere and passes ``cleaned=True`` to its
    :func:`line_emitter`. An unrepresentable value becomes a marker, never an error.
    """
    return (core.active or current_pipeline()).cleaner.fields(fields)


def clean_value(value: Any) -> Any:
    """``value`` scrubbed and JSON-safe as a log field would carry it, but never cut as a
    whole (a long text inside it still is): for a copy that must stay complete."""
    cleaner = (core.active or current_pipeline()).cleaner
    try:
        return cleaner._walk(value, 1)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def get_audit_logger() -> Any:
    """The audit stream (the seed's audit.log): ``log.type=audit``, never filtered by level."""
    return get_logger(AUDIT_LOGGER)
