"""FastHistogram + ProducingMetricReader: the same points the SDK's histogram would export."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanContext, TraceFlags

from chatai_otel.export.histograms import FastHistogram, ProducingMetricReader, request_histogram
from chatai_otel.integrations.asgi import DURATION_BUCKETS

VALUES = [0.0, 0.004, 0.005, 0.0051, 0.1, 0.75, 3.0, 10.0, 11.0, 0.005]
ATTRIBUTES = {"http.request.method": "GET", "http.route": "/x", "http.response.status_code": 200}
KEY = tuple(ATTRIBUTES.values())


def _provider(receiver, **reader_options) -> tuple[MeterProvider, ProducingMetricReader]:
    exporter = OTLPMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True, **reader_options)
    reader = ProducingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource({"service.name": "fast-metrics"}),
        metric_readers=[reader],
        shutdown_on_exit=False,
    )
    return provider, reader


def test_points_match_the_sdk_histogram_and_ride_along_with_the_sdk_metrics(receiver):
    provider, _reader = _provider(receiver)
    try:
        fast = request_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            boundaries=DURATION_BUCKETS,
            scope_name="chatai_otel.web",
            scope_version="1.0",
            meter_provider=provider,
        )
        assert isinstance(fast, FastHistogram)
        sdk = provider.get_meter("reference").create_histogram(
            "reference.duration", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS
        )
        for value in VALUES:
            fast.record(value, KEY, ATTRIBUTES)
            sdk.record(value, ATTRIBUTES)
        fast.record(0.2, ("POST", "/y", 500), {"http.request.method": "POST", "http.route": "/y"})
        assert provider.force_flush(10_000)
        points = receiver.wait_for_metrics(
            3, lambda p: p.name in ("http.server.request.duration", "reference.duration"), timeout=5
        )
        by_name = {(p.name, p.attributes.get("http.route")): p for p in points}
        ours = by_name[("http.server.request.duration", "/x")]
        reference = by_name[("reference.duration", "/x")]
        assert ours.attributes == reference.attributes == ATTRIBUTES
        assert ours.count == reference.count == len(VALUES)
        assert ours.sum == reference.sum
        assert ours.bucket_counts == reference.bucket_counts
        assert ours.explicit_bounds == reference.explicit_bounds == DURATION_BUCKETS
        assert (ours.kind, ours.unit, ours.scope) == ("histogram", "s", "chatai_otel.web")
        assert ours.resource["service.name"] == "fast-metrics"
        assert by_name[("http.server.request.duration", "/y")].count == 1
        # cumulative: the next export repeats the totals
        fast.record(0.5, KEY, ATTRIBUTES)
        receiver.clear()
        provider.force_flush(10_000)
        (again,) = receiver.wait_for_metrics(
            1,
            lambda p: p.name == "http.server.request.duration" and p.attributes == ATTRIBUTES,
            timeout=5,
        )
        assert again.count == len(VALUES) + 1
    finally:
        provider.shutdown()


def test_delta_temporality_when_the_exporter_prefers_it(receiver):
    provider, _reader = _provider(
        receiver, preferred_temporality={Histogram: AggregationTemporality.DELTA}
    )
    try:
        fast = request_histogram(
            "d", unit="s", description="", boundaries=(1.0,), scope_name="s",
            scope_version=None, meter_provider=provider,
        )  # fmt: skip
        fast.record(0.5, KEY, ATTRIBUTES)
        fast.record(2.0, KEY, ATTRIBUTES)
        provider.force_flush(10_000)
        (first,) = receiver.wait_for_metrics(1, lambda p: p.name == "d", timeout=5)
        assert (first.count, first.bucket_counts) == (2, (1, 1))
        receiver.clear()
        fast.record(0.1, KEY, ATTRIBUTES)
        provider.force_flush(10_000)
        (second,) = receiver.wait_for_metrics(1, lambda p: p.name == "d", timeout=5)
        assert (second.count, second.bucket_counts) == (1, (1, 0))
    finally:
        provider.shutdown()


def test_cardinality_limit_folds_new_series_into_the_overflow_series():
    histogram = FastHistogram(
        "h",
        "s",
        "",
        (1.0,),
        scope=None,
        cardinality_limit=3,  # type: ignore[arg-type]
    )
    for n in range(10):
        histogram.record(0.5, (n,), {"n": n})
    histogram.record(0.5, (1,), {"n": 1})  # a known series still counts as itself
    metric = histogram.collect(AggregationTemporality.CUMULATIVE)
    assert metric is not None
    counts = {tuple(p.attributes.items()): p.count for p in metric.data.data_points}
    assert counts == {
        (("n", 0),): 1,
        (("n", 1),): 2,
        (("n", 2),): 1,
        (("otel.metric.overflow", True),): 7,
    }


def test_one_exemplar_per_bucket_from_sampled_spans_then_cleared():
    histogram = FastHistogram("h", "s", "", (1.0, 2.0), scope=None)  # type: ignore[arg-type]
    sampled = SpanContext(0xA1, 0xB1, is_remote=False, trace_flags=TraceFlags(1))
    later = SpanContext(0xA2, 0xB2, is_remote=False, trace_flags=TraceFlags(1))
    unsampled = SpanContext(0xA3, 0xB3, is_remote=False, trace_flags=TraceFlags(0))
    histogram.record(0.5, KEY, ATTRIBUTES, sampled)
    histogram.record(0.7, KEY, ATTRIBUTES, later)  # the last one in a bucket is kept
    histogram.record(1.5, KEY, ATTRIBUTES, unsampled)  # not sampled: no exemplar
    histogram.record(5.0, KEY, ATTRIBUTES, None)
    metric = histogram.collect(AggregationTemporality.CUMULATIVE)
    assert metric is not None
    (point,) = metric.data.data_points
    assert [(e.value, e.trace_id, e.span_id) for e in point.exemplars] == [(0.7, 0xA2, 0xB2)]
    assert (point.min, point.max, point.count) == (0.5, 5.0, 4)
    metric = histogram.collect(AggregationTemporality.CUMULATIVE)
    assert metric is not None and metric.data.data_points[0].exemplars == []


def test_any_other_reader_gets_the_sdk_histogram():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    histogram = request_histogram(
        "h", unit="s", description="", boundaries=(1.0,), scope_name="s",
        scope_version=None, meter_provider=provider,
    )  # fmt: skip
    assert not isinstance(histogram, FastHistogram)
    histogram.record(0.5, KEY, ATTRIBUTES)
    data = reader.get_metrics_data()
    (point,) = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert point.count == 1 and dict(point.attributes) == ATTRIBUTES
    provider.shutdown()
