"""A histogram for the request path that costs one dict lookup and a bisect per point.

Why: measured here, ``Histogram.record`` of the SDK costs ~10-20 µs per call on
the request path (a ``Measurement`` dataclass, attribute validation, a frozenset
hash of the attributes, a lock, the exemplar reservoir) — for the one metric
point every HTTP request makes. :class:`FastHistogram` keeps explicit-bucket
counts per attribute set itself, keyed by a tuple the caller already has, with
one exemplar per bucket (the last sampled measurement, as the SDK's aligned
bucket reservoir keeps), and hands the points to the metric reader at each
collection.

The reader is :class:`ProducingMetricReader` (sdk.py builds it instead of the
SDK's ``PeriodicExportingMetricReader``): before every export it adds what its
producers collected to the SDK's own ``MetricsData``, with the reader's
temporality (cumulative by default, delta when the exporter prefers it) and the
cardinality limit applied as the SDK applies it (one overflow series with
``otel.metric.overflow=true``).

:func:`request_histogram` returns a :class:`FastHistogram` only when the meter
provider is an SDK provider whose single reader is a ``ProducingMetricReader``;
otherwise (another reader, a test's in-memory reader, no SDK) it returns an
adapter over the SDK's own histogram, so every reader sees every point.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from chatai_otel import process_hooks
from chatai_otel._sdk_compat import (
    CollectHookedReader,
    exemplar,
    exemplar_filter_name,
    fast_path_on,
    is_disabled,
    meter_provider_resource,
    meter_readers,
)

__all__ = ["FastHistogram", "ProducingMetricReader", "request_histogram"]

_OVERFLOW_KEY = ("otel.metric.overflow",)
_OVERFLOW_ATTRIBUTES = {"otel.metric.overflow": True}
# exemplar filters of the SDK's MeterProvider, by class name
_EXEMPLARS_NONE, _EXEMPLARS_SAMPLED, _EXEMPLARS_ALL = 0, 1, 2


class _Point:
    """One attribute set: bucket counts, sum, min, max, and the last exemplar per bucket."""

    __slots__ = ("attributes", "count", "counts", "exemplars", "max", "min", "start", "sum")

    def __init__(self, attributes: Mapping[str, Any], buckets: int, start: int) -> None:
        self.attributes = attributes
        self.counts = [0] * buckets
        self.exemplars: list[tuple[float, int, int, int] | None] | None = None
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start = start


class FastHistogram:
    """An explicit-bucket histogram fed from one hot path (see module doc)."""

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        scope: InstrumentationScope,
        *,
        cardinality_limit: int = 2000,
        exemplars: int = _EXEMPLARS_SAMPLED,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.scope = scope
        self._bounds = tuple(float(b) for b in boundaries)
        self._limit = max(1, cardinality_limit)
        self._exemplars = exemplars
        self._points: dict[tuple[Any, ...], _Point] = {}
        self._last_collect = time.time_ns()
        self._lock = threading.Lock()
        process_hooks.on_fork_of(self, after_in_child="_renew_lock")

    def _renew_lock(self) -> None:  # the parent's may be held for good in a forked child
        self._lock = threading.Lock()

    def record(
        self,
        value: float,
        key: tuple[Any, ...],
        attributes: Mapping[str, Any],
        span_context: Any = None,
    ) -> None:
        """Add ``value`` to the series ``key`` (a tuple of the values of ``attributes``, which
        are copied for a new series only). ``span_context``: the span the measurement
        belongs to, for the exemplar."""
        index = bisect_left(self._bounds, value)
        with self._lock:
            point = self._points.get(key)
            if point is None:
                point = self._new_point(key, attributes)
            point.counts[index] += 1
            point.count += 1
            point.sum += value
            if value < point.min:
                point.min = value
            if value > point.max:
                point.max = value
            mode = self._exemplars
            if mode:
                if span_context is not None and span_context.trace_flags.sampled:
                    trace_id, span_id = span_context.trace_id, span_context.span_id
                elif mode == _EXEMPLARS_ALL:
                    trace_id = span_id = 0
                else:
                    return
                exemplars = point.exemplars
                if exemplars is None:
                    exemplars = point.exemplars = [None] * len(point.counts)
                exemplars[index] = (value, time.time_ns(), trace_id, span_id)

    def _new_point(self, key: tuple[Any, ...], attributes: Mapping[str, Any]) -> _Point:
        points = self._points
        # The SDK keeps `limit` series and adds the overflow series on top (sdk.py passes the
        # limit minus one); the same here.
        if len(points) >= self._limit:
            point = points.get(_OVERFLOW_KEY)
            if point is None:
                point = points[_OVERFLOW_KEY] = _Point(
                    _OVERFLOW_ATTRIBUTES, len(self._bounds) + 1, time.time_ns()
                )
            return point
        point = points[key] = _Point(dict(attributes), len(self._bounds) + 1, time.time_ns())
        return point

    def collect(self, temporality: AggregationTemporality) -> Metric | None:
        """The points so far as an SDK ``Metric`` (delta: since the last collection)."""
        now = time.time_ns()
        with self._lock:
            if temporality is AggregationTemporality.DELTA:
                points, self._points = self._points, {}
                start: int | None = self._last_collect
            else:
                points = self._points
                start = None
            self._last_collect = now
            data_points = [
                HistogramDataPoint(
                    attributes=point.attributes,
                    start_time_unix_nano=start if start is not None else point.start,
                    time_unix_nano=now,
                    count=point.count,
                    sum=point.sum,
                    bucket_counts=list(point.counts),
                    explicit_bounds=self._bounds,
                    min=point.min,
                    max=point.max,
                    exemplars=_exemplars(point),
                )
                for point in points.values()
                if point.count
            ]
        if not data_points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=HistogramData(data_points=data_points, aggregation_temporality=temporality),
        )


def _exemplars(point: _Point) -> list[Any]:
    """The bucket exemplars of ``point``, then cleared (the SDK's reservoir resets the same)."""
    stored = point.exemplars
    if not stored:
        return []
    point.exemplars = None
    return [
        exemplar(value, at, span_id or None, trace_id or None)
        for value, at, trace_id, span_id in (e for e in stored if e is not None)
    ]


class ProducingMetricReader(CollectHookedReader):
    """The SDK's periodic reader, adding what its :class:`FastHistogram` s hold to each export."""

    # How long a fork waits for a collection in flight (an in-memory walk: milliseconds).
    FORK_WAIT = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Fork safety. The SDK's reader restarts its ticker thread in a forked child, but the
        # locks the parent's ticker held at that moment stay held there for good: its export
        # lock (held while the parent's export waits on the network) and the SDK's storage and
        # aggregation locks (held during a collection). A gunicorn --preload worker forked
        # mid-export never exported a metric again; one forked mid-collection would hang on
        # its first measurement. So a fork waits until no collection runs (bounded), and the
        # child gets a fresh export lock. Registered before the SDK's own fork hook, so the
        # child's new ticker starts on fresh locks.
        self._collecting = threading.Lock()
        self._held_for_fork = False
        process_hooks.on_fork_of(
            self,
            before="_before_fork",
            after_in_parent="_after_fork_in_parent",
            after_in_child="_after_fork_in_child",
        )
        super().__init__(*args, **kwargs)
        self._producers: list[FastHistogram] = []
        self._resource: Resource | None = None

    def _before_fork(self) -> None:
        self._held_for_fork = self._collecting.acquire(timeout=self.FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._collecting.release()

    def _after_fork_in_child(self) -> None:
        self._held_for_fork = False
        self._collecting = threading.Lock()
        self.renew_export_lock()  # the SDK reader's; the parent's may be held

    def add_producer(self, histogram: FastHistogram, resource: Resource) -> None:
        self._producers.append(histogram)
        self._resource = resource

    def around_collect(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The provider's collect function, adding the producers' points (also when the SDK
        itself has nothing to report)."""

        def collect(reader: Any, timeout_millis: float = 10_000) -> MetricsData | None:
            with self._collecting:  # a fork waits for this (see __init__)
                data: MetricsData | None = func(reader, timeout_millis=timeout_millis)
                try:
                    return self._with_producers(data)
                except Exception:  # never lose the SDK's own metrics over ours
                    return data

        return collect

    def _with_producers(self, metrics_data: MetricsData | None) -> MetricsData | None:
        if not self._producers:
            return metrics_data
        temporality = self.histogram_temporality(AggregationTemporality.CUMULATIVE)
        by_scope: dict[InstrumentationScope, list[Metric]] = {}
        for producer in self._producers:
            metric = producer.collect(temporality)
            if metric is not None:
                by_scope.setdefault(producer.scope, []).append(metric)
        if not by_scope:
            return metrics_data
        resource_metrics = list(metrics_data.resource_metrics) if metrics_data else []
        if resource_metrics:
            first = resource_metrics[0]
            scopes = list(first.scope_metrics)
            resource = first.resource
        else:
            scopes = []
            resource = self._resource or Resource.get_empty()
        for scope, items in by_scope.items():
            scopes.append(
                ScopeMetrics(scope=scope, metrics=items, schema_url=scope.schema_url or "")
            )
        merged = ResourceMetrics(
            resource=resource, scope_metrics=scopes, schema_url=resource.schema_url
        )
        return MetricsData(resource_metrics=[merged, *resource_metrics[1:]])


# --- the choice ---------------------------------------------------------------------------


class _SdkHistogramAdapter:
    """The same ``record`` signature over an SDK (or proxy) histogram instrument."""

    def __init__(self, instrument: metrics.Histogram) -> None:
        self._instrument = instrument

    def record(
        self,
        value: float,
        key: tuple[Any, ...],
        attributes: Mapping[str, Any],
        span_context: Any = None,
    ) -> None:
        self._instrument.record(value, attributes)


def _exemplar_mode(provider: MeterProvider) -> int:
    name = exemplar_filter_name(provider)
    if name == "AlwaysOffExemplarFilter":
        return _EXEMPLARS_NONE
    if name == "AlwaysOnExemplarFilter":
        return _EXEMPLARS_ALL
    return _EXEMPLARS_SAMPLED


def request_histogram(
    name: str,
    *,
    unit: str,
    description: str,
    boundaries: Sequence[float],
    scope_name: str,
    scope_version: str | None,
    meter_provider: metrics.MeterProvider | None = None,
) -> FastHistogram | _SdkHistogramAdapter:
    """A :class:`FastHistogram` when the provider's only reader can produce it, else the SDK's."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    try:
        if (
            isinstance(provider, MeterProvider)
            and not is_disabled(provider)
            and fast_path_on("request histogram")
        ):
            readers = meter_readers(provider)
            if len(readers) == 1 and isinstance(readers[0], ProducingMetricReader):
                reader = readers[0]
                limit = reader.histogram_cardinality_limit(2000)
                histogram = FastHistogram(
                    name,
                    unit,
                    description,
                    boundaries,
                    InstrumentationScope(scope_name, scope_version),
                    cardinality_limit=limit,
                    exemplars=_exemplar_mode(provider),
                )
                reader.add_producer(histogram, meter_provider_resource(provider))
                return histogram
    except Exception:
        pass
    meter = metrics.get_meter(scope_name, scope_version or "", provider)
    return _SdkHistogramAdapter(
        meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=boundaries
        )
    )
