"""A small, real OTLP receiver (gRPC and HTTP/protobuf) for tests, benchmarks and the demo.

It decodes exactly what the exporters send on the wire and keeps the decoded
spans, log records and metric points in memory, so a test can wait for what
it expects. ``python -m chatai_otel.testing.receiver`` runs it as its own process; then
``GET /counts`` on its HTTP port answers how much has arrived (benchmarks use
that to count delivered telemetry without sharing an interpreter with the app).
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "OTLPReceiver",
    "ReceivedLog",
    "ReceivedMetricPoint",
    "ReceivedSpan",
    "any_value",
    "attributes_of",
]

T = TypeVar("T")


def any_value(value: AnyValue) -> Any:
    """Decode an OTLP AnyValue into plain Python."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """Decode a repeated KeyValue into a dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, with its resource and scope."""

    resource: dict[str, Any]
    scope: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class ReceivedLog:
    """One log record as it arrived."""

    resource: dict[str, Any]
    scope: str
    body: Any
    severity_text: str
    severity_number: int
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    event_name: str
    time_ns: int


@dataclass(frozen=True)
class ReceivedMetricPoint:
    """One data point of one metric from one export (cumulative points repeat across exports)."""

    resource: dict[str, Any]
    scope: str
    name: str
    unit: str
    kind: str  # sum, gauge, histogram, exponential_histogram, summary
    attributes: dict[str, Any]
    value: float | None  # sum and gauge
    count: int | None = None  # histogram
    sum: float | None = None  # histogram
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()
    time_ns: int = 0


@dataclass
class _Store:
    spans: list[ReceivedSpan] = field(default_factory=list)
    logs: list[ReceivedLog] = field(default_factory=list)
    metrics: list[ReceivedMetricPoint] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0, "logs": 0})


def _decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    result = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                result.append(
                    ReceivedSpan(
                        resource=resource,
                        scope=scope_spans.scope.name,
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=attributes_of(span.attributes),
                        events=[
                            {
                                "name": event.name,
                                "attributes": attributes_of(event.attributes),
                                "time_ns": event.time_unix_nano,
                            }
                            for event in span.events
                        ],
                        links=[
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": attributes_of(link.attributes),
                            }
                            for link in span.links
                        ],
                        status_code=span.status.code,
                        status_message=span.status.message,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return result


def _decode_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLog]:
    result = []
    for resource_logs in request.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                result.append(
                    ReceivedLog(
                        resource=resource,
                        scope=scope_logs.scope.name,
                        body=any_value(record.body),
                        severity_text=record.severity_text,
                        severity_number=record.severity_number,
                        attributes=attributes_of(record.attributes),
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        event_name=record.event_name,
                        time_ns=record.time_unix_nano,
                    )
                )
    return result


def _decode_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> list[ReceivedMetricPoint]:
    result = []
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data") or ""
                data = getattr(metric, kind) if kind else None
                for point in getattr(data, "data_points", ()):
                    common = {
                        "resource": resource,
                        "scope": scope,
                        "name": metric.name,
                        "unit": metric.unit,
                        "kind": kind,
                        "attributes": attributes_of(point.attributes),
                        "time_ns": point.time_unix_nano,
                    }
                    if kind in ("sum", "gauge"):
                        value_kind = point.WhichOneof("value")
                        value = float(getattr(point, value_kind)) if value_kind else None
                        result.append(ReceivedMetricPoint(value=value, **common))
                    elif kind == "histogram":
                        result.append(
                            ReceivedMetricPoint(
                                value=None,
                                count=point.count,
                                sum=point.sum,
                                bucket_counts=tuple(point.bucket_counts),
                                explicit_bounds=tuple(point.explicit_bounds),
                                **common,
                            )
                        )
                    else:
                        result.append(
                            ReceivedMetricPoint(
                                value=None, count=getattr(point, "count", None), **common
                            )
                        )
    return result


_SIGNALS: dict[str, tuple[type[Message], Message, Callable[[Any], list[Any]], str]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse(),
        _decode_spans,
        "spans",
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse(),
        _decode_metrics,
        "metrics",
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse(),
        _decode_logs,
        "logs",
    ),
}


class OTLPReceiver:
    """Listens for OTLP over gRPC and HTTP on loopback and keeps what it decodes.

    ``keep=False`` only counts (for benchmarks that send millions of records).
    ``on_request(signal, request)`` sees every decoded export request.
    ``reject`` makes the gRPC side answer UNAVAILABLE and the HTTP side 503 (a collector refusing).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        grpc_port: int = 0,
        http_port: int = 0,
        *,
        keep: bool = True,
        on_request: Callable[[str, Message], None] | None = None,
    ) -> None:
        self.host = host
        self._grpc_port_wanted = grpc_port
        self._http_port_wanted = http_port
        self.keep = keep
        self.on_request = on_request
        self.reject = False
        self.delay = 0.0
        self._store = _Store()
        self._counts = {"spans": 0, "logs": 0, "metric_points": 0}
        self._cond = threading.Condition()
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        """Bind both ports (0 = a free one) and start serving."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_GrpcTraces(self), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_GrpcMetrics(self), server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_GrpcLogs(self), server)  # type: ignore[no-untyped-call]
        self.grpc_port = server.add_insecure_port(f"{self.host}:{self._grpc_port_wanted}")
        server.start()
        self._grpc_server = server

        receiver = self

        class Handler(_HttpHandler):
            owner = receiver

        self._http_server = ThreadingHTTPServer((self.host, self._http_port_wanted), Handler)
        self._http_server.daemon_threads = True
        self.http_port = self._http_server.server_address[1]
        threading.Thread(
            target=self._http_server.serve_forever, daemon=True, name="otlp-receiver-http"
        ).start()
        return self

    def stop(self) -> None:
        """Stop both servers (what was received stays readable)."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def env(self, protocol: str = "grpc") -> dict[str, str]:
        """Environment variables that point an exporting process at this receiver."""
        endpoint = self.grpc_endpoint if protocol == "grpc" else self.http_endpoint
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }

    # --- ingestion ---------------------------------------------------------------------

    def ingest(self, signal: str, request: Message) -> None:
        """Decode and keep one export request (called by both transports)."""
        _request_type, _response, decode, store_name = _SIGNALS[signal]
        # Only counting (benchmarks): spans and log records are counted without decoding
        # them, so a benchmark measures the sender, not this receiver's Python decoding.
        decoded: list[Any] = []
        if not self.keep and signal in ("traces", "logs"):
            count = _count_items(signal, request)
        else:
            decoded = decode(request)
            count = len(decoded)
        if self.on_request is not None:
            self.on_request(signal, request)
        with self._cond:
            self._store.requests[signal] += 1
            count_key = {"spans": "spans", "logs": "logs", "metrics": "metric_points"}[store_name]
            self._counts[count_key] += count
            if self.keep:
                getattr(self._store, store_name).extend(decoded)
            self._cond.notify_all()

    # --- reading -----------------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._store.spans)

    def logs(self) -> list[ReceivedLog]:
        with self._cond:
            return list(self._store.logs)

    def metrics(self) -> list[ReceivedMetricPoint]:
        with self._cond:
            return list(self._store.metrics)

    def counts(self) -> dict[str, int]:
        """How many spans, log records and metric points arrived, and requests per signal."""
        with self._cond:
            return {**self._counts, **{f"{k}_requests": v for k, v in self._store.requests.items()}}

    def clear(self) -> None:
        with self._cond:
            self._store = _Store()
            self._counts = dict.fromkeys(self._counts, 0)

    def wait_for(
        self,
        read: Callable[[], list[T]],
        count: int = 1,
        predicate: Callable[[T], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[T]:
        """Wait until ``read()`` has ``count`` items matching ``predicate``; return the matches.

        Raises AssertionError with what did arrive when the timeout passes first.
        """
        deadline = time.monotonic() + timeout
        while True:
            items = read()
            matches = [item for item in items if predicate is None or predicate(item)]
            if len(matches) >= count:
                return matches
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"waited {timeout}s for {count} items, got {len(matches)} matching "
                    f"of {len(items)}: {[getattr(i, 'name', getattr(i, 'body', i)) for i in items][:30]}"
                )
            with self._cond:
                self._cond.wait(min(left, 0.2))

    def wait_for_spans(
        self,
        count: int = 1,
        predicate: Callable[[ReceivedSpan], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[ReceivedSpan]:
        return self.wait_for(self.spans, count, predicate, timeout)

    def wait_for_logs(
        self,
        count: int = 1,
        predicate: Callable[[ReceivedLog], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[ReceivedLog]:
        return self.wait_for(self.logs, count, predicate, timeout)

    def wait_for_metrics(
        self,
        count: int = 1,
        predicate: Callable[[ReceivedMetricPoint], bool] | None = None,
        timeout: float = 15.0,
    ) -> list[ReceivedMetricPoint]:
        return self.wait_for(self.metrics, count, predicate, timeout)


def _count_items(signal: str, request: Any) -> int:
    """Spans or log records in an export request, without decoding them."""
    if signal == "traces":
        return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def _grpc_handle(owner: OTLPReceiver, signal: str, request: Message, context: Any) -> Message:
    if owner.delay:
        time.sleep(owner.delay)
    if owner.reject:
        context.abort(grpc.StatusCode.UNAVAILABLE, "receiver is rejecting (test)")
    owner.ingest(signal, request)
    return _SIGNALS[signal][1]


class _GrpcTraces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: Any) -> Message:
        return _grpc_handle(self._owner, "traces", request, context)


class _GrpcMetrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: Any) -> Message:
        return _grpc_handle(self._owner, "metrics", request, context)


class _GrpcLogs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, owner: OTLPReceiver) -> None:
        self._owner = owner

    def Export(self, request: Message, context: Any) -> Message:
        return _grpc_handle(self._owner, "logs", request, context)


class _HttpHandler(BaseHTTPRequestHandler):
    owner: OTLPReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path != "/counts":
            self._reply(404, b"", "text/plain")
            return
        self._reply(200, json.dumps(self.owner.counts()).encode(), "application/json")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        signal = self.path.rstrip("/").rsplit("/", 1)[-1]
        if not self.path.startswith("/v1/") or signal not in _SIGNALS:
            self._reply(404, b"", "text/plain")
            return
        if self.owner.delay:
            time.sleep(self.owner.delay)
        if self.owner.reject:
            self._reply(503, b"", "text/plain")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request_type, response, _decode, _name = _SIGNALS[signal]
        request = request_type()
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            if content_type == "application/json":
                # OTLP/JSON: hex trace/span ids, which the plain protobuf mapping would misread
                from chatai_otel.export.otlp_json import decode

                request = decode(body, signal)[1]
            else:
                request.ParseFromString(body)
        except Exception:
            self._reply(400, b"", "text/plain")
            return
        self.owner.ingest(signal, request)
        self._reply(200, response.SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> None:
    """Run a counting receiver until interrupted; prints its ports as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep decoded telemetry in memory")
    args = parser.parse_args(argv)
    receiver = OTLPReceiver(args.host, args.grpc_port, args.http_port, keep=args.keep).start()
    print(
        json.dumps({"grpc_port": receiver.grpc_port, "http_port": receiver.http_port}), flush=True
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
