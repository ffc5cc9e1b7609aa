"""The OTLP/JSON encoding the demo writes and ``view`` reads (the spec's rules, round trips)."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar, Metric, NumberDataPoint, Sum
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from chatai_otel.export.otlp_json import OTLPJsonWriter, decode, encode, read

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def trace_request() -> ExportTraceServiceRequest:
    span = Span(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        name="POST /documents",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_500_000_000,
        attributes=[
            KeyValue(key="http.response.status_code", value=AnyValue(int_value=202)),
            KeyValue(key="blob", value=AnyValue(bytes_value=b"\x00\xff")),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        links=[Span.Link(trace_id=TRACE[::-1], span_id=SPAN[::-1])],
        events=[Span.Event(name="exception", time_unix_nano=1_700_000_000_100_000_000)],
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


def test_ids_are_hex_enums_integers_names_lower_camel_case():
    document = json.loads(encode(trace_request()))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE.hex() and span["spanId"] == SPAN.hex()
    assert span["parentSpanId"] == PARENT.hex()
    assert span["links"][0] == {"traceId": TRACE[::-1].hex(), "spanId": SPAN[::-1].hex()}
    assert span["kind"] == 2 and span["status"]["code"] == 2
    assert span["startTimeUnixNano"] == "1700000000000000000"  # 64-bit ints as decimal strings
    # bytes that are not ids keep the protobuf mapping's base64
    assert span["attributes"][1]["value"] == {"bytesValue": "AP8="}
    assert "\n" not in encode(trace_request())


def test_round_trip_and_the_plain_protobuf_reading_differs():
    line = encode(trace_request())
    signal, request = decode(line)
    assert signal == "traces" and request == trace_request()
    # what a reader that ignores the OTLP rule gets: 24 bytes of garbage for a 16-byte id
    naive = json_format.Parse(line, ExportTraceServiceRequest())
    assert len(naive.resource_spans[0].scope_spans[0].spans[0].trace_id) == 24


def test_exemplar_ids_in_metrics_are_hex_too():
    point = NumberDataPoint(
        as_int=3,
        exemplars=[Exemplar(as_int=1, trace_id=TRACE, span_id=SPAN, time_unix_nano=5)],
    )
    request = ExportMetricsServiceRequest()
    metric = Metric(name="chatai.business.events", sum=Sum(data_points=[point], is_monotonic=True))
    request.resource_metrics.add().scope_metrics.add().metrics.append(metric)
    document = json.loads(encode(request))
    exemplar = document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][
        0
    ]["exemplars"][0]
    assert exemplar["traceId"] == TRACE.hex() and exemplar["spanId"] == SPAN.hex()
    assert decode(json.dumps(document))[1] == request


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"spans": []}', "not an OTLP export request"),
        ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "not hex"),
        ('{"resourceSpans": [{"bogus": 1}]}', "bogus"),
    ],
)
def test_bad_lines_are_value_errors(line, message):
    with pytest.raises(ValueError, match=message):
        decode(line)


def test_writer_appends_one_line_per_request_from_many_threads(tmp_path):
    writer = OTLPJsonWriter(tmp_path / "out")
    threads = [
        threading.Thread(
            target=lambda: [writer.write("traces", trace_request()) for _ in range(50)]
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.write("traces", ExportTraceServiceRequest())  # empty: skipped
    writer.write("profiles", trace_request())  # unknown signal: skipped
    writer.close()
    lines = (tmp_path / "out" / "traces.jsonl").read_text().splitlines()
    assert len(lines) == 200 == writer.lines["traces"]
    assert all(decode(line)[1] == trace_request() for line in lines)
    assert [signal for signal, _ in read([tmp_path / "out"])] == ["traces"] * 200
    # a new writer on the same directory starts the files afresh
    OTLPJsonWriter(tmp_path / "out").close()
    assert not (tmp_path / "out" / "traces.jsonl").exists()


def test_the_receiver_reads_otlp_json_over_http(receiver):
    """OTLP/HTTP with Content-Type application/json: hex ids decoded as the spec says."""
    request = urllib.request.Request(
        f"{receiver.http_endpoint}/v1/traces",
        data=encode(trace_request()).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    span = receiver.wait_for_spans(1)[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        TRACE.hex(),
        SPAN.hex(),
        PARENT.hex(),
    )


def test_the_replay_config_reads_what_the_demo_writes():
    """collector/replay.yaml: its glob matches the demo's files, from their first line, to the stack."""
    import fnmatch
    from pathlib import Path

    import yaml

    from chatai_otel.export.otlp_json import FILE_NAMES
    from support.collector import load_yaml

    root = Path(__file__).resolve().parents[1]
    config = load_yaml(root / "collector" / "replay.yaml")  # ${env:X:-default} -> default
    receiver = config["receivers"]["otlpjsonfile"]
    assert receiver["start_at"] == "beginning"
    for name in FILE_NAMES.values():
        assert any(fnmatch.fnmatch(f"/telemetry/{name}", glob) for glob in receiver["include"])
    assert not any(fnmatch.fnmatch("/telemetry/backend.log", g) for g in receiver["include"])
    assert set(config["service"]["pipelines"]) == {"traces", "metrics", "logs"}
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    host, _, port = config["exporters"]["otlp_grpc"]["endpoint"].partition(":")
    assert host in compose["services"] and port == "4317"
    # its usage runs it as the compose collector service, in the compose network
    assert "docker compose run --rm" in (root / "collector" / "replay.yaml").read_text()
    assert "otel-collector --config=" in (root / "collector" / "replay.yaml").read_text()
