"""Field values made safe for one JSON line: what JSON cannot encode becomes text, long values
are truncated with a marker, secrets are redacted (by key and by shape)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import orjson

from chatai_otel.redaction import (
    REDACTED,
    Scrubber,
    cannot_hold_a_secret_shape,
    structured_fields,
)

# --- value normalisation ----------------------------------------------------------------

TRUNCATED = "…[truncated {} chars]"  # the marker on a value cut to the size limit

_PLAIN = (int, float, bool, type(None))


class ValueCleaner:
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
            if cannot_hold_a_secret_shape(value):  # ids: unique, so not worth remembering
                return value
            cleaned = self.scrubber.scrub_text(value)
            if len(self._text_cache) >= 4096:
                self._text_cache.clear()
            self._text_cache[value] = cleaned
            return cleaned
        if len(value) > self.max_size:  # scrubbed before the cut: no half secret survives it
            head = self.scrubber.scrub_text_head(value, self.max_size)
            return head + TRUNCATED.format(len(value) - self.max_size)
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
                return rendered[: self.max_size] + TRUNCATED.format(size - self.max_size)
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
        return self.text(safe_repr(value))


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
