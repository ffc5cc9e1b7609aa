"""The shared pieces of the OTLP encoders (chatai_otel.export.otlp_wire): the pair cache."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from chatai_otel.export.otlp_wire import EncodedPairs
from chatai_otel.export.spans import OtlpSpanEncoder


def test_a_key_whose_values_never_repeat_stops_being_remembered():
    pairs = EncodedPairs(limit=64)
    pairs.remember("http.route", ("http.route", "/ping"), b"route")
    for n in range(40):
        pairs.remember("request.id", ("request.id", f"{n:032x}"), b"id")
    assert pairs.get(("http.route", "/ping")) == b"route"  # not cleared away by the ids
    assert pairs.get(("request.id", f"{39:032x}")) is None
    assert len(pairs) == 1 + 64 // 4  # the ids stopped at a quarter of the table
    for n in range(100):  # and never fill it again
        pairs.remember("request.id", ("request.id", f"{n + 40:032x}"), b"id")
    assert pairs.get(("http.route", "/ping")) == b"route"


def test_spans_with_unique_ids_encode_the_same_with_and_past_the_cache():
    """Past the point where the id's key stops being cached, every span still carries its
    own id and the repeating attributes, as the official message classes read them."""
    scope = InstrumentationScope("test")
    records = [
        (n + 1, n + 1, 0, 0x101, None, "GET /ping", 2, 1, 2,
         {"http.route": "/ping", "chatai.request.id": f"{n:032x}", "http.response.status_code": 200},
         None, None, 0, None, scope, None)
        for n in range(3000)
    ]  # fmt: skip
    encoder = OtlpSpanEncoder()
    for start in range(0, 3000, 500):
        request = ExportTraceServiceRequest.FromString(
            encoder.encode(records[start : start + 500], None)  # type: ignore[arg-type]
        )
        spans = request.resource_spans[0].scope_spans[0].spans
        assert len(spans) == 500
        for offset, span in enumerate(spans):
            attributes = {a.key: a.value for a in span.attributes}
            assert attributes["chatai.request.id"].string_value == f"{start + offset:032x}"
            assert attributes["http.route"].string_value == "/ping"
            assert attributes["http.response.status_code"].int_value == 200
