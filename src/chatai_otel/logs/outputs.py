"""Where log lines go besides stdout: the seed's application, error and audit files, and the
readable console rendering for a terminal."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, TextIO

import orjson

from chatai_otel.config import ConfigError
from chatai_otel.logs.line_writer import LineWriter

# --- outputs ---------------------------------------------------------------------------


class TextOutput:
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


class FileOutput:
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
