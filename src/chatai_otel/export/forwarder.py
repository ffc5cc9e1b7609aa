"""Send ready-made OTLP export requests to an endpoint, as the exporters are configured to.

Two users: ``chatai-otel doctor`` asks whether the configured endpoint really
answers OTLP (an empty export request, which a collector accepts and stores
nothing for: a TCP connect alone would call any open port a collector), and
``chatai-otel demo`` relays what its apps send to the collector while keeping
a copy for its terminal view. Endpoint, protocol, headers, compression, TLS
and timeout come from the same :class:`~chatai_otel.config.ExporterSettings`
the SDK's exporters use. Nothing here runs inside an application.
"""

from __future__ import annotations

import gzip
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from chatai_otel.config import ExporterSettings, Settings, Signal
from chatai_otel.export.otlp_json import REQUEST_TYPES

__all__ = ["OTLPForwarder", "ProbeResult", "probe", "send"]

_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


@dataclass(frozen=True)
class ProbeResult:
    """Whether one endpoint answered an empty export request, and how."""

    ok: bool
    endpoint: str
    protocol: str
    detail: str
    seconds: float


def _grpc_target(endpoint: str) -> str:
    parsed = urllib.parse.urlsplit(endpoint)
    return f"{parsed.hostname}:{parsed.port or 4317}"


class _Channels:
    """One gRPC channel per (target, secure), reused for every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, bool], Any] = {}

    def get(self, settings: ExporterSettings) -> Any:
        import grpc

        secure = not settings.insecure or settings.endpoint.startswith("https://")
        key = (_grpc_target(settings.endpoint), secure)
        with self._lock:
            channel = self._channels.get(key)
            if channel is None:
                if secure:
                    channel = grpc.secure_channel(key[0], grpc.ssl_channel_credentials())
                else:
                    channel = grpc.insecure_channel(key[0])
                self._channels[key] = channel
            return channel

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def send(
    signal: Signal,
    request: Message,
    settings: ExporterSettings,
    *,
    timeout: float | None = None,
    channels: _Channels | None = None,
) -> None:
    """Send one export request; raises ``OSError``/``grpc.RpcError`` when it is not accepted."""
    seconds = settings.timeout if timeout is None else timeout
    if settings.protocol == "grpc":
        import grpc

        own = channels is None
        pool = channels or _Channels()
        try:
            call = pool.get(settings).unary_unary(
                _GRPC_METHODS[signal],
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=lambda data: data,
            )
            compression = {
                "gzip": grpc.Compression.Gzip,
                "deflate": grpc.Compression.Deflate,
            }.get(settings.compression, grpc.Compression.NoCompression)
            metadata = [(key.lower(), value) for key, value in settings.headers.items()]
            call(request, timeout=seconds, metadata=metadata, compression=compression)
        finally:
            if own:
                pool.close()
        return
    body = request.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf", **settings.headers}
    if settings.compression == "gzip":
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    elif settings.compression == "deflate":
        body = zlib.compress(body)
        headers["Content-Encoding"] = "deflate"
    http_request = urllib.request.Request(
        settings.endpoint, data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(http_request, timeout=seconds) as response:
        response.read()


def _describe(error: BaseException) -> str:
    try:
        import grpc

        if isinstance(error, grpc.RpcError):
            code = error.code()
            details = error.details() or ""
            return f"{code.name}: {details}".strip().rstrip(":")
    except ImportError:
        pass
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


def probe(signal: Signal, settings: ExporterSettings, timeout: float = 2.0) -> ProbeResult:
    """Send an empty export request: ok when the endpoint accepts it as OTLP."""
    protocol = "OTLP/gRPC" if settings.protocol == "grpc" else "OTLP/HTTP"
    started = time.monotonic()
    try:
        send(signal, REQUEST_TYPES[signal](), settings, timeout=timeout)
    except Exception as error:
        elapsed = time.monotonic() - started
        return ProbeResult(False, settings.endpoint, protocol, _describe(error), elapsed)
    elapsed = time.monotonic() - started
    detail = f"answers {protocol} in {elapsed * 1000:.0f} ms"
    return ProbeResult(True, settings.endpoint, protocol, detail, elapsed)


class OTLPForwarder:
    """Relays export requests to the configured endpoints from one background thread.

    :meth:`submit` never blocks: its queue is bounded and what does not fit is
    dropped and counted. :meth:`close` sends what is queued within a deadline.
    """

    def __init__(self, settings: Settings, *, queue_size: int = 2000) -> None:
        self.settings = settings
        self.forwarded = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: queue.Queue[tuple[Signal, Message] | None] = queue.Queue(queue_size)
        self._channels = _Channels()
        self._thread = threading.Thread(target=self._run, name="chatai-otel-forward", daemon=True)
        self._thread.start()

    def submit(self, signal: str, request: Message) -> bool:
        """Queue one request (the signature of ``OTLPReceiver(on_request=...)``)."""
        if signal not in REQUEST_TYPES:
            return False
        try:
            self._queue.put_nowait((signal, request))  # type: ignore[arg-type]
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            signal, request = item
            try:
                send(signal, request, self.settings.exporter_for(signal), channels=self._channels)
                self.forwarded += 1
            except Exception as error:
                self.failed += 1
                self.last_error = _describe(error)

    def close(self, timeout: float = 10.0) -> bool:
        """Send what is queued, within ``timeout`` seconds; True when all of it went out."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if done:
            self._channels.close()
        return done
