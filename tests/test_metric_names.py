"""Every metric name in the alert rules and the Grafana dashboard is one chatai-otel really exports.

The names are not taken from a list: the example backend of docker-compose.yml runs for real
(``opentelemetry-instrument uvicorn chatai.main:app`` from examples/chatai) with its worker on a
Redis list, the compose traffic (the demo's scripted session) drives them once, and
tests/apps/metrics_tour.py drives events, errors, @track, AI responses, health checks and the
SDK's queues through the public API, all exporting to a real OTLP receiver. What arrives is
translated with ``support.collector.prometheus_name`` (the collector's prometheus exporter rules)
and compared with what the PromQL uses, names and labels.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from chatai_otel import metric_names
from chatai_otel.testing.receiver import OTLPReceiver
from conftest import APPS, AppProcess, bin_path, free_port, telemetry_env
from support.collector import (
    ROOT,
    alert_rules,
    dashboard_queries,
    documented_promql,
    grafana_to_promql,
    prometheus_label,
    prometheus_name,
    prometheus_series_names,
    promql_label_names,
    promql_metric_names,
)

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

EXAMPLE = ROOT / "examples" / "chatai"

# Series that Prometheus holds but chatai-otel does not export: where each comes from.
NOT_FROM_THE_PACKAGE = {
    "up": "Prometheus itself: one per scrape target",
    "ALERTS": "Prometheus itself: firing alerts",
    "target_info": "the collector's prometheus exporter, from each resource",
    "system_filesystem_utilization_ratio": "the collector's hostmetrics receiver",
    "system_memory_utilization_ratio": "the collector's hostmetrics receiver",
    "otelcol_exporter_send_failed_spans_total": "the collector's own telemetry (:8888)",
    "otelcol_exporter_send_failed_metric_points_total": "the collector's own telemetry (:8888)",
    "otelcol_exporter_send_failed_log_records_total": "the collector's own telemetry (:8888)",
    "otelcol_receiver_refused_spans_total": "the collector's own telemetry (:8888)",
    "otelcol_receiver_refused_metric_points_total": "the collector's own telemetry (:8888)",
    "otelcol_receiver_refused_log_records_total": "the collector's own telemetry (:8888)",
    "otelcol_exporter_queue_size": "the collector's own telemetry (:8888)",
    "otelcol_exporter_queue_capacity": "the collector's own telemetry (:8888)",
    **{
        f"traces_span_metrics_{series}": "the collector's spanmetrics connector, from spans"
        for series in (
            "calls_total",
            *(f"duration_milliseconds_{s}" for s in ("bucket", "sum", "count")),
        )
    },
}

# Counters a healthy run never adds to (so never exports): their names come from the package's
# constants through the same translation, not from a hand-written string.
ONLY_ON_FAILURE = {
    prometheus_name(
        metric_names.STORE_WRITE_FAILURES, metric_names.STORE_WRITE_FAILURES_UNIT, "sum", True
    ),
    prometheus_name(
        metric_names.STORE_RECORDS_DROPPED, metric_names.STORE_RECORDS_DROPPED_UNIT, "sum", True
    ),
}

# Names whose emitting module has not landed on main yet: metric -> tour part that emits it.
# Strict: the test fails when a listed part runs (then its names must come from the run, and
# the entry must go), and when a part that runs does not produce its names.
PENDING: dict[str, str] = {}

# Labels Prometheus or the exporter add to every series, besides the metric's own attributes.
ALWAYS_LABELS = {"job", "instance", "le", "otel_scope_name", "otel_scope_version"}
# Metrics with a second source outside the package (the collector's hostmetrics receiver),
# and the labels that source puts on them.
OTHER_SOURCE_LABELS = {
    "system_filesystem_utilization_ratio": {"device", "mode", "mountpoint", "type"},
    "system_memory_utilization_ratio": {"state"},
}


@dataclass
class Exported:
    """What arrived: Prometheus series name -> label names, and the tour's report."""

    labels: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    otlp: dict[str, tuple[str, str, bool]] = field(default_factory=dict)
    parts: dict[str, str] = field(default_factory=dict)
    spans: list[Any] = field(default_factory=list)


def _collect(exported: Exported) -> Any:
    def on_request(signal: str, request: Any) -> None:
        if signal != "metrics":
            return
        assert isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data") or ""
                    data = getattr(metric, kind)
                    monotonic = bool(getattr(data, "is_monotonic", False))
                    exported.otlp[metric.name] = (metric.unit, kind, monotonic)
                    names = prometheus_series_names(metric.name, metric.unit, kind, monotonic)
                    for point in data.data_points:
                        keys = {prometheus_label(kv.key) for kv in point.attributes}
                        for name in names:
                            exported.labels[name] |= keys

    return on_request


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    result = Exported()
    tmp = tmp_path_factory.mktemp("example-run")
    with OTLPReceiver(on_request=_collect(result)) as receiver:
        # 1. the compose backend and worker: the Dockerfile's command and the worker's, on
        # examples/chatai with SQLite and a Redis queue of this run's own
        port = free_port()
        run = uuid.uuid4().hex[:8]
        app_env = {
            "PYTHONPATH": str(EXAMPLE),
            "DATABASE_URL": f"sqlite:///{tmp / 'chatai.db'}",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CHATAI_QUEUE": f"test:metric-names:{run}:jobs",
            "CHATAI_RATE_LIMIT_PREFIX": f"test:metric-names:{run}:rl",
            # the durable store, as in compose: its metrics are what the README's queries read
            "CHATAI_OTEL_STORE_URL": f"sqlite:///{tmp / 'events.db'}",
            "CHATAI_OTEL_STORE_CREATE_TABLES": "true",
        }
        backend = AppProcess(
            [
                bin_path("opentelemetry-instrument"),
                bin_path("uvicorn"),
                "chatai.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            telemetry_env(receiver, OTEL_SERVICE_NAME="chatai-backend", **app_env),
            port,
            tmp,
        )
        worker = None
        try:
            backend.wait_ready("/health/live")
            worker = AppProcess(
                [sys.executable, "-m", "chatai.worker"],
                telemetry_env(receiver, OTEL_SERVICE_NAME="chatai-worker", **app_env),
                None,
                tmp,
            )
            # 2. the compose traffic: one run of the scripted session
            traffic = subprocess.run(
                [sys.executable, "-m", "chatai.workload", "--url", backend.url],
                env=telemetry_env(None, **app_env),
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert traffic.returncode == 0, traffic.stdout[-3000:] + traffic.stderr[-3000:]
            assert httpx.get(f"{backend.url}/no-such-route").status_code == 404
            # a browser's (empty) export through the backend's tunnel: its request counter
            tunnel = httpx.post(
                f"{backend.url}/otlp/v1/traces",
                content=b"",
                headers={"content-type": "application/x-protobuf"},
            )
            assert tunnel.status_code == 200, tunnel.text
            # 3. the tour of the public API; tiny SDK queues so that drops happen and are counted
            tour = subprocess.run(
                [sys.executable, str(APPS / "metrics_tour.py")],
                env=telemetry_env(
                    receiver,
                    OTEL_SERVICE_NAME="chatai-tour",
                    OTEL_BSP_MAX_QUEUE_SIZE="4",
                    OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2",
                    OTEL_BLRP_MAX_QUEUE_SIZE="4",
                    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="2",
                ),
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert tour.returncode == 0, tour.stdout[-2000:] + tour.stderr[-3000:]
            for line in tour.stdout.splitlines():
                if line.startswith("TOUR ") and line != "TOUR-DONE":
                    _, name, status, *_ = [*line.split(" ", 3), ""]
                    result.parts[name] = status
            assert "TOUR-DONE" in tour.stdout, tour.stdout
            receiver.wait_for(
                receiver.metrics,
                predicate=lambda p: (
                    p.name.startswith("http.server")
                    and p.resource.get("service.name") == "chatai-backend"
                ),
                timeout=20,
            )
        finally:
            for process in (worker, backend):
                if process is None:
                    continue
                process.signal()
                try:
                    process.wait(15)
                finally:
                    process.stop()
        time.sleep(0.3)
        result.spans = receiver.spans()
    yield result


def used_promql() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule, Prometheus query of the dashboard and README query."""
    queries = [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    queries += [
        (f"dashboard {name}", grafana_to_promql(expr))
        for name, source, expr in dashboard_queries()
        if source == "prometheus"
    ]
    queries += documented_promql()
    return queries


def test_the_translation_follows_the_collector_rules() -> None:
    # examples of the compatibility specification and of the collector's translator
    assert prometheus_name("http.server.request.duration", "s", "histogram") == (
        "http_server_request_duration_seconds"
    )
    assert prometheus_name("requests.count", "1", "sum", monotonic=True) == "requests_count_total"
    assert prometheus_name("memory.usage", "By", "gauge") == "memory_usage_bytes"
    assert prometheus_name("system.memory.utilization", "1", "gauge") == (
        "system_memory_utilization_ratio"
    )
    assert prometheus_name("chatai.business.events", "{event}", "sum", True) == (
        "chatai_business_events_total"
    )
    assert prometheus_name("net.io", "By/s", "gauge") == "net_io_bytes_per_second"
    assert prometheus_name("queue.size", "{item}", "sum", monotonic=False) == "queue_size"
    assert prometheus_name("spend", "USD", "sum", monotonic=True) == "spend_USD_total"
    assert prometheus_name("latency.seconds", "s", "histogram") == "latency_seconds"
    assert prometheus_series_names("x.y", "ms", "histogram") == {
        "x_y_milliseconds_bucket",
        "x_y_milliseconds_sum",
        "x_y_milliseconds_count",
    }
    assert prometheus_label("http.response.status_code") == "http_response_status_code"


def test_the_promql_name_reader_on_known_expressions() -> None:
    expr = (
        'sum by (job) (rate(a_total{x="y", z=~"5.."}[5m])) / ignoring (le) '
        "sum(rate(b_count[5m] offset 15m)) > 0.05 and on (job) histogram_quantile(0.9, c_bucket)"
    )
    assert promql_metric_names(expr) == {"a_total", "b_count", "c_bucket"}
    assert promql_label_names(expr) == {"job", "x", "z", "le"}
    assert promql_metric_names('up{job=~"a|b"} == 0') == {"up"}


def test_every_metric_name_in_rules_and_dashboard_is_exported(exported: Exported) -> None:
    emitted = set(exported.labels)
    missing_parts = {name for name, status in exported.parts.items() if status != "ok"}
    assert set(exported.parts) >= {"web", "events", "ai", "errors", "track", "health", "sdk_queues"}

    problems = []
    for where, expr in used_promql():
        for name in sorted(promql_metric_names(expr)):
            if name in emitted or name in NOT_FROM_THE_PACKAGE or name in ONLY_ON_FAILURE:
                continue
            pending_part = PENDING.get(name)
            if pending_part in missing_parts:
                continue
            problems.append(f"{where}: {name} is not exported (closest: {_closest(name, emitted)})")
    assert not problems, "\n".join(problems) + f"\nexported: {sorted(emitted)}"

    # strict pending list: a part that runs must not keep its names pending
    stale = {name: part for name, part in PENDING.items() if part not in missing_parts}
    assert not stale, f"these parts run now; remove them from PENDING: {stale}"


def test_every_label_in_rules_and_dashboard_exists_on_its_metrics(exported: Exported) -> None:
    problems = []
    for where, expr in used_promql():
        names = promql_metric_names(expr)
        if not names or not names <= set(exported.labels):
            continue  # only expressions over names the run produced
        available = set().union(
            *(exported.labels[name] | OTHER_SOURCE_LABELS.get(name, set()) for name in names)
        )
        available |= ALWAYS_LABELS
        for label in sorted(promql_label_names(expr) - available):
            problems.append(f"{where}: label {label} is on none of {sorted(names)}")
    assert not problems, "\n".join(problems)


def test_the_sdk_counts_what_its_full_queues_drop(exported: Exported) -> None:
    # the dashboard's "telemetry dropped" panel and the ChatAITelemetryDropped alert rely on it
    assert exported.parts["sdk_queues"] == "ok"
    assert "error_type" in exported.labels["otel_sdk_processor_span_processed_total"]


def test_worker_and_backend_traces_join(exported: Exported) -> None:
    """What `docker compose up` shows in Jaeger: the worker's job spans in the request's trace."""
    worker = [
        s
        for s in exported.spans
        if s.kind == 5 and s.resource.get("service.name") == "chatai-worker"
    ]
    assert len(worker) == 2  # the document upload and the handoff request each queue a job
    server = {
        s.trace_id: s
        for s in exported.spans
        if s.kind == 2 and s.resource.get("service.name") == "chatai-backend"
    }
    for span in worker:
        assert span.trace_id in server, "the backend's server span is not in the worker's trace"
    routes = {server[s.trace_id].attributes.get("http.route") for s in worker}
    assert routes == {"/documents", "/dialogs/{dialog_id}/handoff"}


def _closest(name: str, emitted: set[str]) -> str:
    stem = name.split("_")[0]
    close = sorted(e for e in emitted if e.startswith(stem))
    return ", ".join(close[:6]) or "none"
