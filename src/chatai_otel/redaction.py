"""One scrubber for log fields, span attributes, event data, headers and exception text.

Secrets are recognised two ways: by the *key* they are stored under (at any
nesting depth) and by the *shape* of a value (bearer tokens, JWTs, credentials
inside URLs), wherever it appears. Both are replaced by :data:`REDACTED`.
This module imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_SECRET_KEYS", "REDACTED", "Scrubber", "scrub", "scrub_headers", "scrub_text"]

REDACTED = "[REDACTED]"

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "set_cookie",
    "session",
    "credential",
    "private_key",
    "jwt",
    "csrf",
    "xsrf",
    "card_number",
    "cardnumber",
    "ssn",
)

_KEY_SPLIT = re.compile(r"[^a-z0-9]+")
_VALUE_PATTERNS = (
    # credentials inside URLs: scheme://user:password@host
    (
        re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"),
        r"\g<keep>" + REDACTED,
    ),
    # Authorization-style values
    (
        re.compile(r"(?i)\b(?P<keep>bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
        r"\g<keep> " + REDACTED,
    ),
    # JSON Web Tokens anywhere
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
)


class Scrubber:
    """Redacts by key and by value shape; extend the key list or mark keys safe."""

    def __init__(self, extra_keys: Iterable[str] = (), safe_keys: Iterable[str] = ()) -> None:
        self._secret_words = frozenset(k.lower() for k in (*DEFAULT_SECRET_KEYS, *extra_keys))
        self._safe_keys = frozenset(k.lower() for k in safe_keys)
        self._cache: dict[str, bool] = {}

    def is_secret_key(self, key: str) -> bool:
        """True for keys like ``password``, ``X-Api-Key``, ``user_token``, but not ``author``."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lowered = key.lower()
        if lowered in self._safe_keys:
            result = False
        else:
            normalised = _KEY_SPLIT.sub("_", lowered).strip("_")
            words = normalised.split("_")
            result = (
                normalised in self._secret_words
                or any(word in self._secret_words for word in words)
                or any(
                    "_".join(words[i : i + 2]) in self._secret_words for i in range(len(words) - 1)
                )
                or normalised.replace("_", "") in self._secret_words
            )
        if len(self._cache) < 4096:
            self._cache[key] = result
        return result

    def scrub_text(self, text: str) -> str:
        """Redact secret-shaped substrings of free text (messages, URLs, exception text)."""
        for pattern, replacement in _VALUE_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: Any, _depth: int = 0) -> Any:
        """A scrubbed copy of ``value``: mappings and sequences recursively, strings by shape."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if _depth > 32:
            return REDACTED
        if isinstance(value, Mapping):
            return {
                key: REDACTED
                if isinstance(key, str) and self.is_secret_key(key)
                else self.scrub(item, _depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return (
                type(value)(self.scrub(item, _depth + 1) for item in value)
                if not isinstance(value, set | frozenset)
                else [self.scrub(item, _depth + 1) for item in value]
            )
        return value

    def scrub_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> dict[str, str]:
        """Headers as a dict with secret ones (Authorization, Cookie, X-Api-Key, ...) redacted."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return {
            name: REDACTED if self.is_secret_key(name) else self.scrub_text(value)
            for name, value in pairs
        }


_default = Scrubber()


def configure_scrubber(extra_keys: Iterable[str] = (), safe_keys: Iterable[str] = ()) -> Scrubber:
    """Replace the process-wide scrubber (from settings at configure time)."""
    global _default
    _default = Scrubber(extra_keys, safe_keys)
    return _default


def scrub(value: Any) -> Any:
    """Scrub with the process-wide scrubber."""
    return _default.scrub(value)


def scrub_text(text: str) -> str:
    """Scrub free text with the process-wide scrubber."""
    return _default.scrub_text(text)


def scrub_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Scrub headers with the process-wide scrubber."""
    return _default.scrub_headers(headers)
