"""The call site of a log line (module, function, line), found by walking up the stack once
per code object and memoized, skipping logging frameworks' own frames."""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

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
    forget_code()


def forget_code() -> None:
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
        forget_code()
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


def callsite(depth: int) -> tuple[tuple[str, str, int, str] | None, str]:
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
