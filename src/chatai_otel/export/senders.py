"""What sends already-encoded OTLP export requests: the SDK's own exporters with our bytes
(their retries, backoff, TLS, headers, self-metrics) where :mod:`chatai_otel._sdk_compat`
knows their send hooks, else plain gRPC and HTTP senders of ours on public APIs only."""

from __future__ import annotations

import gzip
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from chatai_otel._sdk_compat import fast_path_on, grpc_sending_bytes, http_sending_bytes

__all__ = [
    "EncodedExporter",
    "PlainGrpcSender",
    "PlainHttpSender",
    "grpc_encoded_exporter",
    "http_encoded_exporter",
]


class EncodedExporter(Protocol):
    """Sends one already-encoded ``Export*ServiceRequest``."""

    def export_encoded(self, payload: bytes, count: int) -> bool: ...

    def shutdown(self) -> None: ...


def grpc_encoded_exporter(
    base: Any, method: str, response_type: Any, **kwargs: Any
) -> EncodedExporter:
    """``base`` (an SDK gRPC exporter class) sending our bytes as they are to ``method``;
    our own gRPC client where that SDK's send hooks are not the ones we know."""
    if fast_path_on("encoded gRPC export"):
        exporter: EncodedExporter = grpc_sending_bytes(base, method, response_type, **kwargs)
        return exporter
    return PlainGrpcSender(method, **kwargs)


def http_encoded_exporter(base: Any, **kwargs: Any) -> EncodedExporter:
    """``base`` (an SDK HTTP/protobuf exporter class) posting our bytes through its client;
    our own HTTP client where that SDK's send hooks are not the ones we know."""
    if fast_path_on("encoded HTTP export"):
        exporter: EncodedExporter = http_sending_bytes(base, **kwargs)
        return exporter
    return PlainHttpSender(**kwargs)


_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)  # the SDK exporters' backoff, bounded by the timeout


def _with_retries(
    attempt: Callable[[float], bool | None], timeout: float, stop: threading.Event
) -> bool:
    """``attempt(seconds_left)``: True sent, False given up, None worth another try; tries
    again with the SDK's backoff until the timeout or shutdown."""
    deadline = time.monotonic() + timeout
    for delay in (*_RETRY_DELAYS, None):
        outcome = attempt(max(deadline - time.monotonic(), 0.05))
        if outcome is not None:
            return outcome
        if delay is None or time.monotonic() + delay > deadline or stop.wait(delay):
            return False
    return False


class PlainGrpcSender:
    """Sends encoded export requests over a gRPC channel of its own (public grpcio API only)."""

    _RETRYABLE = frozenset(("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"))

    def __init__(
        self,
        method: str,
        *,
        endpoint: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        insecure: bool | None = None,
        compression: Any = None,
        **_: Any,
    ) -> None:
        import grpc

        parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        target = f"{parsed.hostname}:{parsed.port or 4317}"
        secure = parsed.scheme == "https" or insecure is False
        self._channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials())
            if secure
            else grpc.insecure_channel(target)
        )
        self._call = self._channel.unary_unary(method)
        self._metadata = [(key.lower(), value) for key, value in (headers or {}).items()]
        self._timeout = timeout
        self._compression = compression
        self._shutdown = threading.Event()

    def export_encoded(self, payload: bytes, count: int) -> bool:
        import grpc

        def attempt(seconds: float) -> bool | None:
            try:
                self._call(
                    payload, timeout=seconds, metadata=self._metadata, compression=self._compression
                )
                return True
            except grpc.RpcError as error:
                code = error.code() if callable(getattr(error, "code", None)) else None
                return None if getattr(code, "name", "") in self._RETRYABLE else False

        return _with_retries(attempt, self._timeout, self._shutdown)

    def shutdown(self) -> None:
        self._shutdown.set()
        self._channel.close()


class PlainHttpSender:
    """Posts encoded export requests with the standard library (no SDK internals)."""

    _RETRYABLE = frozenset((408, 429, 502, 503, 504))

    def __init__(
        self,
        *,
        endpoint: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        compression: Any = None,
        **_: Any,
    ) -> None:
        self._endpoint = endpoint
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._encoding = str(getattr(compression, "value", compression) or "none").lower()
        if self._encoding in ("gzip", "deflate"):
            self._headers["Content-Encoding"] = self._encoding
        self._timeout = timeout
        self._shutdown = threading.Event()

    def export_encoded(self, payload: bytes, count: int) -> bool:
        if self._encoding == "gzip":
            payload = gzip.compress(payload)
        elif self._encoding == "deflate":
            payload = zlib.compress(payload)

        def attempt(seconds: float) -> bool | None:
            request = urllib.request.Request(
                self._endpoint, data=payload, headers=self._headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=seconds) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as error:
                return None if error.code in self._RETRYABLE else False
            except OSError:
                return None  # refused, reset, timed out: try again within the deadline

        return _with_retries(attempt, self._timeout, self._shutdown)

    def shutdown(self) -> None:
        self._shutdown.set()
