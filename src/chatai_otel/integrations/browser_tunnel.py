"""Where browsers send their telemetry: an OTLP/HTTP tunnel inside the backend.

A browser cannot be trusted with the collector's address, credentials or
limits, so the frontend's OTLP exporters post to the backend it already talks
to, and this ASGI app forwards what they send::

    from chatai_otel.integrations.browser_tunnel import mount_browser_tunnel
    mount_browser_tunnel(app)  # POST /otlp/v1/traces, /otlp/v1/logs, /otlp/v1/metrics

What it does to each request, in this order:

* **rate limit** per client address (a token bucket; ``429`` with ``Retry-After``);
* **content type**: OTLP's ``application/x-protobuf`` or ``application/json`` only
  (``415``); ``Content-Encoding: gzip`` or none (``415`` otherwise);
* **size**: at most ``max_body`` bytes as sent and four times that unpacked (``413``),
  refused from ``Content-Length`` before a byte is read;
* **decode and rewrite** on a worker thread, never on the event loop: the request must
  be an OTLP export request (``400``); every resource's ``service.name`` is forced to the
  configured frontend name (what else the browser says about itself is kept); every
  attribute of every resource, scope, span, event, link, log record and metric point,
  log bodies and span names pass the same scrubber as the backend's own telemetry;
* **forward** through a bounded queue to the endpoint that the backend's own exporters
  use (:class:`chatai_otel.export.forwarder.OTLPForwarder`, one background thread): a full queue
  answers ``503`` with ``Retry-After``, which OTLP exporters retry, and is counted.

Every answer is counted in ``chatai.browser.tunnel.requests`` by signal and outcome.
The tunnel's own requests get no server span and no access line
(:func:`mount_browser_tunnel` excludes its path), so a page's exports do not turn into
the backend's telemetry.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from chatai_otel import metric_names as names
from chatai_otel import process_hooks
from chatai_otel.config import Settings
from chatai_otel.redaction import Scrubber, get_scrubber

__all__ = ["BrowserTelemetryTunnel", "TokenBuckets", "mount_browser_tunnel", "rewrite_request"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PROTOBUF, JSON = "application/x-protobuf", "application/json"
SIGNAL_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
RESOURCE_LISTS = {
    "traces": "resource_spans",
    "metrics": "resource_metrics",
    "logs": "resource_logs",
}
UNPACKED_FACTOR = 4  # a gzip body may unpack to this many times max_body, not more
# string fields that may carry a URL or a message with a secret in it
_TEXT_FIELDS = frozenset({"name", "message", "description"})
_STRING = FieldDescriptor.TYPE_STRING


# --- rewriting an export request ---------------------------------------------------------


def _scrub_value(scrubber: Scrubber, value: AnyValue, key: str | None) -> None:
    kind = value.WhichOneof("value")
    if kind is None:
        return
    if key is not None and scrubber.is_secret_key(key):
        value.Clear()
        value.string_value = scrubber.replacement
    elif kind == "string_value":
        text = value.string_value
        cleaned = scrubber.scrub_text_cached(text)
        if cleaned != text:
            value.string_value = cleaned
    elif kind == "array_value":
        for item in value.array_value.values:
            _scrub_value(scrubber, item, None)
    elif kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            _scrub_value(scrubber, pair.value, pair.key)


def _scrub_message(scrubber: Scrubber, message: Message) -> None:
    """Every attribute, log body and name-like string below ``message``, in place."""
    for field, value in message.ListFields():
        if field.message_type is None:
            if field.type == _STRING and field.name in _TEXT_FIELDS and not field.is_repeated:
                cleaned = scrubber.scrub_text_cached(value)
                if cleaned != value:
                    setattr(message, field.name, cleaned)
            continue
        for item in value if field.is_repeated else (value,):
            if isinstance(item, KeyValue):
                _scrub_value(scrubber, item.value, item.key)
            elif isinstance(item, AnyValue):
                _scrub_value(scrubber, item, None)  # a log record's body
            else:
                _scrub_message(scrubber, item)


def _force_service_name(request: Message, signal: str, service_name: str) -> None:
    for resource_list in getattr(request, RESOURCE_LISTS[signal]):
        attributes = resource_list.resource.attributes
        for index in reversed(range(len(attributes))):
            if attributes[index].key == "service.name":
                del attributes[index]
        attributes.add(key="service.name", value=AnyValue(string_value=service_name))


def rewrite_request(
    signal: str, request: Message, service_name: str, scrubber: Scrubber | None = None
) -> Message:
    """``request`` with ``service.name`` forced and every value scrubbed (in place; returned).

    Texts go through ``Scrubber.scrub_text_cached``: browsers repeat their URLs, user agents
    and span names from session to session."""
    _force_service_name(request, signal, service_name)
    _scrub_message(scrubber or get_scrubber(), request)
    return request


def decode_request(signal: str, body: bytes, media_type: str) -> Message:
    """The export request in ``body``; ValueError when it is not one."""
    from chatai_otel.export.otlp_json import REQUEST_TYPES, decode

    if media_type == JSON:
        return decode(body, signal)[1]
    request = REQUEST_TYPES[signal]()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise ValueError(f"not an OTLP protobuf export request: {error}") from None
    return request


def unpack(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` without its ``Content-Encoding``; ValueError beyond ``limit`` bytes unpacked."""
    if encoding in ("", "identity"):
        return body
    try:
        unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip
        data = unpacker.decompress(body, limit + 1)
    except zlib.error as error:
        raise ValueError(f"not gzip: {error}") from None
    if len(data) > limit or unpacker.unconsumed_tail:
        raise OverflowError(f"unpacks to more than {limit} bytes")
    return data


# --- limits ------------------------------------------------------------------------------


class TokenBuckets:
    """One token bucket per client: ``rate`` requests per second, ``burst`` at once.

    At most ``max_clients`` buckets are kept (the least recently seen go first), so a
    scan from many addresses costs bounded memory.
    """

    def __init__(self, rate: float, burst: int, *, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        """0.0 when ``client`` may go on, else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate if self.rate > 0 else 60.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


# --- the ASGI app ------------------------------------------------------------------------


class BrowserTelemetryTunnel:
    """An ASGI app taking OTLP/HTTP from browsers; see the module docstring.

    Limits left as None come from the settings (``CHATAI_OTEL_BROWSER_*``).
    """

    def __init__(
        self,
        *,
        service_name: str | None = None,
        max_body: int | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        max_pending: int = 32,
        queue_size: int = 1000,
        settings: Settings | None = None,
    ) -> None:
        from chatai_otel import process_settings

        self.settings = settings or process_settings.settings()
        self.service_name = service_name or self.settings.browser.service_name
        self.max_body = max_body or self.settings.browser.max_body
        self.buckets = TokenBuckets(
            self.settings.browser.rate_limit if rate_limit is None else rate_limit,
            self.settings.browser.burst if burst is None else burst,
        )
        self.max_pending = max_pending
        self.queue_size = queue_size
        self.pending = 0
        self._forwarder: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._counter: Any = None

    # --- the parts built at first use (after a fork, in the worker that serves) ----------

    def _forward(self, signal: str, request: Message) -> bool:
        forwarder = self._forwarder
        if forwarder is None:
            with self._lock:
                if self._forwarder is None:
                    self._forwarder = self._start_forwarder()
                forwarder = self._forwarder
        accepted: bool = forwarder.submit(signal, request)
        return accepted

    def _start_forwarder(self) -> Any:
        from chatai_otel import process_settings
        from chatai_otel.export.forwarder import OTLPForwarder

        forwarder = OTLPForwarder(self.settings, queue_size=self.queue_size)
        telemetry = process_settings.telemetry()
        if telemetry is not None:  # flushed with the backend's own telemetry, in its deadline
            telemetry.add_shutdown_callback(lambda seconds: forwarder.close(seconds))
        else:
            seconds = self.settings.shutdown_timeout
            process_hooks.at_exit(lambda: forwarder.close(seconds))
        return forwarder

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="chatai-otel-tunnel")
        return self._executor

    def _count(self, signal: str, outcome: str) -> None:
        try:
            if self._counter is None:
                from opentelemetry import metrics

                self._counter = metrics.get_meter("chatai_otel.browser_tunnel").create_counter(
                    names.BROWSER_TUNNEL_REQUESTS,
                    unit=names.BROWSER_TUNNEL_REQUESTS_UNIT,
                    description="OTLP requests from browsers, by what the tunnel answered.",
                )
            self._counter.add(
                1, {names.ATTR_TUNNEL_SIGNAL: signal, names.ATTR_TUNNEL_OUTCOME: outcome}
            )
        except Exception:  # telemetry about telemetry never fails a request
            pass

    # --- one request ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        signal = SIGNAL_PATHS.get(path)
        if signal is None:
            await _answer(send, 404, b"not an OTLP path: use /v1/traces, /v1/metrics or /v1/logs")
            return
        if scope["method"] != "POST":
            await _answer(send, 405, b"POST only", [(b"allow", b"POST")])
            return
        headers = _headers(scope)
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.buckets.take(client)
        if wait:
            self._count(signal, "rate_limited")
            retry = str(max(1, round(wait))).encode()
            await _answer(send, 429, b"too many requests", [(b"retry-after", retry)])
            return
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode().lower()
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if media_type not in (PROTOBUF, JSON) or encoding not in ("", "identity", "gzip"):
            self._count(signal, "unsupported_media_type")
            await _answer(send, 415, b"OTLP takes application/x-protobuf or application/json")
            return
        body = await _read_body(receive, headers, self.max_body)
        if body is None:
            self._count(signal, "too_large")
            await _answer(send, 413, f"more than {self.max_body} bytes".encode())
            return
        if self.pending >= self.max_pending:
            self._count(signal, "queue_full")
            await _answer(send, 503, b"busy", [(b"retry-after", b"1")])
            return
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(
                self._worker(), self._handle, signal, body, media_type, encoding
            )
        finally:
            self.pending -= 1
        self._count(signal, outcome)
        if outcome == "accepted":
            response = b"{}" if media_type == JSON else b""
            await _answer(send, 200, response, content_type=media_type)
        elif outcome == "too_large":
            await _answer(send, 413, b"the body unpacks to too many bytes")
        elif outcome == "invalid":
            await _answer(send, 400, b"not an OTLP export request")
        else:
            await _answer(send, 503, b"busy", [(b"retry-after", b"1")])

    def _handle(self, signal: str, body: bytes, media_type: str, encoding: str) -> str:
        """On the tunnel's worker thread: unpack, decode, rewrite, queue. Returns the outcome."""
        try:
            data = unpack(body, encoding, self.max_body * UNPACKED_FACTOR)
            request = decode_request(signal, data, media_type)
        except OverflowError:
            return "too_large"
        except ValueError:
            return "invalid"
        try:
            rewrite_request(signal, request, self.service_name)
        except Exception:
            return "invalid"  # nothing unscrubbed goes on
        if self.settings.exporter_kind(signal) != "otlp":  # type: ignore[arg-type]
            return "accepted"  # this signal is not exported from here at all
        return "accepted" if self._forward(signal, request) else "queue_full"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {key.lower(): value for key, value in scope.get("headers", ())}


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                return None
        except ValueError:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def mount_browser_tunnel(app: Any, path: str = "/otlp", **limits: Any) -> BrowserTelemetryTunnel:
    """Mount the tunnel on a FastAPI/Starlette ``app`` at ``path``, outside its request telemetry.

    Call it before the app serves its first request (as with any mount). ``limits`` are
    :class:`BrowserTelemetryTunnel`'s keyword arguments. The frontend's exporters post to
    ``<backend>/otlp/v1/traces`` and so on; the app's CORS must allow the frontend origin.
    """
    from chatai_otel.integrations.fastapi import exclude_paths

    path = "/" + path.strip("/")
    tunnel = BrowserTelemetryTunnel(**limits)
    app.mount(path, tunnel)
    exclude_paths(app, [f"{path}/*"])
    return tunnel
