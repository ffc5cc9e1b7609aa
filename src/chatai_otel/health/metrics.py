"""The latest health results as metrics: ``chatai.health.status``,
``chatai.health.check.duration`` and the host gauges, read from the cache (never I/O)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as metrics_api
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from chatai_otel import metric_names
from chatai_otel.health.builtin_checks import SystemCheck
from chatai_otel.health.report import CheckResult, HealthStatus
from chatai_otel.providers import distro_version

if TYPE_CHECKING:
    from chatai_otel.health.checker import HealthChecker


# Metric names, units and attributes: in metric_names, with every other metric of ours.
STATUS_METRIC = metric_names.HEALTH_STATUS
STATUS_UNIT = metric_names.HEALTH_STATUS_UNIT
DURATION_METRIC = metric_names.HEALTH_CHECK_DURATION
CHECK_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_NAME
REQUIRED_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_REQUIRED
STATUS_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_STATUS
DURATION_BUCKETS = metric_names.HEALTH_CHECK_DURATION_BUCKETS


# --- metrics -------------------------------------------------------------------------------


class _Instruments:
    """The health metrics of one meter provider, fed by every checker that uses it."""

    def __init__(self, provider: MeterProvider | None) -> None:
        meter = (
            metrics_api.get_meter("chatai_otel.health", distro_version())
            if provider is None
            else provider.get_meter("chatai_otel.health", distro_version())
        )
        # Strong references: a checker reports its last results for the life of the process,
        # even when the code that ran it kept no reference (a worker's one-off check).
        self.checkers: list[HealthChecker] = []
        meter.create_observable_gauge(
            STATUS_METRIC,
            callbacks=[self._observe_status],
            unit=STATUS_UNIT,
            description="Latest result of each health check: 1 healthy, 0.5 degraded, 0 unhealthy.",
        )
        self._duration = meter.create_histogram(
            DURATION_METRIC,
            unit=metric_names.HEALTH_CHECK_DURATION_UNIT,
            description="Duration of each health check run, timeouts included.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_CPU_UTILIZATION,
            callbacks=[self._observe_system("cpu_percent", {})],
            unit="1",
            description="Host CPU use (0-1) since the previous sample, from the system health check.",
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_MEMORY_UTILIZATION,
            callbacks=[
                self._observe_system(
                    "memory_percent", {metric_names.ATTR_SYSTEM_MEMORY_STATE: "used"}
                )
            ],
            unit="1",
            description="Host memory in use (0-1), from the system health check.",
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_FILESYSTEM_UTILIZATION,
            callbacks=[self._observe_disk],
            unit="1",
            description="Disk space in use (0-1) of the checked mount point.",
        )
        for index, window in enumerate(("1m", "5m", "15m")):
            meter.create_observable_gauge(
                metric_names.SYSTEM_CPU_LOAD_AVERAGE.format(window=window),
                callbacks=[self._observe_load(index)],
                unit="{thread}",
                description=f"Host load average over {window}, from the system health check.",
            )

    def record_duration(self, result: CheckResult) -> None:
        try:
            attributes: dict[str, Any] = {
                CHECK_ATTRIBUTE: result.name,
                STATUS_ATTRIBUTE: result.status.value,
            }
            if result.error_type is not None and result.status is HealthStatus.UNHEALTHY:
                attributes["error.type"] = result.error_type
            self._duration.record(result.duration, attributes)
        except Exception:
            pass

    def _results(self) -> Iterator[CheckResult]:
        for checker in list(self.checkers):
            yield from checker.last_results().values()

    def _readings(self) -> Iterator[Mapping[str, Any]]:
        for checker in list(self.checkers):
            for check in list(checker._checks.values()):
                reading = getattr(check.impl, "last_reading", None)
                if isinstance(check.impl, SystemCheck) and reading is not None:
                    yield reading

    def _observe_status(self, _options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [
                Observation(
                    r.status.value_for_metric,
                    {CHECK_ATTRIBUTE: r.name, REQUIRED_ATTRIBUTE: r.required},
                )
                for r in self._results()
            ]
        except Exception:
            return []

    def _observe_system(
        self, key: str, attributes: Mapping[str, str]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(float(r[key]) / 100.0, attributes) for r in self._readings()]
            except Exception:
                return []

        return observe

    def _observe_disk(self, _options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [
                Observation(
                    float(r["disk_usage_percent"]) / 100.0,
                    {"system.filesystem.mountpoint": r["disk_path"]},
                )
                for r in self._readings()
            ]
        except Exception:
            return []

    def _observe_load(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [
                    Observation(float(r["load_average"][index]))
                    for r in self._readings()
                    if r.get("load_average")
                ]
            except Exception:
                return []

        return observe


_instruments_lock = threading.Lock()
_global_instruments: _Instruments | None = None
_provider_instruments: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def instruments_for(provider: MeterProvider | None) -> _Instruments:
    """One set of instruments per meter provider (the global one when None), shared by checkers.

    Registering the same observable gauge twice on one meter keeps only the
    first callback, so all checkers of a provider report through one callback.
    """
    global _global_instruments
    with _instruments_lock:
        if provider is None:
            if _global_instruments is None:
                _global_instruments = _Instruments(None)
            return _global_instruments
        instruments = _provider_instruments.get(provider)
        if instruments is None:
            instruments = _Instruments(provider)
            _provider_instruments[provider] = instruments
        return instruments
