"""One scrubber for log fields, span attributes, event data, headers and exception text.

Secrets are recognised two ways, and both are replaced by :data:`REDACTED`:

* by the **key** they are stored under, at any nesting depth. A key is split
  into words (``X-Api-Key`` -> ``x api key``, ``authToken`` -> ``auth token``)
  and is secret when a word or a pair of adjacent words is on the list
  (``password``, ``token``, ``api_key``, ``auth``, ``cookie``, ...), or when
  its letters contain an unambiguous one (``dbpassword``, ``accesstoken``).
  Whole words only: ``auth`` is secret, ``author`` and ``authenticated`` are
  not; ``token`` is, ``input_tokens`` (a GenAI counter) is not.
* by the **shape** of a value, anywhere in free text (messages, exception
  messages, URLs): ``Bearer``/``Basic``/``Digest`` credentials, JSON Web
  Tokens, the password in ``scheme://user:password@host``, ``key=value`` and
  ``"key": "value"`` pairs whose key is secret, Telegram bot tokens and the
  well-known API-key prefixes (``sk-``, ``ghp_``, ``xoxb-``, ``AKIA``).

``session_id`` is *not* secret by default: the seed logs it as a context
field that identifies a chat session, so it must be an opaque identifier,
never the session cookie or token itself. Everything else with ``session`` in
its words (``session``, ``session_token``, ``sessionid`` -- Django's cookie
name -- ``session_key``) is. Applications extend the lists with
``CHATAI_OTEL_REDACT_KEYS`` and ``CHATAI_OTEL_REDACT_SAFE_KEYS``.

This module imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_SAFE_KEYS",
    "DEFAULT_SECRET_KEYS",
    "REDACTED",
    "Scrubber",
    "cannot_hold_a_secret_shape",
    "configure_scrubber",
    "get_scrubber",
    "scrub",
    "scrub_headers",
    "scrub_text",
    "structured_fields",
]

REDACTED = "[REDACTED]"
# Text cut to a length is scrubbed this far past the cut first: a secret that straddles
# the cut is recognised whole, so no part of it survives (postgresql://app:hunt|er2@db).
SCRUB_LOOKAHEAD = 4096
TEXT_CACHE_SIZE = 4096  # scrubbed texts remembered (Scrubber.text_cache), then forgotten at once
TEXT_CACHE_LENGTH = 2048  # longer texts are scrubbed every time, not remembered

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "authorization",
    "auth",
    "cookie",
    "cookies",
    "set_cookie",
    "session",
    "sessionid",
    "credential",
    "credentials",
    "private_key",
    "privatekey",
    "jwt",
    "csrf",
    "xsrf",
    "card_number",
    "cardnumber",
    "credit_card",
    "cvv",
    "cvc",
    "ssn",
    # signed URLs: the query names the HTTP semantic conventions redact by default
    # (AWSAccessKeyId is caught as access_key, X-Goog-Signature as signature) and
    # AWS SigV4's (X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token)
    "sig",
    "signature",
)

# Keys that are identifiers or counters, not credentials (see the module docstring).
DEFAULT_SAFE_KEYS: tuple[str, ...] = (
    "session_id",
    "token_type",
    "token_count",
    "gen_ai.token.type",  # GenAI semconv: "input" / "output"
)

# Found anywhere inside a key's letters ("dbpassword", "clientsecret"): no word contains
# them by accident. "token" and "auth" are not here ("tokens", "author").
_STRONG_FRAGMENTS = (
    "password",
    "passwd",
    "secret",
    "apikey",
    "credential",
    "privatekey",
    "accesstoken",
    "refreshtoken",
    "authtoken",
    "idtoken",
    "sessiontoken",
    "bearertoken",
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Cheap first look: a string without any of these cannot hold a secret shape.
_TRIGGER = re.compile(r"[:=@]|eyJ|(?i:bearer|basic|digest|token)|sk-|sk_live|gh[pousr]_|xox|AKIA")

# Secret shapes, replaced wherever they appear.
_SHAPES = re.compile(
    r"""
    # scheme://user:password@host -> keep the user, hide the password
    (?P<url>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<url_user>[^\s:/@?#]*):[^\s@/?#]+@
    # scheme://long-token@host (a token as the user name)
  | (?P<tok_url>[A-Za-z][A-Za-z0-9+.\-]*://)[A-Za-z0-9_\-.~%]{20,}@
    # Authorization header values ("token <x>" only when <x> has a digit: not "token expired")
  | (?P<scheme>\b(?i:bearer|basic|digest))\s+[A-Za-z0-9._~+/=\-]{6,}
  | (?P<token_scheme>\b(?i:token))\s+(?=[A-Za-z_.~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{8,}
    # JSON Web Tokens
  | \beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*
    # Telegram bot tokens (also inside https://api.telegram.org/bot<token>/...)
  | (?<![0-9])[0-9]{6,12}:[A-Za-z0-9_\-]{30,}
    # well-known API key prefixes
  | \b(?:sk-[A-Za-z0-9_\-]{16,}|sk_live_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{30,}
        |github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})
    """,
    re.VERBOSE,
)

# key=value, key: value, "key": "value", \"key\": \"value\" -- the value is only looked
# at (lookahead), so a non-secret key never swallows a secret pair inside its value.
_KEY_VALUE = re.compile(
    r"""
    (?:\\?["'])?(?P<key>[A-Za-z_][A-Za-z0-9_.\-]{0,63})(?:\\?["'])?\s*[:=]\s*
    (?=(?P<value>(?:(?i:bearer|basic|digest|token)\s+)?
        (?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&)}\]]+)))
    """,
    re.VERBOSE,
)


_HEX_AND_DASHES = "0123456789abcdefABCDEF-"


def cannot_hold_a_secret_shape(text: str) -> bool:
    """True for letters and digits only without ``AKIA``, or for hex digits and dashes only
    (a UUID): no secret shape can be in it.

    Every shape but the AWS key id needs a character that is neither (``:``, ``=``, ``@``,
    ``-``, ``_``, ``.`` or a space); the shapes with a dash also need a letter past ``f``
    (``sk-``, ``xoxb-``). So a request id, a trace id, an event id or a hex digest is let
    through in a C call or two instead of a regular-expression scan (~20 000 instructions
    for 32 characters, measured with callgrind), and is not remembered in a cache it would
    only fill."""
    return (text.isalnum() and "AKIA" not in text) or not text.strip(_HEX_AND_DASHES)


def _closing_bracket(text: str, start: int) -> int:
    """The index after the bracket closing the one at ``start`` (quotes respected), or the end."""
    depth = 0
    quote = ""
    index = start
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return len(text)


def _key_words(key: str) -> list[str]:
    return [w for w in _NON_ALNUM.split(_CAMEL.sub("_", key).lower()) if w]


class Scrubber:
    """Redacts by key and by value shape; extend the key list or mark keys safe."""

    def __init__(
        self,
        extra_keys: Iterable[str] = (),
        safe_keys: Iterable[str] = (),
        *,
        replacement: str = REDACTED,
    ) -> None:
        self.replacement = replacement
        self._secret_words = frozenset(
            "_".join(_key_words(k)) for k in (*DEFAULT_SECRET_KEYS, *extra_keys)
        )
        self._safe_keys = frozenset(
            "_".join(_key_words(k)) for k in (*DEFAULT_SAFE_KEYS, *safe_keys)
        )
        # key -> is secret; read directly by the log pipeline's hot loop
        self.key_cache: dict[str, bool] = {}
        # text -> scrubbed text, for texts that repeat (URLs, SQL, user agents); read
        # directly by the span encoder's hot loop, through scrub_text_cached elsewhere
        self.text_cache: dict[str, str] = {}

    # --- keys ------------------------------------------------------------------------

    def is_secret_key(self, key: str) -> bool:
        """True for ``password``, ``X-Api-Key``, ``user_token``, ``authToken``; not ``author``."""
        cached = self.key_cache.get(key)
        if cached is not None:
            return cached
        result = self._judge_key(key)
        if len(self.key_cache) >= 8192:
            self.key_cache.clear()
        self.key_cache[key] = result
        return result

    def _judge_key(self, key: str) -> bool:
        words = _key_words(key)
        if not words:
            return False
        normalised = "_".join(words)
        if normalised in self._safe_keys:
            return False
        secret = self._secret_words
        if normalised in secret:
            return True
        if any(word in secret for word in words):
            return True
        if any(f"{a}_{b}" in secret for a, b in itertools.pairwise(words)):
            return True
        letters = "".join(words)
        return letters in secret or any(f in letters for f in _STRONG_FRAGMENTS)

    # --- text ------------------------------------------------------------------------

    def scrub_text(self, text: str) -> str:
        """Redact secret-shaped substrings of free text (messages, URLs, exception text)."""
        if cannot_hold_a_secret_shape(text) or not _TRIGGER.search(text):
            return text
        return _SHAPES.sub(self._replace_shape, self._scrub_pairs(text))

    def scrub_text_cached(self, text: str) -> str:
        """:meth:`scrub_text`, remembered for texts of at most ``TEXT_CACHE_LENGTH`` characters
        (a URL costs the scan tens of µs, and telemetry repeats its texts)."""
        if cannot_hold_a_secret_shape(text):
            return text
        if len(text) > TEXT_CACHE_LENGTH:
            return self.scrub_text(text)
        cache = self.text_cache
        cleaned = cache.get(text)
        if cleaned is None:
            cleaned = self.scrub_text(text)
            if len(cache) >= TEXT_CACHE_SIZE:
                cache.clear()
            cache[text] = cleaned
        return cleaned

    def scrub_text_head(self, text: str, keep: int) -> str:
        """The first ``keep`` characters of the scrubbed ``text`` (scrubbed before the cut)."""
        return self.scrub_text(text[: keep + SCRUB_LOOKAHEAD])[:keep]

    def scrub_text_tail(self, text: str, keep: int) -> str:
        """The last ``keep`` characters of the scrubbed ``text`` (scrubbed before the cut)."""
        if keep <= 0:
            return ""
        return self.scrub_text(text[-(keep + SCRUB_LOOKAHEAD) :])[-keep:]

    def _scrub_pairs(self, text: str) -> str:
        """Replace the value of every ``key=value`` / ``key: value`` pair whose key is secret."""
        parts: list[str] = []
        position = 0
        for match in _KEY_VALUE.finditer(text):
            if match.start() < position or not self.is_secret_key(match.group("key")):
                continue
            start, end = match.span("value")
            value = match.group("value")
            quote = value[0] if value[:1] in ('"', "'") else ""
            if value[:1] in ("{", "["):  # a whole structure under a secret key
                end = _closing_bracket(text, start)
            parts.append(text[position:start])
            parts.append(f"{quote}{self.replacement}{quote}")
            position = end
        if not parts:
            return text
        parts.append(text[position:])
        return "".join(parts)

    def _replace_shape(self, match: re.Match[str]) -> str:
        r = self.replacement
        if match.group("url") is not None:
            return f"{match.group('url')}{match.group('url_user')}:{r}@"
        if match.group("tok_url") is not None:
            return f"{match.group('tok_url')}{r}@"
        scheme = match.group("scheme") or match.group("token_scheme")
        if scheme is not None:
            return f"{scheme} {r}"
        return r

    # --- span, event and link attributes ----------------------------------------------

    def scrub_attribute(self, key: str, value: Any) -> Any:
        """One OTel attribute as it may leave the process: the marker under a secret key,
        strings (also inside a sequence) scrubbed by shape, other values as they are."""
        secret = self.key_cache.get(key)
        if secret is None:
            secret = self.is_secret_key(key)
        if secret:
            return self.replacement
        kind = type(value)
        if kind is str:
            return self.scrub_text(value)
        if (kind is tuple or kind is list) and any(type(item) is str for item in value):
            return tuple(self.scrub_text(item) if type(item) is str else item for item in value)
        return value

    def scrub_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`scrub_attribute` of every item."""
        return {key: self.scrub_attribute(key, value) for key, value in attributes.items()}

    # --- structures ------------------------------------------------------------------

    def scrub(self, value: Any, _depth: int = 0) -> Any:
        """A scrubbed copy of ``value``.

        Mappings, sequences, sets, dataclasses and pydantic models become plain
        dicts and lists (so a secret field of a model cannot slip through);
        strings are scrubbed by shape; other scalars are returned unchanged.
        """
        if isinstance(value, str):
            return self.scrub_text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if _depth > 20:
            return self.replacement
        if isinstance(value, Mapping):
            return self.scrub_mapping(value, _depth)
        if isinstance(value, list | tuple | set | frozenset):
            return [self.scrub(item, _depth + 1) for item in value]
        if isinstance(value, bytes | bytearray):
            return self.scrub_text(bytes(value).decode("utf-8", "replace"))
        as_mapping = structured_fields(value)
        if as_mapping is not None:
            return self.scrub_mapping(as_mapping, _depth)
        return value

    def scrub_mapping(self, mapping: Mapping[Any, Any], _depth: int = 0) -> dict[str, Any]:
        """A scrubbed dict copy: secret keys (at any depth) get the marker."""
        result: dict[str, Any] = {}
        for key, item in mapping.items():
            name = key if isinstance(key, str) else str(key)
            result[name] = (
                self.replacement if self.is_secret_key(name) else self.scrub(item, _depth + 1)
            )
        return result

    def scrub_headers(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    ) -> dict[str, str]:
        """Headers as a dict with secret ones (Authorization, Cookie, X-Api-Key, ...) redacted.

        Accepts a mapping, ``(name, value)`` pairs, or ASGI's raw ``(bytes, bytes)``
        pairs; repeated headers are joined with ``", "``.
        """
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        result: dict[str, str] = {}
        for raw_name, raw_value in pairs:
            name = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else str(raw_name)
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else str(raw_value)
            cleaned = self.replacement if self.is_secret_key(name) else self.scrub_text(value)
            result[name] = f"{result[name]}, {cleaned}" if name in result else cleaned
        return result


def structured_fields(value: Any) -> Mapping[str, Any] | None:
    """The fields of a dataclass instance or pydantic model (so they can be scrubbed), else None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            dumped = dump(mode="json")
        except Exception:
            return None
        return dumped if isinstance(dumped, Mapping) else None
    return None


_default = Scrubber()


def configure_scrubber(extra_keys: Iterable[str] = (), safe_keys: Iterable[str] = ()) -> Scrubber:
    """Replace the process-wide scrubber (from settings at configure time)."""
    global _default
    _default = Scrubber(extra_keys, safe_keys)
    return _default


def get_scrubber() -> Scrubber:
    """The process-wide scrubber."""
    return _default


def scrub(value: Any) -> Any:
    """Scrub with the process-wide scrubber."""
    return _default.scrub(value)


def scrub_text(text: str) -> str:
    """Scrub free text with the process-wide scrubber."""
    return _default.scrub_text(text)


def scrub_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
) -> dict[str, str]:
    """Scrub headers with the process-wide scrubber."""
    return _default.scrub_headers(headers)
