"""Every private OpenTelemetry name chatai-otel relies on, probed once, in one place.

chatai-otel's fast paths lean on SDK internals that no release promises to keep: the
tracer provider's span limits and processor tuple (cheap spans), the exporters' channel and
send hooks (sending the bytes our encoders wrote), the meter provider's readers and the
reader's collect hook (the request histogram). This module is the only one that names them
(``tests/test_sdk_compat.py`` enforces it). :func:`fast_paths` probes each internal on a
throw-away object the first time it is asked: present and of the expected shape, the fast
path runs; missing, the caller takes the stock SDK path (or, for sending, a plain
gRPC/HTTP client of ours), :func:`report_fallbacks` logs one line that says which and
why, and ``chatai-otel doctor`` shows it.

Names that only newer releases have (public ones too: ``TraceFlags.RANDOM_TRACE_ID``, a
processor's ``meter_provider``, a reader's ``cardinality_limits``) are looked up here as
well, so the rest of the package reads the same on every supported SDK minor.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler
from opentelemetry.trace import TraceFlags

__all__ = [
    "CURRENT_SPAN_KEY",
    "RANDOM_TRACE_ID_FLAG",
    "SDK_EXPORT_LOGGERS",
    "SUPPRESS_INSTRUMENTATION_KEY",
    "BatchLogRecordProcessor",
    "CollectHookedReader",
    "ConsoleLogRecordExporter",
    "FastPath",
    "LogRecordProcessor",
    "LoggerProvider",
    "ReadWriteLogRecord",
    "accepts",
    "clean_attribute_value",
    "exemplar_filter_name",
    "fast_path",
    "fast_paths",
    "is_disabled",
    "meter_provider_resource",
    "meter_readers",
    "metric_cardinality_limits",
    "parent_based_delegates",
    "replace_resource_attributes",
    "report_fallbacks",
    "sdk_exporter_class",
    "set_logger_provider",
    "span_limits",
    "span_processors",
    "trace_ids_are_random",
]

_log = logging.getLogger("chatai_otel")


def _entry_point_bases() -> tuple[type, type]:
    """The bases of our distro and configurator, built when distro.py first asks: importing
    opentelemetry-instrument's machinery (wrapt, the instrumentor base) costs ~0.2 s that
    ``import chatai_otel.setup`` does not need."""
    from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
    from opentelemetry.sdk._configuration import _BaseConfigurator

    class DistroBase(BaseDistro):  # type: ignore[misc]
        """opentelemetry-instrument's distro base, its ``_configure`` hook named
        :meth:`set_defaults`."""

        def set_defaults(self) -> None:
            """Runs before anything is configured."""

        def _configure(self, **kwargs: Any) -> None:
            self.set_defaults()

    class ConfiguratorBase(_BaseConfigurator):
        """opentelemetry-instrument's configurator base, its ``_configure`` hook named
        :meth:`configure_sdk`."""

        def configure_sdk(self) -> None:
            """Runs once, after the distro, before the instrumentors are loaded."""

        def _configure(self, **kwargs: Any) -> None:
            self.configure_sdk()

    return DistroBase, ConfiguratorBase


_bases: tuple[type, type] | None = None


def __getattr__(name: str) -> Any:
    global _bases
    if name in ("DistroBase", "ConfiguratorBase"):
        if _bases is None:
            _bases = _entry_point_bases()
        return _bases[0] if name == "DistroBase" else _bases[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# 0 where the SDK predates W3C Trace Context level 2: its spans do not set the flag either.
RANDOM_TRACE_ID_FLAG: int = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))

# The loggers the SDK's exporters and processors report export failures on.
SDK_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk._logs._internal.export",
)


def _suppress_key() -> Any:
    try:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

        return _SUPPRESS_INSTRUMENTATION_KEY
    except ImportError:  # pragma: no cover - present in every supported release
        from opentelemetry.context import create_key

        return create_key("suppress_instrumentation")


# What instrumentations set in the context to say "do not trace this" (suppress_instrumentation).
SUPPRESS_INSTRUMENTATION_KEY: Any = _suppress_key()


def accepts(function: Callable[..., Any], parameter: str) -> bool:
    """Whether ``function`` takes ``parameter`` (a keyword newer releases added)."""
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def metric_cardinality_limits() -> bool:
    """Whether this SDK bounds a metric's attribute sets (readers take ``cardinality_limits``
    from 1.45 on; before, the SDK keeps every attribute set it sees)."""
    return accepts(PeriodicExportingMetricReader.__init__, "cardinality_limits")


# --- the probes ------------------------------------------------------------------------


@dataclass(frozen=True)
class FastPath:
    """One fast path: on when the internals it needs are there and behave."""

    name: str
    on: bool
    uses: str  # the internals, for doctor
    fallback: str  # what runs when it is off
    reason: str = ""  # why it is off


def _probe_spans() -> str:
    from opentelemetry.attributes import _clean_attribute_value

    provider = TracerProvider()
    limits = provider._span_limits
    if not isinstance(getattr(limits, "max_attribute_length", None), int | type(None)):
        return "TracerProvider._span_limits has no max_attribute_length"
    if not isinstance(provider._active_span_processor._span_processors, tuple):
        return "the active span processor's _span_processors is not a tuple"
    # (values that pass: an invalid or over-long one would log a warning in every process)
    if _clean_attribute_value("x", None) != "x" or list(
        _clean_attribute_value(["a", "b"], None)  # type: ignore[arg-type]
    ) != ["a", "b"]:
        return "_clean_attribute_value(value, limit) no longer returns valid values"
    return ""


def _probe_grpc_send() -> str:
    from opentelemetry.exporter.otlp.proto.grpc import exporter

    mixin = exporter.OTLPExporterMixin
    for name in ("_initialize_channel_and_stub", "_translate_data", "_export"):
        if not callable(getattr(mixin, name, None)):
            return f"OTLPExporterMixin.{name} is missing"
    if list(inspect.signature(mixin._export).parameters)[:2] != ["self", "data"]:
        return "OTLPExporterMixin._export(self, data) changed its signature"
    return ""


def _http_shape() -> str:
    """``client``: 1.45's transport client (``_client.export(bytes)``); ``session``: older
    releases' ``_export(bytes, timeout)`` on a requests session; ``""``: neither."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:4318/v1/traces")
    try:
        client = getattr(exporter, "_client", None)
        if callable(getattr(client, "export", None)) and hasattr(exporter, "_metrics"):
            return "client"
        export = getattr(exporter, "_export", None)
        if callable(export) and list(inspect.signature(export).parameters)[:2] == [
            "serialized_data",
            "timeout_sec",
        ]:
            return "session"
        return ""
    finally:
        try:
            exporter.shutdown()  # type: ignore[no-untyped-call]
        except Exception:  # a release whose shutdown needs what the probe found missing
            pass


def _probe_http_send() -> str:
    if not _http_shape():
        return "OTLPSpanExporter has neither _client.export nor _export(serialized_data, ...)"
    return ""


def _probe_histograms() -> str:
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        if meter_readers(provider) != [reader]:
            return "MeterProvider._measurement_consumer._reader_storages is missing"
        if not isinstance(provider._sdk_config.resource, Resource):
            return "MeterProvider._sdk_config.resource is missing"
        if not isinstance(reader._instrument_class_temporality.get(_Histogram), object):
            return "MetricReader._instrument_class_temporality is missing"
        if not callable(getattr(PeriodicExportingMetricReader, "_set_collect_callback", None)):
            return "MetricReader._set_collect_callback is missing"
        if list(inspect.signature(Exemplar).parameters)[:3] != [
            "filtered_attributes",
            "value",
            "time_unix_nano",
        ]:
            return "Exemplar(filtered_attributes, value, time_unix_nano, ...) changed"
        return ""
    finally:
        provider.shutdown()


_PROBES: tuple[tuple[str, str, str, Callable[[], str]], ...] = (
    (
        "cheap spans",
        "TracerProvider._span_limits, _active_span_processor._span_processors, "
        "attributes._clean_attribute_value",
        "SDK spans for the server span and SQL statements",
        _probe_spans,
    ),
    (
        "encoded gRPC export",
        "OTLPExporterMixin._initialize_channel_and_stub, _export, _channel",
        "chatai-otel's own gRPC client sends the encoded batches",
        _probe_grpc_send,
    ),
    (
        "encoded HTTP export",
        "OTLP HTTP exporter _client.export / _export(serialized_data)",
        "chatai-otel's own HTTP client posts the encoded batches",
        _probe_http_send,
    ),
    (
        "request histogram",
        "MeterProvider._sdk_config, _measurement_consumer, MetricReader._set_collect_callback, "
        "_instrument_class_temporality, metrics._internal (_Histogram, Exemplar)",
        "SDK histograms for http.server.request.duration",
        _probe_histograms,
    ),
)


_probed: dict[str, FastPath] = {}
_probe_lock = threading.Lock()


def fast_path(name: str) -> FastPath:
    """One fast path, probed the first time it is asked for (a probe that raises turns its
    path off). Probing costs: the send paths import their exporter (tens of ms), so a process
    probes only the paths it uses."""
    found = _probed.get(name)
    if found is not None:
        return found
    with _probe_lock:
        found = _probed.get(name)
        if found is None:
            _name, uses, fallback, probe = next(entry for entry in _PROBES if entry[0] == name)
            try:
                reason = probe()
            except Exception as error:  # an internal gone or changed: the probe says which
                reason = f"{type(error).__name__}: {error}"
            found = _probed[name] = FastPath(name, not reason, uses, fallback, reason)
    return found


def fast_paths() -> dict[str, FastPath]:
    """Every fast path, probed (for doctor and the tests)."""
    return {name: fast_path(name) for name, _uses, _fallback, _probe in _PROBES}


def fast_path_on(name: str) -> bool:
    return fast_path(name).on


_reported: set[str] = set()


def report_fallbacks(names: tuple[str, ...]) -> None:
    """One log line per fast path among ``names`` that is off, once per process; and one
    at DEBUG when this SDK cannot bound metric cardinality (doctor says it plainly)."""
    from opentelemetry.sdk.version import __version__

    with _probe_lock:
        first = not _reported
        todo = [name for name in names if name not in _reported]
        _reported.update(todo, ("",))
    if first and not metric_cardinality_limits():
        # (doctor shows it too; a warning on every start of every process of an app pinned
        # to an older SDK would be noise on stdout)
        _log.debug(
            "chatai-otel: opentelemetry-sdk %s keeps every metric attribute set (cardinality "
            "limits need 1.45): CHATAI_OTEL_METRIC_CARDINALITY_LIMIT is not applied",
            __version__,
        )
    for name in todo:
        path = fast_path(name)
        if not path.on:
            _log.warning(
                "chatai-otel: %s off on opentelemetry-sdk %s (%s): %s",
                path.name,
                __version__,
                path.reason,
                path.fallback,
            )


# --- tracing ---------------------------------------------------------------------------


def _clean_attribute() -> Callable[[Any, int | None], Any]:
    try:
        from opentelemetry.attributes import _clean_attribute_value

        return _clean_attribute_value
    except ImportError:  # the cheap spans' probe fails too, so nothing calls this

        def keep_nothing(value: Any, limit: int | None) -> Any:
            return None

        return keep_nothing


# The SDK's own attribute check and truncation, so our spans keep exactly what SDK spans keep.
clean_attribute_value: Callable[[Any, int | None], Any] = _clean_attribute()


def span_limits(provider: TracerProvider) -> Any:
    return provider._span_limits


def span_processors(provider: TracerProvider) -> tuple[Any, ...] | None:
    """The provider's processor tuple (a new tuple whenever one is added), None if unknown."""
    if not fast_path_on("cheap spans"):
        return None
    try:
        processors = provider._active_span_processor._span_processors
    except AttributeError:
        return None
    return processors if isinstance(processors, tuple) else None


def trace_ids_are_random(generator: object) -> bool:
    """Whether the id generator says its trace ids are random (W3C level 2; newer SDKs ask)."""
    asks = getattr(generator, "is_trace_id_random", None)
    return bool(asks()) if callable(asks) else False


def is_disabled(provider: object) -> bool:
    """Whether an SDK provider was built with OTEL_SDK_DISABLED (it hands out no-op objects)."""
    return bool(getattr(provider, "_disabled", False))


def parent_based_delegates(sampler: Sampler) -> tuple[Sampler, ...] | None:
    """A ParentBased sampler's five delegates (root, remote/local parent sampled, not
    sampled), or None for any other sampler."""
    if type(sampler) is not ParentBased:
        return None
    try:
        return (
            sampler._root,
            sampler._remote_parent_sampled,
            sampler._local_parent_sampled,
            sampler._remote_parent_not_sampled,
            sampler._local_parent_not_sampled,
        )
    except AttributeError:
        return None


def _span_key() -> str | None:
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY

        return _SPAN_KEY
    except ImportError:
        return None


# The context key the API stores the active span under (None if this API has another).
CURRENT_SPAN_KEY: str | None = _span_key()


def replace_resource_attributes(resource: Resource, attributes: dict[str, Any]) -> None:
    """Swap the attribute map of a Resource that tracers, meters and loggers already hold."""
    from opentelemetry.attributes import BoundedAttributes

    resource._attributes = BoundedAttributes(attributes=attributes, immutable=True)


# --- export ----------------------------------------------------------------------------


def sdk_exporter_class(protocol: str, signal: str) -> Any:
    """The SDK's OTLP exporter class for one protocol and signal (logs live in private modules)."""
    if protocol == "grpc":
        if signal == "traces":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            return OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        return HttpMetricExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    return HttpLogExporter


def grpc_sending_bytes(base: Any, method: str, response_type: Any, **kwargs: Any) -> Any:
    """``base`` (an SDK gRPC exporter class) sending bytes as they are to ``method``: its
    channel, retries, TLS and headers, with a stub that does not serialize again."""
    from opentelemetry.exporter.otlp.proto.grpc import exporter

    mixin: Any = exporter.OTLPExporterMixin

    class _Batch:
        __slots__ = ("count", "payload")

        def __init__(self, payload: bytes, count: int) -> None:
            self.payload = payload
            self.count = count

    class _RawStub:
        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                method, request_serializer=None, response_deserializer=response_type.FromString
            )

    class GrpcEncodedExporter(base):  # type: ignore[misc]
        # The mixin calls _initialize_channel_and_stub() at start and after UNAVAILABLE.
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _RawStub(self._channel)

        def _translate_data(self, data: Any) -> Any:
            return data.payload

        def _count_data(self, data: Any) -> int:  # releases that count their exports
            return int(data.count)

        def export_encoded(self, payload: bytes, count: int) -> bool:
            result = mixin._export(self, _Batch(payload, count))
            return bool(result.name == "SUCCESS")

    return GrpcEncodedExporter(**kwargs)


def http_sending_bytes(base: Any, **kwargs: Any) -> Any:
    """``base`` (an SDK HTTP/protobuf exporter class) posting bytes through its own client."""
    shape = _http_shape()

    class HttpEncodedExporter(base):  # type: ignore[misc]
        def export_encoded(self, payload: bytes, count: int) -> bool:
            if self._shutdown:
                return False
            if shape == "session":
                return self._export_session(payload)
            with self._metrics.export_operation(count) as result:
                outcome = self._client.export(payload)
                if not outcome.success:
                    result.error = outcome.error
                    return False
            return True

        def _export_session(self, payload: bytes) -> bool:
            import time

            deadline = time.monotonic() + self._timeout
            delay = 1.0
            while True:
                try:
                    response = self._export(payload, max(deadline - time.monotonic(), 0.1))
                    if response.ok:
                        return True
                    retryable = response.status_code in (408, 429, 502, 503, 504)
                except OSError:
                    retryable = True
                except Exception:
                    retryable = True  # requests' ConnectionError and friends
                if not retryable or time.monotonic() + delay > deadline or self._shutdown:
                    return False
                time.sleep(delay)
                delay *= 2

    return HttpEncodedExporter(**kwargs)


# --- metrics ---------------------------------------------------------------------------


def sdk_processor_metric(signal: str, what: str) -> str:
    """The semantic-convention name of a batch processor's self-metric, e.g.
    ``otel.sdk.processor.span.processed`` for ("span", "PROCESSED") (incubating names)."""
    from opentelemetry.semconv._incubating.metrics import otel_metrics

    name: str = getattr(otel_metrics, f"OTEL_SDK_PROCESSOR_{signal.upper()}_{what}")
    return name


def histogram_instrument_class() -> Any:
    """The SDK's synchronous histogram class: the key of a reader's per-kind tables."""
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram

    return _Histogram


def exemplar(value: float, at: int, span_id: int | None, trace_id: int | None) -> Any:
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar

    return Exemplar({}, value, at, span_id, trace_id)


def meter_provider_resource(provider: MeterProvider) -> Resource:
    resource: Resource = provider._sdk_config.resource
    return resource


def exemplar_filter_name(provider: MeterProvider) -> str:
    return type(getattr(provider._sdk_config, "exemplar_filter", None)).__name__


def meter_readers(provider: MeterProvider) -> list[Any]:
    """The readers registered now (add_metric_reader() reaches only the consumer)."""
    storages = getattr(provider._measurement_consumer, "_reader_storages", None)
    return list(storages if storages is not None else provider._metric_readers)


class CollectHookedReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader with a public hook around each collection.

    Subclasses override :meth:`around_collect`; :meth:`renew_export_lock` gives a forked
    child a fresh export lock (the parent's may be held for good there)."""

    def around_collect(self, collect: Callable[..., Any]) -> Callable[..., Any]:
        return collect

    def _set_collect_callback(self, func: Any) -> None:  # type: ignore[misc]
        if func is None:
            super()._set_collect_callback(None)
            return
        super()._set_collect_callback(self.around_collect(func))

    def renew_export_lock(self) -> None:
        self._export_lock = threading.Lock()

    def histogram_temporality(self, default: Any) -> Any:
        return self._instrument_class_temporality.get(histogram_instrument_class(), default)

    def histogram_cardinality_limit(self, default: int) -> int:
        limits = getattr(self, "_instrument_class_cardinality_limit", None)
        if not isinstance(limits, dict):
            return default  # releases without per-reader cardinality limits
        return int(limits.get(histogram_instrument_class(), default))
