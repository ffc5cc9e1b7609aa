"""The protobuf wire format of OTLP, written by hand: the pieces both encoders share.

Why by hand: building the generated protobuf message objects costs 20-60 µs per span or
log record on the export thread (measured in ``benchmarks/``), and under the GIL that time
is taken from the application. :mod:`chatai_otel.export.spans` and
:mod:`chatai_otel.export.logs` write the bytes of their requests with these primitives and
cache what repeats; their tests parse the result with the official message classes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

# Field numbers from opentelemetry/proto/{common,resource}/v1/*.proto.
# A tag byte is (field_number << 3) | wire_type; 0 = varint, 1 = 64-bit, 2 = bytes, 5 = 32-bit.

# Varints and small int values below TABLED are encoded once, at import. Lengths and values
# past it are rare (lines, attribute texts and status codes are shorter); a table of 16 384
# held 1.1 MB more of every process's memory for them.
TABLED = 1 << 12
VARINTS = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(TABLED)]
# KeyValue.value (field 2) holding AnyValue{int_value} for 0 <= n < TABLED, ready to append
SMALL_INT_VALUES = [
    b"\x12" + bytes([1 + len(VARINTS[n])]) + b"\x18" + VARINTS[n] for n in range(TABLED)
]
MASK64 = (1 << 64) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
pack_double = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    if n < TABLED:
        return VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates: OTLP strings must be valid UTF-8
        return text.encode("utf-8", "replace")


def field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def any_value(value: Any, depth: int = 0) -> bytes:
    """The body of an ``AnyValue`` message."""
    kind = type(value)
    if kind is str:
        data = utf8(value)
        return b"\x0a" + varint(len(data)) + data
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return b"\x18" + varint(value & MASK64)
        data = str(value).encode()
        return b"\x0a" + varint(len(data)) + data
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is float:
        return b"\x21" + pack_double(value)
    if value is None:
        return b""
    if depth > 32:
        return b"\x0a\x03..."
    if isinstance(value, Mapping):  # a None member is left out, as the SDK does for attributes
        inner = b"".join(
            [field(b"\x0a", key_value(k, v, depth + 1)) for k, v in value.items() if v is not None]
        )
        return b"\x32" + varint(len(inner)) + inner
    if isinstance(value, list | tuple):
        inner = b"".join([field(b"\x0a", any_value(v, depth + 1)) for v in value])
        return b"\x2a" + varint(len(inner)) + inner
    if isinstance(value, bytes | bytearray):
        return b"\x3a" + varint(len(value)) + bytes(value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return any_value(int(value), depth)
    if isinstance(value, float):
        return any_value(float(value), depth)
    return any_value(str(value), depth)


def key_value(key: Any, value: Any, depth: int = 0) -> bytes:
    """The body of a ``KeyValue`` message."""
    return field(b"\x0a", utf8(str(key))) + field(b"\x12", any_value(value, depth))


def scope_message(scope: InstrumentationScope | str) -> bytes:
    """``scope`` (field 1) and ``schema_url`` (field 3) of a ``Scope{Spans,Logs}`` message."""
    if not isinstance(scope, InstrumentationScope):
        return field(b"\x0a", field(b"\x0a", utf8(str(scope))))
    body = field(b"\x0a", utf8(scope.name))
    if scope.version:
        body += field(b"\x12", utf8(scope.version))
    for key, value in (scope.attributes or {}).items():
        body += field(b"\x1a", key_value(key, value))
    encoded = field(b"\x0a", body)
    if scope.schema_url:
        encoded += field(b"\x1a", utf8(scope.schema_url))
    return encoded


class EncodedPairs:
    """Encoded attributes by ``(key, value)``, bounded, for the values that repeat.

    Why not a plain dict: a request id, an order number or a timestamp text is new on every
    record. Cached, such values would fill the table and clear it every few thousand records,
    taking the values that do repeat (routes, methods, statuses) with them. So once one key
    has brought a quarter of the table's size in new values since the last clear, its values
    are no longer remembered. Encoders read :attr:`get` inline and call :meth:`remember`
    after a miss.
    """

    __slots__ = ("_limit", "_new_values", "_pairs", "_unrepeated", "get")

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._pairs: dict[tuple[str, Any], bytes] = {}
        self._new_values: dict[str, int] = {}  # key -> values added since the last clear
        self._unrepeated: set[str] = set()  # keys whose values are not remembered
        self.get = self._pairs.get

    def remember(self, key: str, cache_key: tuple[str, Any], encoded: bytes) -> None:
        if key in self._unrepeated:
            return
        pairs = self._pairs
        if len(pairs) >= self._limit:
            pairs.clear()
            self._new_values.clear()
        added = self._new_values.get(key, 0) + 1
        self._new_values[key] = added
        if added > self._limit // 4:
            if len(self._unrepeated) >= self._limit:
                self._unrepeated.clear()
            self._unrepeated.add(key)
            return
        pairs[cache_key] = encoded

    def clear(self) -> None:
        self._pairs.clear()
        self._new_values.clear()
        self._unrepeated.clear()

    def __len__(self) -> int:
        return len(self._pairs)


class ResourceField:
    """``resource`` (field 1) and ``schema_url`` (field 3) of a ``Resource{Spans,Logs}``
    message, re-encoded only when the attribute map changes (sdk.py swaps it after fork
    for a new service.instance.id)."""

    def __init__(self) -> None:
        self._cached: tuple[object, bytes] | None = None

    def encode(self, resource: Resource | None) -> bytes:
        if resource is None:
            return b""
        attributes = resource.attributes
        cached = self._cached
        if cached is not None and cached[0] is attributes:
            return cached[1]
        body = b"".join(field(b"\x0a", key_value(k, v)) for k, v in attributes.items())
        encoded = field(b"\x0a", body)
        if resource.schema_url:
            encoded += field(b"\x1a", utf8(resource.schema_url))
        self._cached = (attributes, encoded)
        return encoded
