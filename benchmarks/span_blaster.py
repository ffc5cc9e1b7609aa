"""Sends whole traces (3 spans each, 5 % with an error span, 5 % slow) as fast as one
process can for ``seconds``, over OTLP/gRPC: the load of ``./dev bench gateway``.

Requests are built once with the generated protobuf classes and only their trace ids change
between sends, so this process costs far less per span than the collector it loads.

    python -m benchmarks.span_blaster <endpoint host:port> <seconds> <seed>
Prints {"spans": sent, "failed": spans in failed requests, "cpu_s": ...} as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PER_REQUEST = 170  # 510 spans, a batch as an SDK sends it
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _template() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "bench-blaster"
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    for n in range(TRACES_PER_REQUEST):
        root_id = (n * 3 + 1).to_bytes(8, "big")
        slow = n % 20 == 1
        for index, (name, kind) in enumerate(
            (("GET /documents", Span.SPAN_KIND_SERVER), ("render", Span.SPAN_KIND_INTERNAL),
             ("process chatai:jobs", Span.SPAN_KIND_CONSUMER))
        ):  # fmt: skip
            span = spans.add()
            span.name, span.kind = name, kind
            span.span_id = (n * 3 + 1 + index).to_bytes(8, "big")
            if index:
                span.parent_span_id = root_id
            span.start_time_unix_nano = now
            span.end_time_unix_nano = now + (2_500_000_000 if slow and not index else 3_000_000)
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = "http.route", "/documents/{id}"
            if index == 2 and n % 20 == 0:
                span.status.code = Status.STATUS_CODE_ERROR
    return request


def main(endpoint: str, seconds: float, seed: int) -> None:
    request = _template()
    spans = request.resource_spans[0].scope_spans[0].spans
    channel = grpc.insecure_channel(endpoint)
    send = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    sent = failed = 0
    counter = seed << 40
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for n in range(TRACES_PER_REQUEST):
            counter += 1
            trace_id = counter.to_bytes(16, "big")
            for span in spans[n * 3 : n * 3 + 3]:
                span.trace_id = trace_id
        try:
            send(request.SerializeToString(), timeout=10)
            sent += len(spans)
        except grpc.RpcError:
            failed += len(spans)
    channel.close()
    print(json.dumps({"spans": sent, "failed": failed, "cpu_s": time.process_time()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
