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
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

from chatai_otel import context
from chatai_otel._sdk_compat import CURRENT_SPAN_KEY
from chatai_otel.export.logs import LogExportProcessor
from chatai_otel.logs.line_writer import stdout_writer
from chatai_otel.logs.outputs import FileOutput, TextOutput, render_console
from chatai_otel.logs.values import TRUNCATED, ValueCleaner, safe_repr
from chatai_otel.redaction import (
    Scrubber,
    configure_scrubber,
    get_scrubber,
)

AUDIT_LOGGER = "audit"
# Printed (on stderr), never exported: exporting them could loop when export fails.
PRINT_ONLY_PREFIXES: tuple[str, ...] = ("opentelemetry", "chatai_otel.export")

METHOD_LEVELS = {
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


def report_failure(error: BaseException) -> None:
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
        app_file: FileOutput | None = None,
        error_file: FileOutput | None = None,
        audit_file: FileOutput | None = None,
        processor: LogExportProcessor | None = None,
    ) -> None:
        self.cleaner = ValueCleaner(scrubber, max_value_size)
        self.max_value_size = max_value_size
        background = stdout_writer(stdout_interval) if stdout_interval > 0 else None
        self.stdout = TextOutput(lambda: sys.stdout, background) if stdout else None
        self.stderr = TextOutput(lambda: sys.stderr)
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
            return f"{head}{TRUNCATED.format(len(text) - limit)}{tail}"
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
            report_failure(error)
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
            text = cleaner.text(safe_str(message))
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
                "message": self.cleaner.scrubber.scrub_text(safe_str(message)),
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


def safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


def default_pipeline() -> Pipeline:
    """Before configure_logging(): JSON (or console on a TTY) to stdout, nothing exported."""
    tty = False
    try:
        tty = sys.stdout.isatty()
    except Exception:
        pass
    return Pipeline(scrubber=configure_scrubber(), console=tty, colors=tty)


active: Pipeline | None = None
pipeline_lock = threading.Lock()


def current_pipeline() -> Pipeline:
    pipeline = active
    if pipeline is None:
        with pipeline_lock:
            pipeline = active or install_pipeline(default_pipeline())
    return pipeline


def install_pipeline(pipeline: Pipeline) -> Pipeline:
    global active
    active = pipeline
    return pipeline
