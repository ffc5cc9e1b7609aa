"""OTLP/JSON files: one export request per line, as the collector's ``otlpjsonfile`` receiver reads them.

The OTLP specification's JSON encoding is the protobuf JSON mapping with three
differences that matter here:

* field names are lowerCamelCase (``resourceSpans``, ``timeUnixNano``);
* ``traceId``, ``spanId`` and ``parentSpanId`` are **hex** strings (32 and 16
  characters), not the base64 the protobuf mapping gives ``bytes`` fields —
  a reader that base64-decodes a hex id gets 24 bytes of garbage;
* enum values (span kind, status code, severity number, aggregation
  temporality) are integers, not names.

64-bit integers are written as decimal strings, which the specification
accepts. :class:`OTLPJsonWriter` appends requests to ``traces.jsonl``,
``metrics.jsonl`` and ``logs.jsonl`` in a directory (its :meth:`write` fits
``OTLPReceiver(on_request=...)``); :func:`read` gives the requests back as
protobuf messages, to replay or to view.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = [
    "FILE_NAMES",
    "OTLPJsonWriter",
    "decode",
    "encode",
    "read",
    "signal_of",
]

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
TOP_KEYS = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}
FILE_NAMES = {signal: f"{signal}.jsonl" for signal in REQUEST_TYPES}
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def _convert_ids(value: Any, convert: Any) -> Any:
    """Apply ``convert`` to every trace/span id value, at any depth (spans, links, logs, exemplars)."""
    if isinstance(value, dict):
        return {
            key: convert(item)
            if key in ID_KEYS and isinstance(item, str)
            else _convert_ids(item, convert)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_convert_ids(item, convert) for item in value]
    return value


def _b64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def _hex_to_b64(text: str) -> str:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(
            f"trace/span id {text[:40]!r} is not hex (OTLP/JSON ids are hex)"
        ) from None
    return base64.b64encode(raw).decode()


def to_dict(request: Message) -> dict[str, Any]:
    """The OTLP/JSON object of one export request."""
    raw = json_format.MessageToDict(
        request, use_integers_for_enums=True, preserving_proto_field_name=False
    )
    result: dict[str, Any] = _convert_ids(raw, _b64_to_hex)
    return result


def encode(request: Message) -> str:
    """One export request as one OTLP/JSON line (no newline inside, none at the end)."""
    return json.dumps(to_dict(request), separators=(",", ":"), ensure_ascii=False)


def signal_of(document: dict[str, Any]) -> str | None:
    """``traces``, ``metrics`` or ``logs`` by the request's top-level key (None: none of them)."""
    for signal, key in TOP_KEYS.items():
        if key in document:
            return signal
    return None


def decode(line: str | bytes, signal: str | None = None) -> tuple[str, Message]:
    """Parse one OTLP/JSON line into ``(signal, ExportXServiceRequest)``.

    ``signal`` is found from the top-level key when not given. Raises ValueError
    for a line that is not an OTLP/JSON export request.
    """
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    signal = signal or signal_of(document)
    if signal not in REQUEST_TYPES:
        raise ValueError(f"no {', '.join(TOP_KEYS.values())} key: not an OTLP export request")
    request = REQUEST_TYPES[signal]()
    try:
        json_format.ParseDict(_convert_ids(document, _hex_to_b64), request)
    except (json_format.ParseError, binascii.Error) as error:
        raise ValueError(str(error)) from None
    return signal, request


def read(paths: Iterable[str | Path]) -> Iterator[tuple[str, Message]]:
    """Every export request in the given files (directories: their ``*.jsonl`` / ``*.json``).

    A bad line raises ValueError naming the file and line number.
    """
    for path in _expand(paths):
        with Path(path).open(encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    yield decode(line)
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    result: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            result.extend(sorted([*path.glob("*.jsonl"), *path.glob("*.json")]))
        else:
            result.append(path)
    return result


class OTLPJsonWriter:
    """Appends export requests to ``<directory>/{traces,metrics,logs}.jsonl``, one per line.

    Thread-safe (the receiver calls it from its gRPC and HTTP threads); each
    line is flushed as written, so a reader (or the collector's file receiver)
    never sees half a line. Empty requests are skipped.
    """

    def __init__(self, directory: str | Path, *, truncate: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, TextIO] = {}
        self.lines = dict.fromkeys(REQUEST_TYPES, 0)
        if truncate:
            for name in FILE_NAMES.values():
                (self.directory / name).unlink(missing_ok=True)

    def path(self, signal: str) -> Path:
        return self.directory / FILE_NAMES[signal]

    def write(self, signal: str, request: Message) -> None:
        """Append one request; the signature of ``OTLPReceiver(on_request=...)``."""
        if signal not in REQUEST_TYPES or not request.ListFields():
            return
        line = encode(request)
        with self._lock:
            stream = self._files.get(signal)
            if stream is None:
                stream = self._files[signal] = self.path(signal).open("a", encoding="utf-8")
            stream.write(line + "\n")
            stream.flush()
            self.lines[signal] += 1

    def close(self) -> None:
        with self._lock:
            for stream in self._files.values():
                stream.close()
            self._files.clear()

    def __enter__(self) -> OTLPJsonWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
