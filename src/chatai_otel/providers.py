"""Providers, exporters and the process lifecycle of the OpenTelemetry SDK.

One :class:`Telemetry` handle owns the TracerProvider, MeterProvider and
LoggerProvider of the process. Three process events need care beyond what the
SDK does by itself:

* **SIGTERM.** uvicorn re-raises SIGTERM after its graceful shutdown, so
  ``atexit`` hooks never run and everything still in the batch queues would be
  lost. We install a SIGTERM handler at configure time; uvicorn saves it,
  restores it before re-raising, and so our handler flushes, then hands the
  signal on to whatever handler was there before us (the default one kills the
  process exactly as it would have).
* **Deadlines.** A dead or slow collector must never hold a shutdown: every
  flush and shutdown runs on helper threads that are abandoned at the deadline.
* **fork.** ``gunicorn --preload`` configures in the master and forks workers.
  The SDK restarts its batch threads in the child; we additionally give each
  child its own ``service.instance.id`` and ``process.pid`` so workers never
  overwrite each other's metric series.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import platform
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from chatai_otel import process_hooks
from chatai_otel._sdk_compat import (
    SDK_EXPORT_LOGGERS,
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LoggerProvider,
    accepts,
    meter_provider_resource,
    metric_cardinality_limits,
    replace_resource_attributes,
    sdk_exporter_class,
    set_logger_provider,
)
from chatai_otel.config import ExporterSettings, Settings, Signal
from chatai_otel.export.histograms import ProducingMetricReader
from chatai_otel.export.logs import LogExportProcessor, grpc_log_exporter, http_log_exporter
from chatai_otel.export.spans import (
    ScrubbingSpanExporter,
    SpanExportProcessor,
    grpc_span_exporter,
    http_span_exporter,
)
from chatai_otel.logs.line_writer import flush_all as flush_log_lines
from chatai_otel.spans import scrub_sdk_span_exceptions

__all__ = ["Telemetry", "build_telemetry", "distro_version", "tune_gc_after_startup"]

_internal_log = logging.getLogger("chatai_otel")
EXPORT_FAILURE_REPORT_INTERVAL = 60.0  # seconds between two reports of failing exports


_gc_tuned = False


def tune_gc_after_startup(young_threshold: int = 7000) -> None:
    """Once the app is loaded: freeze the start-up heap and collect young objects less often.

    Every full collection would otherwise walk the tens of thousands of objects
    that importing FastAPI, SQLAlchemy, the SDK and the app created and that
    live for the whole process; that walk is what shows up as p99 spikes.
    ``gc.freeze()`` moves them to a permanent generation the collector skips. A
    request allocates a few hundred short-lived objects; a young-generation
    threshold of 7000 instead of 700 runs the collector ten times less often.
    ``CHATAI_OTEL_GC_TUNING=false`` leaves the collector alone.
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    if os.environ.get("CHATAI_OTEL_GC_TUNING", "true").strip().lower() in (
        "false",
        "0",
        "no",
        "off",
    ):
        return
    import gc

    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young_threshold, _young), middle, old)


def distro_version() -> str:
    """The installed version of chatai-otel (for the resource and `doctor`)."""
    try:
        from importlib.metadata import version

        return version("chatai-otel")
    except Exception:  # pragma: no cover - only when running from a source tree
        return "0.0.0"


# --- resource --------------------------------------------------------------------------


def build_resource(settings: Settings) -> Resource:
    """Service identity plus host and process facts; never the command line (it may hold secrets)."""
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "telemetry.distro.name": "chatai-otel",
        "telemetry.distro.version": distro_version(),
        "host.name": socket.gethostname(),
        "host.arch": platform.machine().lower() or "unknown",
        "os.type": platform.system().lower() or "unknown",
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    attributes.update(settings.resource_attributes)
    attributes.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment.name": settings.environment,
            "service.instance.id": str(uuid.uuid4()),
        }
    )
    return Resource(attributes)


def _refresh_process_identity(resources: list[Resource]) -> None:
    """After fork: a new ``service.instance.id`` and ``process.pid`` on the shared Resource objects.

    Tracers, meters and loggers hold references to these very objects, so
    replacing their attribute map reaches every signal at once.
    """
    instance_id = str(uuid.uuid4())
    seen: set[int] = set()
    for resource in resources:
        if id(resource) in seen:
            continue
        seen.add(id(resource))
        updated = dict(resource.attributes)
        updated["service.instance.id"] = instance_id
        updated["process.pid"] = os.getpid()
        replace_resource_attributes(resource, updated)


# --- exporters -------------------------------------------------------------------------


def _compression(settings: ExporterSettings, *, grpc: bool) -> Any:
    """Always explicit: given None, the exporters would read (and choke on) the env themselves."""
    if grpc:
        from grpc import Compression

        return {
            "none": Compression.NoCompression,
            "gzip": Compression.Gzip,
            "deflate": Compression.Deflate,
        }[settings.compression]
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

    return {
        "none": HttpCompression.NoCompression,
        "gzip": HttpCompression.Gzip,
        "deflate": HttpCompression.Deflate,
    }[settings.compression]


@functools.cache
def _exporters_take_a_meter_provider() -> bool:
    """Whether this opentelemetry-exporter-otlp counts its own exports (newer releases)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return "meter_provider" in inspect.signature(OTLPSpanExporter.__init__).parameters


def _otlp_exporter(
    signal_name: Signal, settings: ExporterSettings, meter_provider: MeterProvider | None = None
) -> Any:
    """An OTLP exporter for one signal, configured only from our validated settings.

    With ``meter_provider`` the exporter can count its own exports
    (``otel.sdk.exporter.<signal>.exported``) when the SDK's
    ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true`` asks for it; what is lost after the
    retries is counted by our processors in any case (``error.type=export_failed``)."""
    common: dict[str, Any] = {
        "endpoint": settings.endpoint,
        "headers": dict(settings.headers),
        "timeout": settings.timeout,
    }
    if meter_provider is not None and _exporters_take_a_meter_provider():
        common["meter_provider"] = meter_provider
    if settings.protocol == "grpc":
        common["insecure"] = settings.insecure
        common["compression"] = _compression(settings, grpc=True)
        if signal_name == "traces":
            # Spans and logs: the exporters send bytes our encoders wrote (span_export.py and
            # log_export.py explain why).
            return grpc_span_exporter(**common)
        if signal_name == "metrics":
            return sdk_exporter_class("grpc", "metrics")(**common)
        return grpc_log_exporter(**common)

    common["compression"] = _compression(settings, grpc=False)
    if signal_name == "traces":
        return http_span_exporter(**common)
    if signal_name == "metrics":
        return sdk_exporter_class("http", "metrics")(**common)
    return http_log_exporter(**common)


class _ReportOncePerInterval(logging.Filter):
    """Lets one record per (logger, message template) through per interval.

    The SDK's exporters log every failed batch and every retry; with a collector
    down that is a flood. One line per interval says the same.
    """

    def __init__(self, interval: float = EXPORT_FAILURE_REPORT_INTERVAL) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, object], float] = {}
        self._suppressed: dict[tuple[str, object], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.msg} (and {suppressed} similar since the last report)"
        return True


_EXPORT_LOGGERS = SDK_EXPORT_LOGGERS


def _rate_limit_export_errors() -> None:
    shared = _ReportOncePerInterval()
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ReportOncePerInterval) for f in logger.filters):
            logger.addFilter(shared)


# --- providers -------------------------------------------------------------------------


def _sampler(settings: Settings) -> Sampler:
    base: Sampler
    name = settings.sampler
    if name.endswith("always_off"):
        base = ALWAYS_OFF
    elif name.endswith("traceidratio"):
        base = TraceIdRatioBased(settings.sampler_arg)
    else:
        base = ALWAYS_ON
    return ParentBased(base) if name.startswith("parentbased_") else base


def _cardinality_limits(limit: int) -> dict[type, int]:
    # The Python SDK keeps `limit` attribute sets and adds the overflow series on top of
    # them; the metrics SDK spec counts the overflow series within the limit, so leave it room.
    per_stream = max(1, limit - 1)
    return {
        kind: per_stream
        for kind in (
            Counter,
            UpDownCounter,
            Histogram,
            ObservableCounter,
            ObservableUpDownCounter,
            ObservableGauge,
        )
    }


def _reader_limits(limit: int) -> dict[str, Any]:
    """The reader's cardinality limits (SDK releases before 1.43 keep their fixed 2000)."""
    if metric_cardinality_limits():
        return {"cardinality_limits": _cardinality_limits(limit)}
    return {}


def _meter_provider_if_taken(kind: Any, meter_provider: MeterProvider) -> dict[str, Any]:
    """``meter_provider=`` for SDK classes that count themselves (newer releases)."""
    return {"meter_provider": meter_provider} if accepts(kind.__init__, "meter_provider") else {}


@contextmanager
def _processor_self_metrics() -> Iterator[None]:
    """Build batch processors with the SDK's queue metrics on, and nothing else.

    ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` also turns on a counter per
    started span (a cost on the request path); we want only the processor
    metrics: queue size, capacity and ``otel.sdk.processor.*.processed`` with
    ``error.type=queue_full`` for every dropped item. The SDK reads the
    variable when a processor is built, so we set it for exactly that moment.
    """
    name = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
    previous = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@dataclass
class Telemetry:
    """The configured SDK of this process: providers plus a bounded flush and shutdown."""

    settings: Settings
    resource: Resource
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    _shutdown_done: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _shutdown_callbacks: list[Callable[[float], object]] = field(default_factory=list, repr=False)

    @property
    def enabled(self) -> bool:
        """False when OTEL_SDK_DISABLED is set: nothing is exported."""
        return self.tracer_provider is not None

    def add_shutdown_callback(self, callback: Callable[[float], object]) -> None:
        """Run ``callback(seconds_left)`` first at shutdown (e.g. flush the event store)."""
        self._shutdown_callbacks.append(callback)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export everything queued so far; False when the deadline passed first."""
        deadline = self.settings.shutdown_timeout if timeout is None else timeout
        calls: list[Callable[[float], object]] = [
            partial(_flush_provider, provider) for provider in self._providers()
        ]
        flushed = _run_before_deadline(calls, deadline)
        flush_log_lines()
        return flushed

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop all three signals within ``timeout`` seconds; later calls do nothing."""
        with self._lock:
            if self._shutdown_done:
                return True
            self._shutdown_done = True
        deadline = self.settings.shutdown_timeout if timeout is None else timeout
        started = time.monotonic()
        # The callbacks (the event store) first, as they still log and count; with half the
        # deadline at most, so a database that is away cannot starve the span and log export
        # (what the store has not written stays in its journal, replayed at the next start).
        ok = _run_before_deadline(list(self._shutdown_callbacks), deadline * 0.5)
        left = max(0.0, deadline - (time.monotonic() - started))
        # Traces and logs first, in parallel; metrics last so their final collection sees all.
        calls: list[Callable[[float], object]] = []
        if self.tracer_provider is not None:
            calls.append(lambda _left: self.tracer_provider.shutdown())  # type: ignore[union-attr]
        if self.logger_provider is not None:
            calls.append(lambda _left: self.logger_provider.shutdown())  # type: ignore[union-attr]
        ok = _run_before_deadline(calls, left * 0.7) and ok
        left = max(0.0, deadline - (time.monotonic() - started))
        if self.meter_provider is not None:
            meter_provider = self.meter_provider
            ok = (
                _run_before_deadline(
                    [lambda seconds: meter_provider.shutdown(timeout_millis=seconds * 1000)], left
                )
                and ok
            )
        flush_log_lines()  # last: the lines the steps above logged are written too
        return ok

    def _providers(self) -> list[Any]:
        return [
            p
            for p in (self.tracer_provider, self.logger_provider, self.meter_provider)
            if p is not None
        ]


def _flush_provider(provider: Any, seconds_left: float) -> object:
    return provider.force_flush(int(seconds_left * 1000))


def _run_before_deadline(calls: list[Callable[[float], object]], seconds: float) -> bool:
    """Run calls on daemon threads in parallel; give up on any still running at the deadline."""
    if not calls:
        return True
    end = time.monotonic() + max(seconds, 0.0)
    failures: list[BaseException] = []

    def run(call: Callable[[float], object]) -> None:
        try:
            result = call(max(0.0, end - time.monotonic()))
            if result is False:
                failures.append(RuntimeError("returned False"))
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(c,), daemon=True, name="chatai-otel-flush")
        for c in calls
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    finished = not any(t.is_alive() for t in threads)
    if not finished:
        _internal_log.warning(
            "chatai-otel: telemetry flush did not finish within %.1fs; the rest is dropped", seconds
        )
    return finished and not failures


def build_telemetry(settings: Settings) -> Telemetry:
    """Create (but do not install globally) the three providers from settings."""
    resource = build_resource(settings)
    telemetry = Telemetry(settings=settings, resource=resource)
    if settings.sdk_disabled:
        return telemetry
    _rate_limit_export_errors()

    readers: list[MetricReader] = []
    if settings.metrics_exporter != "none":
        metric_exporter = (
            ConsoleMetricExporter()
            if settings.metrics_exporter == "console"
            else _otlp_exporter("metrics", settings.metrics)
        )
        readers.append(
            # the SDK's periodic reader, plus the request-path histogram of fast_metrics.py
            ProducingMetricReader(
                metric_exporter,
                export_interval_millis=settings.metric_export_interval * 1000,
                export_timeout_millis=settings.metric_export_timeout * 1000,
                **_reader_limits(settings.metric_cardinality_limit),
            )
        )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )

    scrub_sdk_span_exceptions()  # every processor, not only our exporter, gets scrubbed text
    tracer_provider = TracerProvider(
        resource=resource, sampler=_sampler(settings), shutdown_on_exit=False
    )
    batch = settings.span_batch
    if settings.traces_exporter == "otlp":
        # One queue for every span of the process: the SDK's spans arrive through on_end,
        # the cheap spans of chatai_otel.export.cheap_spans (server, SQL) submit tuples directly.
        SpanExportProcessor(
            _otlp_exporter("traces", settings.traces, meter_provider),
            schedule_delay=batch.schedule_delay,
            max_queue_size=batch.max_queue_size,
            max_export_batch_size=batch.max_export_batch_size,
            export_timeout=batch.export_timeout,
            meter_provider=meter_provider,
        ).attach(tracer_provider)
    elif settings.traces_exporter == "console":
        with _processor_self_metrics():
            span_processor = BatchSpanProcessor(
                ScrubbingSpanExporter(ConsoleSpanExporter()),
                max_queue_size=batch.max_queue_size,
                schedule_delay_millis=batch.schedule_delay * 1000,
                max_export_batch_size=batch.max_export_batch_size,
                export_timeout_millis=batch.export_timeout * 1000,
                **_meter_provider_if_taken(BatchSpanProcessor, meter_provider),
            )
        tracer_provider.add_span_processor(span_processor)

    logger_provider = LoggerProvider(
        resource=resource,
        shutdown_on_exit=False,
        **_meter_provider_if_taken(LoggerProvider, meter_provider),
    )
    batch = settings.log_batch
    if settings.logs_exporter == "otlp":
        # One queue for every log record of the process: chatai_otel.logs.pipeline submits to it
        # directly, OTel Logs API records arrive through on_emit.
        LogExportProcessor(
            _otlp_exporter("logs", settings.logs, meter_provider),
            schedule_delay=batch.schedule_delay,
            max_queue_size=batch.max_queue_size,
            max_export_batch_size=batch.max_export_batch_size,
            export_timeout=batch.export_timeout,
            meter_provider=meter_provider,
        ).attach(logger_provider)
    elif settings.logs_exporter == "console":
        # Our log lines are on stdout already; this prints OTel Logs API records only.
        with _processor_self_metrics():
            log_processor = BatchLogRecordProcessor(
                ConsoleLogRecordExporter(),
                max_queue_size=batch.max_queue_size,
                schedule_delay_millis=batch.schedule_delay * 1000,
                max_export_batch_size=batch.max_export_batch_size,
                export_timeout_millis=batch.export_timeout * 1000,
                **_meter_provider_if_taken(BatchLogRecordProcessor, meter_provider),
            )
        logger_provider.add_log_record_processor(log_processor)
    telemetry.tracer_provider = tracer_provider
    telemetry.meter_provider = meter_provider
    telemetry.logger_provider = logger_provider
    return telemetry


def install_globally(telemetry: Telemetry) -> None:
    """Make the providers the process-wide ones the OTel API hands out."""
    if telemetry.tracer_provider is not None:
        trace_api.set_tracer_provider(telemetry.tracer_provider)
    if telemetry.meter_provider is not None:
        metrics_api.set_meter_provider(telemetry.meter_provider)
    if telemetry.logger_provider is not None:
        set_logger_provider(telemetry.logger_provider)


# --- process lifecycle -----------------------------------------------------------------


def install_process_hooks(telemetry: Telemetry) -> None:
    """Flush on exit and on SIGTERM; fresh identity after fork."""
    process_hooks.at_exit(telemetry.shutdown)
    # after the SDK's own: newer providers take a fresh Resource in the child first
    process_hooks.on_fork_after_sdk(lambda: _after_fork_in_child(telemetry))
    process_hooks.on_sigterm(telemetry.shutdown)


def _after_fork_in_child(telemetry: Telemetry) -> None:
    try:
        resources = [telemetry.resource]
        if telemetry.tracer_provider is not None:
            resources.append(telemetry.tracer_provider.resource)
        if telemetry.logger_provider is not None:
            resources.append(telemetry.logger_provider.resource)
        if telemetry.meter_provider is not None:
            resources.append(meter_provider_resource(telemetry.meter_provider))
        _refresh_process_identity(resources)
        telemetry._lock = threading.Lock()
    except Exception:
        _internal_log.exception("chatai-otel: could not refresh the resource after fork")
