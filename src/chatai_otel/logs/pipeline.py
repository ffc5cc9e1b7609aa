"""One logging pipeline: every log line of the process, one JSON shape, printed once, exported once.

Two doors lead in, one pipeline does the work:

* **structlog** -- ``get_logger(__name__).info("dialog.opened", dialog_id=42)``.
  Our :class:`BoundLogger` checks the level first (nothing else runs for a
  disabled level), finds the call site and hands over. structlog's generic
  processor loop runs only when the chain is not just ours (e.g. inside
  ``structlog.testing.capture_logs()``); ``structlog.get_logger()`` works too.
* **stdlib logging** -- ``logging.getLogger("uvicorn.error").warning(...)``,
  SQLAlchemy, httpx, gunicorn, any library. A handler on the root logger
  (:class:`StdlibBridge`) hands each record over. Console handlers that
  frameworks install for themselves (uvicorn's ``dictConfig``, gunicorn's
  workers) are removed and their loggers made to propagate, at configure time,
  after every ``dictConfig``/``fileConfig``/``basicConfig`` and after ``fork``,
  so their lines come out in the same shape and exactly once.

:meth:`Pipeline.emit` then runs the steps of the seed's formatter as plain
functions in a fixed order -- context fields (:mod:`chatai_otel.context`),
level, ISO-8601 UTC timestamp, logger name, call site (module, function, line),
trace correlation (``trace_id``/``span_id`` of the active span), exception as
structured fields (type, message, stacktrace), normalisation (values JSON
cannot encode become text, values over ``CHATAI_OTEL_LOG_MAX_VALUE_SIZE`` are
truncated with a marker), redaction (:mod:`chatai_otel.redaction`) -- and
renders the line with orjson. They are straight-line code rather than a list
of structlog processors: the whole line has a 15 µs budget, and one hop of
structlog's generic chain (a copied event dict, a loop, type checks) costs more
than most of the steps themselves.

**Output.** A JSON line on stdout (a readable, escaped console line when stdout
is a TTY or ``CHATAI_OTEL_LOG_FORMAT=console``), plus the seed's optional files:
application log, errors (>= ERROR) and the audit log. Keys, in order::

    timestamp level logger message <context + extra fields> module function line
    [exception {type, message, stacktrace}] [trace_id span_id]

**OTLP: why this path** (measured with ``./dev bench logging``, see docs/benchmarks.md).
The candidates, all duplicate-free only if exactly one of them runs:

1. the SDK's ``LoggingHandler`` / ``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED``:
   deprecated since SDK 1.40;
2. its successor, ``opentelemetry-instrumentation-logging``: another root
   handler that calls ``Logger.emit`` for stdlib records only (structlog lines
   would need a second path) -- with the seed's JSON file handler next to it,
   about 3.4x the seed's cost per line, and it drops records at its default
   queue size;
3. our final step calling ``LoggerProvider.get_logger(...).emit(...)``: about
   10-25 µs per record on the calling thread (``BoundedAttributes`` validation,
   a record copy, a frozen dataclass), plus 20-45 µs per record in the stock
   OTLP encoder on the batch thread, which under the GIL is the caller's time too;
4. **chosen**: the step that writes the JSON line hands a plain tuple to
   :class:`chatai_otel.export.logs.LogExportProcessor`, the one log processor on
   the ``LoggerProvider`` built in :mod:`chatai_otel.providers` (OTel Logs API records
   reach the same queue through ``on_emit``). The calling thread pays a tuple
   and a deque append; the worker writes the protobuf bytes itself (~2 µs per
   record) and sends them through the SDK's own OTLP exporters. One step
   writes and exports, so a line is never exported without being printed, nor
   twice. The distro does not load the stock logging instrumentor.

OTLP record: severity number and text, body = the message, the fields as
attributes (nested values as OTLP maps and arrays; ``user_id`` -> ``user.id``,
``session_id`` -> ``session.id``), ``code.file.path``, ``code.function.name``,
``code.line.number``, ``exception.type``/``.message``/``.stacktrace``,
trace_id/span_id/flags of the active span, the logger name as the
instrumentation scope, ``log.type=audit`` on the audit stream.

**Never exported:** records of the ``opentelemetry.*`` loggers and of
``chatai_otel.export`` (exporting "export failed" over the failing export
would loop). They are printed on stderr, in the same shape.

**Audit:** :func:`get_audit_logger` (and the stdlib logger ``audit``, as in the
seed) is a separate stream: never filtered by level, ``log.type=audit``,
written to the audit file when one is configured and not to the application
or error files.

A logging call never raises into its caller: a failure is reported once per
minute on stderr.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from enum import Enum
from itertools import islice
from pathlib import PurePath
from types import CodeType, FrameType
from typing import Any, BinaryIO, Protocol, TextIO
from uuid import UUID

import orjson
import structlog
from opentelemetry import trace

from chatai_otel import context
from chatai_otel._sdk_compat import CURRENT_SPAN_KEY, LoggerProvider
from chatai_otel.config import ConfigError, Settings
from chatai_otel.export.logs import LogExportProcessor, processor_of
from chatai_otel.logs.line_writer import LineWriter, stdout_writer
from chatai_otel.redaction import (
    REDACTED,
    Scrubber,
    configure_scrubber,
    get_scrubber,
    structured_fields,
)

__all__ = [
    "BoundLogger",
    "LineEmitter",
    "Pipeline",
    "StdlibBridge",
    "capture_stdlib_logging",
    "clean_fields",
    "clean_value",
    "configure_logging",
    "get_audit_logger",
    "get_logger",
    "line_emitter",
    "skip_callsite_modules",
]

AUDIT_LOGGER = "audit"
# Printed (on stderr), never exported: exporting them could loop when export fails.
PRINT_ONLY_PREFIXES: tuple[str, ...] = ("opentelemetry", "chatai_otel.export")

_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
# JSON field -> OTLP attribute name, where a semantic convention exists.
ATTRIBUTE_NAMES = {"user_id": "user.id", "session_id": "session.id"}
_TRUNCATED = "…[truncated {} chars]"
_CORE_KEYS = frozenset(("timestamp", "level", "logger", "message"))


def _severity_number(levelno: int) -> int:
    """The OTel severity of a stdlib level: DEBUG 5, INFO 9, WARNING 13, ERROR 17, CRITICAL 21;
    the levels just above each (11, 12, 13...) take its next steps, up to FATAL4 (24)."""
    if levelno < logging.DEBUG:
        return 1  # TRACE (uvicorn's TRACE is 5)
    return min(4 * (levelno // 10) + 1 + min(levelno % 10, 3), 24)


_SEVERITY_CACHE: dict[int, int] = {}
_LEVEL_NAMES: dict[int, str] = {}


def _level_name(levelno: int) -> str:
    name = _LEVEL_NAMES.get(levelno)
    if name is None:
        name = logging.getLevelName(levelno)
        name = name if isinstance(name, str) and not name.startswith("Level ") else str(levelno)
        _LEVEL_NAMES[levelno] = name
    return name


# --- outputs ---------------------------------------------------------------------------


class _TextOutput:
    """A text stream looked up at write time (so test capture and reassignment work).

    Lines for the process's own stdout go through ``background`` when there is one
    (:mod:`chatai_otel.logs.line_writer`: no system call on the logging path); a stream put
    in its place (a test capture, ``redirect_stdout``) is written on the spot.
    The locks of the outputs are re-entrant: a signal handler that logs (SIGTERM flush)
    may interrupt this very thread in the middle of a write.
    """

    def __init__(self, get: Callable[[], TextIO], background: LineWriter | None = None) -> None:
        self._get = get
        self._lock = threading.RLock()
        self._background = background

    def write(self, text: str, urgent: bool = False) -> None:
        stream = self._get()
        background = self._background
        if background is not None and stream is sys.__stdout__:
            background.write(text, urgent)
            return
        with self._lock:
            stream.write(text)
            stream.flush()

    def reinit(self) -> None:
        self._lock = threading.RLock()

    def close(self) -> None:
        if self._background is not None:
            self._background.flush()


class _FileOutput:
    """An append-only JSON-lines file, unbuffered: a line is on disk when the call returns."""

    def __init__(self, path: str, variable: str) -> None:
        self.path = path
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            self._file: BinaryIO = open(path, "ab", buffering=0)  # noqa: SIM115
        except OSError as error:
            raise ConfigError(variable, path, f"expected a writable file path ({error})") from None
        self._lock = threading.RLock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._file.write(data)

    def reinit(self) -> None:
        self._lock = threading.RLock()

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


# --- console rendering -----------------------------------------------------------------

# Control characters (and Unicode line breaks) shown escaped, so no value can start a new line.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, 0x85)}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_control(text: str) -> str:
    """``text`` with every control character and line break escaped (``\\n``, ``\\x1b``...)."""
    return text.translate(_ESCAPES)


_COLORS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
_CONSOLE_SKIP = frozenset(("timestamp", "level", "logger", "message", "exception"))


def render_console(out: Mapping[str, Any], colors: bool) -> str:
    """A readable one-record rendering; every value escaped, the traceback indented with ``|``."""
    level = str(out.get("level", ""))
    head = f"{out.get('timestamp', '')} {level:<8} [{escape_control(str(out.get('logger', '')))}] "
    if colors:
        head = f"{_COLORS.get(level, '')}{head}{_RESET}"
    parts = [head, escape_control(str(out.get("message", "")))]
    for key, value in out.items():
        if key in _CONSOLE_SKIP:
            continue
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        parts.append(f"  {escape_control(str(key))}={escape_control(shown)}")
    text = "".join(parts) + "\n"
    exception = out.get("exception")
    if isinstance(exception, Mapping):
        stack = str(exception.get("stacktrace") or "")
        lines = stack.splitlines() or [f"{exception.get('type')}: {exception.get('message')}"]
        text += "".join(f"    | {escape_control(line)}\n" for line in lines)
    return text


# --- value normalisation ----------------------------------------------------------------

_PLAIN = (int, float, bool, type(None))


class _Cleaner:
    """Scrubs, normalises and truncates field values in one walk (never raises)."""

    def __init__(self, scrubber: Scrubber, max_size: int) -> None:
        self.scrubber = scrubber
        self.max_size = max_size
        self._text_cache: dict[str, str] = {}

    def text(self, value: str) -> str:
        if len(value) <= 64:
            cached = self._text_cache.get(value)
            if cached is not None:
                return cached
            cleaned = self.scrubber.scrub_text(value)
            if len(self._text_cache) >= 4096:
                self._text_cache.clear()
            self._text_cache[value] = cleaned
            return cleaned
        if len(value) > self.max_size:  # scrubbed before the cut: no half secret survives it
            head = self.scrubber.scrub_text_head(value, self.max_size)
            return head + _TRUNCATED.format(len(value) - self.max_size)
        return self.scrubber.scrub_text(value)

    def fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        # the hot loop of every record: the scrubber's and our own caches are read inline
        secret_cache = self.scrubber.key_cache
        is_secret = self.scrubber.is_secret_key
        text_cache = self._text_cache
        result: dict[str, Any] = {}
        for key, value in fields.items():
            if type(key) is not str:
                key = str(key)
            secret = secret_cache.get(key)
            if secret is None:
                secret = is_secret(key)
            if secret:
                result[key] = REDACTED
                continue
            kind = type(value)
            if kind is str:
                cached = text_cache.get(value)
                result[key] = cached if cached is not None else self.text(value)
            elif kind is int:
                result[key] = value if -(1 << 63) <= value < (1 << 64) else str(value)
            elif kind is float or kind is bool or value is None:
                result[key] = value
            else:
                result[key] = self.value(value, 1)
        return result

    def value(self, value: Any, depth: int) -> Any:
        try:
            cleaned = self._walk(value, depth)
        except Exception:
            cleaned = f"<unrepresentable {type(value).__qualname__}>"
        if isinstance(cleaned, dict | list):
            size = len(orjson.dumps(cleaned))
            if size > self.max_size:
                rendered = orjson.dumps(cleaned).decode()
                return rendered[: self.max_size] + _TRUNCATED.format(size - self.max_size)
        return cleaned

    def _walk_dict(self, value: dict[Any, Any], depth: int) -> dict[str, Any]:
        secret_cache = self.scrubber.key_cache
        text_cache = self._text_cache
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = key if type(key) is str else str(key)
            secret = secret_cache.get(name)
            if secret is None:
                secret = self.scrubber.is_secret_key(name)
            if secret:
                result[name] = REDACTED
                continue
            kind = type(item)
            if kind is str:
                result[name] = text_cache.get(item) or self.text(item)
            elif (
                kind is float
                or kind is bool
                or item is None
                or (kind is int and -(1 << 63) <= item < (1 << 64))
            ):
                result[name] = item
            else:
                result[name] = self._walk(item, depth + 1)
        return result

    def _walk(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is dict and depth <= 10:  # the common case first: a plain dict of plain values
            return self._walk_dict(value, depth)
        if kind is str:
            return self._text_cache.get(value) or self.text(value)
        if kind is int:
            return value if -(1 << 63) <= value < (1 << 64) else str(value)
        if kind is float or kind is bool or value is None:
            return value
        if isinstance(value, str):
            return self.text(str(value))
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            value = int(value)
            return value if -(1 << 63) <= value < (1 << 64) else str(value)
        if isinstance(value, float):
            return float(value)
        if depth > 10:
            return "[too deep]"
        if isinstance(value, Mapping):
            is_secret = self.scrubber.is_secret_key
            result: dict[str, Any] = {}
            for key, item in value.items():
                name = key if isinstance(key, str) else str(key)
                result[name] = REDACTED if is_secret(name) else self._walk(item, depth + 1)
            return result
        if isinstance(value, list | tuple | set | frozenset):
            return [self._walk(item, depth + 1) for item in value]
        if isinstance(value, datetime | date | dtime):
            return value.isoformat()
        if isinstance(value, UUID | Decimal | PurePath):
            return str(value)
        if isinstance(value, Enum):
            return self._walk(value.value, depth + 1)
        if isinstance(value, bytes | bytearray | memoryview):
            return self.text(bytes(value).decode("utf-8", "backslashreplace"))
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__qualname__}: {value}")
        structured = structured_fields(value)
        if structured is not None:
            return self._walk(structured, depth)
        return self.text(_safe_repr(value))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


# --- the pipeline ----------------------------------------------------------------------


def _span_lookup() -> Callable[[], Any]:
    """The active span, read straight from the context (skips an ABC isinstance check)."""
    key = CURRENT_SPAN_KEY
    if key is not None:
        from opentelemetry.context import get_current

        def current_span() -> Any:
            span = get_current().get(key)
            return span if span is not None and hasattr(span, "get_span_context") else None

        return current_span

    def public_lookup() -> Any:  # an API without the context key we know
        return trace.get_current_span()

    return public_lookup


_current_span = _span_lookup()

_local = threading.local()
_failure_reported = [0.0]


def _report_failure(error: BaseException) -> None:
    """A record could not be handled: say so on stderr, at most once a minute, never raise."""
    try:
        now = time.monotonic()
        if now - _failure_reported[0] < 60.0:
            return
        _failure_reported[0] = now
        line = {
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "level": "ERROR",
            "logger": "chatai_otel.logs",
            "message": "a log record could not be processed",
            "error": get_scrubber().scrub_text_head(f"{type(error).__qualname__}: {error}", 500),
        }
        sys.stderr.write(orjson.dumps(line, default=str).decode() + "\n")
        sys.stderr.flush()
    except Exception:
        pass


class Pipeline:
    """The configured outputs, exporter and scrubber; :meth:`emit` handles one record."""

    def __init__(
        self,
        *,
        scrubber: Scrubber,
        max_value_size: int = 8192,
        stdout: bool = True,
        console: bool = False,
        colors: bool = False,
        stdout_interval: float = 0.0,
        app_file: _FileOutput | None = None,
        error_file: _FileOutput | None = None,
        audit_file: _FileOutput | None = None,
        processor: LogExportProcessor | None = None,
    ) -> None:
        self.cleaner = _Cleaner(scrubber, max_value_size)
        self.max_value_size = max_value_size
        background = stdout_writer(stdout_interval) if stdout_interval > 0 else None
        self.stdout = _TextOutput(lambda: sys.stdout, background) if stdout else None
        self.stderr = _TextOutput(lambda: sys.stderr)
        self.console = console
        self.colors = colors
        self.app_file = app_file
        self.error_file = error_file
        self.audit_file = audit_file
        self.processor = processor
        self._timestamp: tuple[int, str] = (-1, "")
        self._ids: tuple[int, int, str, str] = (0, 0, "", "")

    def close(self) -> None:
        for output in (self.stdout, self.app_file, self.error_file, self.audit_file):
            if output is not None:
                output.close()

    def after_fork(self) -> None:
        for output in (self.stdout, self.stderr, self.app_file, self.error_file, self.audit_file):
            if output is not None:
                output.reinit()

    # --- steps -----------------------------------------------------------------------

    def timestamp(self, ns: int) -> str:
        """ISO-8601 UTC with microseconds; the date part is formatted once per second."""
        seconds, rest = divmod(ns, 1_000_000_000)
        cached = self._timestamp
        if cached[0] != seconds:
            cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
            self._timestamp = cached
        return f"{cached[1]}.{rest // 1000:06d}Z"

    def trace_ids(self) -> tuple[int, int, int, str, str] | None:
        """(trace_id, span_id, flags, trace hex, span hex) of the active span, or None."""
        span = _current_span()
        if span is None:
            return None
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return None
        trace_id, span_id = span_context.trace_id, span_context.span_id
        cached = self._ids
        if cached[0] != span_id or cached[1] != trace_id:
            cached = (span_id, trace_id, format(trace_id, "032x"), format(span_id, "016x"))
            self._ids = cached
        return trace_id, span_id, int(span_context.trace_flags), cached[2], cached[3]

    def exception(self, exc_info: Any) -> dict[str, str] | None:
        """{type, message, stacktrace} of ``exc_info`` (True, an exception, or a sys.exc_info tuple)."""
        if exc_info is None or exc_info is False:
            return None
        if exc_info is True:
            exc_info = sys.exc_info()
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[0] is None:
            return None
        kind, error, tb = exc_info
        module = getattr(kind, "__module__", "")
        qualname = getattr(kind, "__qualname__", str(kind))
        type_name = qualname if module in ("builtins", "", None) else f"{module}.{qualname}"
        try:
            message = str(error)
        except Exception:
            message = "<unprintable exception>"
        try:
            stacktrace = "".join(traceback.format_exception(kind, error, tb))
        except Exception:
            stacktrace = f"{type_name}: {message}"
        return {
            "type": type_name,
            "message": self.cleaner.text(message),
            "stacktrace": self._long_text(stacktrace),
        }

    def _long_text(self, text: str) -> str:
        """Stack traces keep head and tail (the tail names the failing line)."""
        limit = self.max_value_size * 4
        scrubber = self.cleaner.scrubber
        if len(text) > limit:
            half = limit // 2
            head = scrubber.scrub_text_head(text, half)
            tail = scrubber.scrub_text_tail(text, half)
            return f"{head}{_TRUNCATED.format(len(text) - limit)}{tail}"
        return scrubber.scrub_text(text)

    # --- one record --------------------------------------------------------------------

    def emit(
        self,
        name: str,
        levelno: int,
        message: Any,
        fields: Mapping[str, Any],
        *,
        code: tuple[str, str, int, str] | None,
        ns: int,
        exc_info: Any = None,
        stack: str | None = None,
        audit: bool = False,
    ) -> None:
        """Render, write and export one record. ``code`` is (path, function, line, module)."""
        self.handle(name, levelno, message, fields, code, ns, exc_info, stack, audit)

    def handle(
        self,
        name: str,
        levelno: int,
        message: Any,
        fields: Mapping[str, Any],
        code: tuple[str, str, int, str] | None,
        ns: int,
        exc_info: Any,
        stack: str | None,
        audit: bool,
        precleaned: bool = False,
    ) -> None:
        """:meth:`emit` with positional arguments (the hot path), guarded against re-entry.

        ``precleaned``: ``fields`` already came out of :func:`clean_fields` (a caller that
        reuses the cleaned values elsewhere, so they are walked once).
        """
        if getattr(_local, "busy", False):
            # Logging from inside the pipeline (a __repr__ that logs, an exporter warning):
            # print it plainly, never recurse, never export.
            self._emit_nested(name, levelno, message)
            return
        _local.busy = True
        try:
            self._emit(name, levelno, message, fields, code, ns, exc_info, stack, audit, precleaned)
        except Exception as error:
            _report_failure(error)
        finally:
            _local.busy = False

    def _emit(
        self,
        name: str,
        levelno: int,
        message: Any,
        fields: Mapping[str, Any],
        code: tuple[str, str, int, str] | None,
        ns: int,
        exc_info: Any,
        stack: str | None,
        audit: bool,
        precleaned: bool = False,
    ) -> None:
        cleaner = self.cleaner
        bound = context.fields()
        if precleaned:
            cleaned = {**cleaner.fields(bound), **fields} if bound else dict(fields)
        else:
            if bound:
                fields = {**bound, **fields}
            cleaned = cleaner.fields(fields) if fields else {}
        if type(message) is str:
            text = cleaner._text_cache.get(message) or cleaner.text(message)
        else:
            text = cleaner.text(_safe_str(message))
        level = _LEVEL_NAMES.get(levelno) or _level_name(levelno)
        timestamp = self.timestamp(ns)
        out: dict[str, Any] = {
            "timestamp": timestamp,
            "level": level,
            "logger": name,
            "message": text,
            **cleaned,
        }
        if len(out) != 4 + len(cleaned):  # a field named like a core key: the core value wins
            out.update(timestamp=timestamp, level=level, logger=name, message=text)
        if audit:
            out["log.type"] = "audit"
        if code is not None:
            out["module"] = code[3]
            out["function"] = code[1]
            out["line"] = code[2]
        exception = self.exception(exc_info) if exc_info else None
        if exception is not None:
            out["exception"] = exception
        if stack:
            out["stack"] = self._long_text(stack)
        ids = self.trace_ids()
        if ids is not None:
            out["trace_id"] = ids[3]
            out["span_id"] = ids[4]

        print_only = name.startswith(PRINT_ONLY_PREFIXES)
        line = orjson.dumps(out, option=orjson.OPT_APPEND_NEWLINE)
        if not line.isascii():  # (cheap) only non-ASCII lines can hold U+2028, U+2029, U+0085
            line = _escape_unicode_line_breaks(line)
        self._write(out, line, levelno, audit, print_only)

        processor = self.processor
        if processor is None or print_only:
            return
        attributes: dict[str, Any] = cleaned
        if "user_id" in cleaned or "session_id" in cleaned:
            attributes = {ATTRIBUTE_NAMES.get(k, k): v for k, v in cleaned.items()}
        if exception is not None or audit or stack:
            attributes = dict(attributes)
            if exception is not None:
                attributes["exception.type"] = exception["type"]
                attributes["exception.message"] = exception["message"]
                attributes["exception.stacktrace"] = exception["stacktrace"]
            if stack:
                attributes["code.stacktrace"] = out["stack"]
            if audit:
                attributes["log.type"] = "audit"
        event_name = attributes.get("otel.event.name") if attributes else None
        severity = _SEVERITY_CACHE.get(levelno)
        if severity is None:
            severity = _SEVERITY_CACHE.setdefault(levelno, _severity_number(levelno))
        processor.submit(
            (
                ns,
                severity,
                level,
                text,
                attributes,
                ids[0] if ids is not None else 0,
                ids[1] if ids is not None else 0,
                ids[2] if ids is not None else 0,
                name,
                code,  # (path, function, line, module): the encoder reads the first three
                event_name if isinstance(event_name, str) else None,
            )
        )

    def _write(
        self, out: dict[str, Any], line: bytes, levelno: int, audit: bool, print_only: bool
    ) -> None:
        stream = self.stderr if print_only else self.stdout
        if stream is not None:
            try:
                stream.write(
                    render_console(out, self.colors) if self.console else line.decode(),
                    levelno >= logging.ERROR,  # written at once, after all lines before it
                )
            except Exception:
                pass  # a closed or broken stdout never breaks the caller
        try:
            if audit:
                if self.audit_file is not None:
                    self.audit_file.write(line)
                return
            if self.app_file is not None:
                self.app_file.write(line)
            if levelno >= logging.ERROR and self.error_file is not None:
                self.error_file.write(line)
        except Exception:
            pass

    def _emit_nested(self, name: str, levelno: int, message: Any) -> None:
        try:
            line = {
                "timestamp": self.timestamp(time.time_ns()),
                "level": _level_name(levelno),
                "logger": name,
                "message": self.cleaner.scrubber.scrub_text(_safe_str(message)),
            }
            self.stderr.write(orjson.dumps(line).decode() + "\n")
        except Exception:
            pass


def _escape_unicode_line_breaks(line: bytes) -> bytes:
    """JSON allows raw U+2028, U+2029 and U+0085 in strings, but some readers split lines on
    them; outside strings JSON is ASCII, so replacing them with escapes is always valid."""
    return (
        line.replace(b"\xe2\x80\xa8", b"\\u2028")
        .replace(b"\xe2\x80\xa9", b"\\u2029")
        .replace(b"\xc2\x85", b"\\u0085")
    )


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)


def _default_pipeline() -> Pipeline:
    """Before configure_logging(): JSON (or console on a TTY) to stdout, nothing exported."""
    tty = False
    try:
        tty = sys.stdout.isatty()
    except Exception:
        pass
    return Pipeline(scrubber=configure_scrubber(), console=tty, colors=tty)


_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


def _current() -> Pipeline:
    pipeline = _pipeline
    if pipeline is None:
        with _pipeline_lock:
            pipeline = _pipeline or _install_pipeline(_default_pipeline())
    return pipeline


def _install_pipeline(pipeline: Pipeline) -> Pipeline:
    global _pipeline
    _pipeline = pipeline
    return pipeline


# --- call sites --------------------------------------------------------------------------

_skip_prefixes: tuple[str, ...] = ("structlog", "chatai_otel.logs", "logging")
# id(code object) -> (the code object, None for an internal frame (skip it) or
# (path, function, module stem, module name)). Keyed by id: a code object's own hash
# walks its constants and bytecode on every lookup. The entry holds the code object,
# so the id cannot be reused while it is cached; the `is` check guards clears.
_code_info: dict[int, tuple[CodeType, tuple[str, str, str, str] | None]] = {}
# (id(code), instruction offset) -> line number: ``frame.f_lineno`` decodes the line
# table from the top of the function on every call.
_line_numbers: dict[tuple[int, int], int] = {}
_CACHE_LIMIT = 8192


def skip_callsite_modules(*prefixes: str) -> None:
    """Attribute log lines to the caller of these modules (e.g. a logging helper of yours)."""
    global _skip_prefixes
    _skip_prefixes = (*_skip_prefixes, *prefixes)
    _forget_code()


def _forget_code() -> None:
    # together: a line number is keyed by the id of a code object _code_info keeps alive
    _code_info.clear()
    _line_numbers.clear()


def _frame_info(frame: FrameType) -> tuple[str, str, str, str] | None:
    code = frame.f_code
    module_name = str(frame.f_globals.get("__name__", ""))
    if any(module_name == p or module_name.startswith(p + ".") for p in _skip_prefixes):
        info = None
    else:
        path = code.co_filename
        stem = os.path.splitext(os.path.basename(path))[0]
        info = (path, code.co_name, stem, module_name)
    if len(_code_info) >= _CACHE_LIMIT:
        _forget_code()
    _code_info[id(code)] = (code, info)
    return info


def _line_number(frame: FrameType, code: CodeType) -> int:
    key = (id(code), frame.f_lasti)
    line = _line_numbers.get(key)
    if line is None:
        line = frame.f_lineno
        if len(_line_numbers) >= _CACHE_LIMIT:
            _line_numbers.clear()
        _line_numbers[key] = line
    return line


def _callsite(depth: int) -> tuple[tuple[str, str, int, str] | None, str]:
    """((path, function, line, module stem), module name) of the first frame outside logging."""
    try:
        frame: FrameType | None = sys._getframe(depth)
    except ValueError:
        return None, ""
    while frame is not None:
        code = frame.f_code
        entry = _code_info.get(id(code))
        info = entry[1] if entry is not None and entry[0] is code else _frame_info(frame)
        if info is not None:
            return (info[0], info[1], _line_number(frame, code), info[2]), info[3]
        frame = frame.f_back
    return None, ""


# --- structlog -----------------------------------------------------------------------------


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


def _follow_levels(configured: bool) -> None:
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
    levelno = event_dict.pop("_levelno", None) or _METHOD_LEVELS.get(method, logging.INFO)
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
    code, module_name = _callsite(2)
    (_pipeline or _current()).handle(
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
            if levelno != _METHOD_LEVELS.get(method):
                kw["_levelno"] = levelno
            self._process_event(method, event, kw)
        except structlog.DropEvent:  # a BaseException: a processor (e.g. a test capture) dropped it
            pass
        except Exception as error:
            _report_failure(error)

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
            _METHOD_LEVELS.get(level.lower(), logging.INFO) if isinstance(level, str) else level
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


def _configure_structlog() -> None:
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
        _configure_structlog()
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
        (_pipeline or _current()).handle(
            name, levelno, message, fields, code, time.time_ns(), None, None, audit, cleaned
        )

    return emit


def clean_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as a log line carries them: scrubbed, JSON-safe, long values truncated.

    For a caller that puts the same values on a span or in a record too: it cleans
    them once, uses the result everywhere and passes ``cleaned=True`` to its
    :func:`line_emitter`. An unrepresentable value becomes a marker, never an error.
    """
    return (_pipeline or _current()).cleaner.fields(fields)


def clean_value(value: Any) -> Any:
    """``value`` scrubbed and JSON-safe as a log field would carry it, but never cut as a
    whole (a long text inside it still is): for a copy that must stay complete."""
    cleaner = (_pipeline or _current()).cleaner
    try:
        return cleaner._walk(value, 1)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def get_audit_logger() -> Any:
    """The audit stream (the seed's audit.log): ``log.type=audit``, never filtered by level."""
    return get_logger(AUDIT_LOGGER)


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
            _report_failure(error)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


def _emit_stdlib(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        if record.args:
            message = f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} (could not format)"
        else:
            message = _safe_str(record.msg)
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
    (_pipeline or _current()).handle(
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


def _wrap_logging_config() -> None:
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
    pipeline = _pipeline
    if pipeline is not None:
        pipeline.after_fork()
    capture_stdlib_logging()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- configuration ----------------------------------------------------------------------------


def _level(name: str) -> int:
    return int(logging.getLevelName(name.upper()))


def configure_logging(settings: Settings, logger_provider: LoggerProvider | None) -> None:
    """Install the pipeline for the whole process (a second call replaces the first)."""
    global _bridge
    scrubber = configure_scrubber(settings.redact_keys, settings.redact_safe_keys)
    stdout_tty = False
    try:
        stdout_tty = sys.stdout.isatty()
    except Exception:
        pass
    console = settings.log_format == "console" or (settings.log_format == "auto" and stdout_tty)
    files = {
        "app_file": (settings.log_file, "CHATAI_OTEL_LOG_FILE"),
        "error_file": (settings.log_error_file, "CHATAI_OTEL_LOG_ERROR_FILE"),
        "audit_file": (settings.log_audit_file, "CHATAI_OTEL_LOG_AUDIT_FILE"),
    }
    opened = {key: _FileOutput(path, variable) for key, (path, variable) in files.items() if path}
    pipeline = Pipeline(
        scrubber=scrubber,
        max_value_size=settings.log_max_value_size,
        stdout=settings.log_stdout,
        console=console,
        colors=console and stdout_tty,
        stdout_interval=settings.log_stdout_interval,
        processor=processor_of(logger_provider),
        **opened,
    )
    with _pipeline_lock:
        previous = _pipeline
        _install_pipeline(pipeline)
    if previous is not None:
        previous.close()

    root = logging.getLogger()
    root.setLevel(_level(settings.log_level))
    for name, level in settings.log_levels.items():
        logging.getLogger(name).setLevel(_level(level))
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.setLevel(1)  # never filtered by level
    audit.disabled = False

    global _quiet_loggers
    _release_quiet_loggers()
    _quiet_loggers = (
        (UVICORN_ACCESS,) if settings.access_log and not settings.uvicorn_access_log else ()
    )

    _configure_structlog()
    _follow_levels(True)
    if _bridge is None:
        _bridge = StdlibBridge()
    capture_stdlib_logging()
    _wrap_logging_config()


def _release_quiet_loggers() -> None:
    global _quiet_loggers
    for name in _quiet_loggers:
        logging.getLogger(name).propagate = True
    _quiet_loggers = ()


def reset_logging() -> None:
    """Remove the bridge and go back to the default pipeline (for tests and tools)."""
    global _bridge
    _release_quiet_loggers()
    if _bridge is not None:
        logging.getLogger().removeHandler(_bridge)
        _bridge = None
    with _pipeline_lock:
        previous = _pipeline
        _install_pipeline(_default_pipeline())
    if previous is not None:
        previous.close()
    _follow_levels(False)
