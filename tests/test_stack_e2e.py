"""The bundled stack for real: otelcol-chatai, Jaeger v2, Prometheus and Alertmanager on loopback.

One stack for the module (tools/stack.py, the same configs as docker-compose.yml, free ports,
1 s scrape and rule intervals), fed by the example backend and worker under
``opentelemetry-instrument`` and by a small app that answers fine, failing or slow on demand.
The collector's Loki exporter points at a real OTLP/HTTP receiver of the test (Loki itself is
not built here). Everything is read back through the real query APIs: Jaeger's api/v3,
Prometheus' /api/v1, the webhook Alertmanager notifies.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tools import binaries, frontend
from tools.stack import Options, Ports, Stack, read_alerts

from chatai_otel.testing.receiver import OTLPReceiver
from conftest import AppProcess, bin_path, cors_preflight, free_port, telemetry_env, wait_until
from support.collector import (
    COLLECTOR,
    alert_rules,
    dashboard_queries,
    grafana_to_promql,
    load_yaml,
    promql_label_names,
    promql_metric_names,
)
from support.example import example_apps, run_workload

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # OTLP span kinds
FAST_RULES = "chatai-alerts-fast.yml"


def fast_rule_file(folder: Path) -> Path:
    """The bundled alert rules again, each named ``<name>Fast`` with ``for: 1s``: the same
    expressions and labels, so the bundled routing applies, without minutes of waiting."""
    groups = []
    for group in load_yaml(COLLECTOR / "prometheus" / "rules" / "chatai-alerts.yml")["groups"]:
        rules = [
            {**rule, "alert": rule["alert"] + "Fast", "for": "1s"}
            for rule in group["rules"]
            if "alert" in rule
        ]
        groups.append({"name": group["name"] + "-fast", "rules": rules})
    path = folder / FAST_RULES
    path.write_text(json.dumps({"groups": groups}))
    return path


@dataclass
class Running:
    stack: Stack
    loki: OTLPReceiver
    backend: AppProcess
    faulty: AppProcess
    healthy: AppProcess
    started_ns: int

    # --- the query APIs ------------------------------------------------------------------

    def prometheus(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.stack.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10
        )
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def series_names(self) -> set[str]:
        answer = httpx.get(f"{self.stack.prometheus_url}/api/v1/label/__name__/values", timeout=10)
        return set(answer.json()["data"])

    def jaeger_trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of one trace as Jaeger's api/v3 returns it, with its service name."""
        answer = httpx.get(f"{self.stack.jaeger_url}/api/v3/traces/{trace_id}", timeout=10)
        if answer.status_code != 200:
            return []
        return _spans_of(answer.json())

    def jaeger_find(self, service: str) -> list[dict[str, Any]]:
        """Spans of the traces Jaeger finds for ``service`` since the stack started."""
        now = time.time_ns()
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(self.started_ns - 60 * 10**9),
            "query.start_time_max": _rfc3339(now + 60 * 10**9),
            "query.num_traces": "1000",
        }
        answer = httpx.get(f"{self.stack.jaeger_url}/api/v3/traces", params=params, timeout=20)
        if answer.status_code != 200:
            return []
        return _spans_of(answer.json())


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + "Z"


def _spans_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    spans = []
    for resource_spans in document.get("result", {}).get("resourceSpans", []):
        resource = {
            a["key"]: next(iter(a["value"].values()))
            for a in resource_spans.get("resource", {}).get("attributes", [])
        }
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                span["service"] = resource.get("service.name")
                span["attrs"] = {
                    a["key"]: next(iter(a["value"].values()), None)
                    for a in span.get("attributes", [])
                }
                spans.append(span)
    return spans


def _app(args: list[str], env: dict[str, str], port: int | None, tmp: Path) -> AppProcess:
    return AppProcess(args, env, port, tmp)


BROWSER_STEPS = [
    {"action": "goto"},
    {"action": "login", "email": "stack-browser@example.com", "password": "browser-pass-1"},
    {"action": "openDialog"},
    {"action": "send", "text": "hello from the browser"},
    {"action": "throw", "message": "an error in the page"},
    {"action": "flush"},
]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("stack")
    started_ns = time.time_ns()
    with OTLPReceiver() as loki:
        options = Options(
            scrape_interval="1s",
            evaluation_interval="1s",
            spanmetrics_flush_interval="1s",
            extra_rule_files=[fast_rule_file(tmp)],
            loki_endpoint=f"http://127.0.0.1:{loki.http_port}",
        )
        stack = Stack(Ports.free(), tmp / "stack", options)
        processes: list[AppProcess] = []
        stack_context = contextlib.ExitStack()
        try:
            stack.start(timeout=90)
            page_port = free_port()
            env = {
                **telemetry_env(None),
                "OTEL_EXPORTER_OTLP_ENDPOINT": stack.otlp_grpc_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "CHATAI_FRONTEND_ORIGINS": f"http://127.0.0.1:{page_port}",
                "CHATAI_SIGNUP_CREDIT": "1",
            }
            backend = stack_context.enter_context(example_apps(tmp, env, env))
            page = stack_context.enter_context(
                frontend.FrontendServer(frontend.build(), backend.url, port=page_port)
            )
            apps: dict[str, AppProcess] = {}
            for name in ("faulty", "healthy"):
                app_port = free_port()
                apps[name] = _app(
                    [bin_path("opentelemetry-instrument"), bin_path("uvicorn"), "alerting_app:app",
                     "--port", str(app_port)],
                    {**env, "OTEL_SERVICE_NAME": f"alerting-{name}"}, app_port, tmp,
                )  # fmt: skip
                processes.append(apps[name])
                apps[name].wait_ready("/ok")
            run_workload(backend.url)
            # page loads, a chat, an error in the page; twice, some seconds apart, so that the
            # counters the dashboard rates have grown after their first sample
            frontend.drive(page.url, BROWSER_STEPS)
            time.sleep(4)
            frontend.drive(page.url, BROWSER_STEPS)
            yield Running(stack, loki, backend, apps["faulty"], apps["healthy"], started_ns)
        finally:
            for process in processes[::-1]:
                process.signal()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    pass
                process.stop()
            stack_context.close()
            stack.stop()


# --- the distribution ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", ["otel-collector.yaml", "agent-scaleout.yaml", "gateway.yaml", "replay.yaml"]
)
def test_otelcol_chatai_validates_every_collector_config(config: str) -> None:
    done = subprocess.run(
        [str(binaries.build_otelcol()), "validate", "--config", str(COLLECTOR / config)],
        env={**os.environ, "OTELCOL_HOST_ROOT": "/"},  # compose mounts the host at /hostfs
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _types_used() -> set[str]:
    used = set()
    for config in ("otel-collector.yaml", "agent-scaleout.yaml", "gateway.yaml", "replay.yaml"):
        document = load_yaml(COLLECTOR / config)
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
            used.update(f"{kind}:{name.split('/')[0]}" for name in document.get(kind) or {})
    return used


def test_the_distribution_holds_exactly_the_components_the_configs_use() -> None:
    done = subprocess.run(
        [str(binaries.build_otelcol()), "components"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    listed = yaml.safe_load(done.stdout)
    built = {
        f"{kind}:{component['name']}".replace("_", "")
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
        for component in listed.get(kind) or []
    }
    used = {name.replace("_", "") for name in _types_used()}
    assert built == used


def test_jaeger_runs_the_release_compose_pins(running: Running) -> None:
    compose = load_yaml(COLLECTOR.parent / "docker-compose.yml")
    image = compose["services"]["jaeger"]["image"]
    assert image == f"jaegertracing/jaeger:{binaries.JAEGER_RELEASE.lstrip('v')}"
    done = subprocess.run(
        [str(binaries.build_jaeger()), "version"], capture_output=True, text=True, timeout=30
    )
    assert binaries.JAEGER_RELEASE in done.stdout + done.stderr
    assert running.stack.readiness()["jaeger"]


# --- traces: app -> collector -> Jaeger --------------------------------------------------------


def test_the_upload_to_worker_trace_is_whole_in_jaeger(running: Running) -> None:
    def consumer_trace() -> list[dict[str, Any]] | None:
        worker = running.jaeger_find("chatai-worker")
        consumers = [s for s in worker if s.get("kind") == CONSUMER]
        for consumer in consumers:
            spans = running.jaeger_trace(consumer["traceId"])
            uploads = [s for s in spans if s["attrs"].get("http.route") == "/documents"]
            if uploads and {"chatai-backend", "chatai-worker"} <= {s["service"] for s in spans}:
                return spans
        return None

    spans = wait_until(consumer_trace, timeout=40)
    by_id = {s["spanId"]: s for s in spans}
    consumer = next(s for s in spans if s.get("kind") == CONSUMER)
    producer = by_id[consumer["parentSpanId"]]
    assert producer["kind"] == PRODUCER and producer["service"] == "chatai-backend"
    server = by_id[producer["parentSpanId"]]
    assert server["kind"] == SERVER and server["attrs"].get("http.route") == "/documents"
    assert not server.get("parentSpanId")  # the root: nothing of the trace is missing above
    for span in spans:  # every parent is in the trace
        assert not span.get("parentSpanId") or span["parentSpanId"] in by_id, span["name"]


def test_the_collector_scrubs_secrets_that_an_app_without_chatai_otel_sends(
    running: Running,
) -> None:
    """A plain OpenTelemetry SDK app (no chatai-otel scrubber in the way) sets secrets on a
    span; the collector's attributes/scrub and transform/scrub processors remove them."""
    provider = TracerProvider(resource=Resource({"service.name": "plain-sdk-app"}))
    exporter = OTLPSpanExporter(endpoint=running.stack.otlp_grpc_endpoint, insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    secret = f"S{uuid.uuid4().hex}"
    with provider.get_tracer("plain").start_as_current_span("plain.secrets") as span:
        span.set_attribute("http.request.header.authorization", f"Bearer {secret}")
        span.set_attribute("password", secret)
        span.set_attribute("db.password", secret)
        span.set_attribute("note", f"calling with Bearer {secret}x")
        span.set_attribute("url.full", f"https://api.example.com/x?access_token={secret}&a=1")
        span.set_attribute("kept", "visible")
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    (stored,) = wait_until(lambda: running.jaeger_trace(trace_id), timeout=30)
    assert secret not in json.dumps(stored)
    attrs = stored["attrs"]
    assert "password" not in attrs and "db.password" not in attrs
    assert "http.request.header.authorization" not in attrs
    assert attrs["note"] == "calling with Bearer [REDACTED]"
    assert attrs["url.full"] == "https://api.example.com/x?access_token=[REDACTED]&a=1"
    assert attrs["kept"] == "visible"


def test_spanmetrics_series_reach_prometheus(running: Running) -> None:
    series = wait_until(
        lambda: running.prometheus('traces_span_metrics_calls_total{service_name="chatai-backend"}')
    )
    assert {s["metric"].get("span_kind") for s in series} >= {"SPAN_KIND_SERVER"}
    assert running.prometheus("traces_span_metrics_duration_milliseconds_bucket")


def test_logs_reach_the_loki_exporter(running: Running) -> None:
    logs = running.loki.wait_for_logs(
        1, lambda r: r.resource.get("service.name") == "chatai-backend", timeout=30
    )
    assert logs


# --- metrics: the names the rules and the dashboard use -----------------------------------------

# Series (or, for the SDK's processor counters, their error_type label) that exist only once
# something fails: an exporter that cannot send, an app whose export queue overflows. test_the_collector_alerts_use_otelcol_names_the_collector_exports
# and test_a_collector_restart_under_load_fails_no_request_and_counts_what_it_drops create
# those conditions and find these names; a healthy run has none of them.
NOT_EXPORTED_IN_A_HEALTHY_RUN = {
    "otelcol_exporter_send_failed_spans_total",
    "otelcol_exporter_send_failed_metric_points_total",
    "otelcol_exporter_send_failed_log_records_total",
    "otel_sdk_processor_span_processed_total",
    "otel_sdk_processor_log_processed_total",
}


def test_every_metric_and_label_of_the_rules_and_the_dashboard_is_in_the_real_scrape(
    running: Running,
) -> None:
    expressions = [rule["expr"] for rule in alert_rules()]
    expressions += [
        grafana_to_promql(expr)
        for _file, source, expr in dashboard_queries()
        if source == "prometheus"
    ]
    # ALERTS is Prometheus' own series of pending and firing alerts
    wanted = set().union(*(promql_metric_names(expr) for expr in expressions)) - {"ALERTS"}
    wanted -= NOT_EXPORTED_IN_A_HEALTHY_RUN

    def missing() -> set[str]:
        return wanted - running.series_names()

    try:
        wait_until(lambda: not missing(), timeout=45)
    except AssertionError:
        assert missing() == set()
    for expr in expressions:
        for name in promql_metric_names(expr) - NOT_EXPORTED_IN_A_HEALTHY_RUN:
            labels = promql_label_names(expr) - {"job", "instance", "le", "__name__"}
            if not labels:
                continue
            present = set().union(
                *(s["metric"].keys() for s in running.prometheus(f"{{__name__={name!r}}}"))
            )
            used_here = {label for label in labels if label in present}
            assert used_here or not present, (name, labels, present)


def test_the_dashboards_frontend_panels_have_data_from_a_real_browser(running: Running) -> None:
    """Page loads, the page's error and the latency share, from Chromium through the backend's
    tunnel, the collector's spanmetrics and Prometheus, with the dashboard's own queries."""
    dashboard = json.loads(
        (COLLECTOR / "grafana" / "dashboards" / "chatai-overview.json").read_text()
    )
    panels = {p["title"]: p for p in dashboard["panels"] if p["id"] in (20, 21, 22, 23)}
    assert len(panels) == 4

    def value(title: str, ref: str = "A") -> float | None:
        target = next(t for t in panels[title]["targets"] if t["refId"] == ref)
        expr = grafana_to_promql(target["expr"]).replace("[1m]", "[5m]")
        result = running.prometheus(expr)
        return float(result[0]["value"][1]) if result else None

    wait_until(lambda: (v := value("Page loads/s")) is not None and v > 0, timeout=45)
    wait_until(lambda: (v := value("Frontend errors/s")) is not None and v > 0, timeout=45)
    assert (value("Page load p95") or 0) > 0
    share = value("Frontend's share of request latency")
    assert share is not None and 0 <= share <= 1
    accepted = running.prometheus(
        'chatai_browser_tunnel_requests_total{chatai_tunnel_outcome="accepted"}'
    )
    assert accepted and {s["metric"]["job"] for s in accepted} == {"chatai-backend"}


def test_the_collector_accepts_browser_posts_from_the_frontend_origin_only(
    running: Running,
) -> None:
    """The documented alternative to the tunnel: the OTLP/HTTP receiver's CORS block."""
    url = f"http://127.0.0.1:{running.stack.ports.otlp_http}/v1/traces"

    allowed = cors_preflight(url, "http://localhost:3001", "content-type,traceparent")
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:3001"
    refused = cors_preflight(url, "http://evil.example", "content-type,traceparent")
    assert "access-control-allow-origin" not in refused.headers


def _collector_telemetry_names(config: str, env: dict[str, str], tmp: Path) -> set[str]:
    """Run one collector whose exporters all fail (closed ports), send it each signal over
    OTLP, and return the metric names of its own telemetry once it has tried to export."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    ports = Ports.free()
    closed = f"127.0.0.1:{free_port()}"
    log = (tmp / f"{config}.log").open("wb")
    process = subprocess.Popen(
        [str(binaries.build_otelcol()), "--config", str(COLLECTOR / config)],
        env={**os.environ, "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports.otlp_grpc}",
             "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports.otlp_http}",
             "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{ports.collector_health}",
             "OTELCOL_ZPAGES_ENDPOINT": f"127.0.0.1:{ports.collector_zpages}",
             "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports.collector_metrics}",
             "OTELCOL_TELEMETRY_PORT": str(ports.collector_telemetry),
             "OTELCOL_HOST_ROOT": "/", "JAEGER_OTLP_ENDPOINT": closed,
             "LOKI_OTLP_ENDPOINT": f"http://{closed}", "OTELCOL_RETRY_ENABLED": "false",
             **env},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports.otlp_grpc}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, (tmp / f"{config}.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{ports.collector_health}/").is_success
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=30)
        tracer = TracerProvider(resource=Resource({"service.name": "failing-exports"}))
        tracer.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
        )
        with tracer.get_tracer("t").start_as_current_span("s"):
            pass
        logs = LoggerProvider(resource=Resource({"service.name": "failing-exports"}))
        logs.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
        )
        logs.get_logger("t").emit(body="hello")
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=200
        )
        meters = MeterProvider([reader], resource=Resource({"service.name": "failing-exports"}))
        meters.get_meter("t").create_counter("failing.count").add(1)
        url = f"http://127.0.0.1:{ports.collector_telemetry}/metrics"

        def names() -> set[str]:
            text = httpx.get(url, timeout=5).text
            return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                    if line and not line.startswith("#")}  # fmt: skip

        # the batch processor waits up to 2 s, the exporters then fail and retry
        wait_until(lambda: any("send_failed" in name for name in names()), timeout=40)
        time.sleep(2)
        meters.shutdown()
        tracer.shutdown()
        logs.shutdown()
        return names()
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def test_the_collector_alerts_use_otelcol_names_the_collector_exports(tmp_path: Path) -> None:
    """The four collector alerts read otelcol_* series; each name must be one the collector
    really exports. Failure counters only exist once something failed, so the collectors here
    export to closed ports: the single-node one (spans to Jaeger, logs to Loki) and the agent
    (metrics by remote write)."""
    collector_rules = [r for r in alert_rules() if r["alert"].startswith("OTelCollector")]
    assert len(collector_rules) == 4
    closed = f"http://127.0.0.1:{free_port()}/api/v1/push"
    exported = _collector_telemetry_names("otel-collector.yaml", {}, tmp_path)
    exported |= _collector_telemetry_names(
        "agent-scaleout.yaml",
        {"REMOTE_WRITE_URL": closed, "OTEL_GATEWAY_DNS_NAME": "127.0.0.1"},
        tmp_path,
    )
    for rule in collector_rules:
        for name in promql_metric_names(rule["expr"]) - {"up"}:
            assert name in exported, (
                rule["alert"],
                name,
                sorted(n for n in exported if "otelcol_" in n),
            )


# --- alerts ------------------------------------------------------------------------------------


def _drive_faults(running: Running) -> None:
    """Make the faulty service break the HTTP and critical-error rules: its first critical
    error, then a burst of 5xx answers that each took 6 s (a dependency timing out).

    One 5xx answer comes first and is waited for in Prometheus: a counter's first sample is
    only its baseline (a new series' value is not an increase), as in any real service."""
    app = running.faulty
    with httpx.Client(base_url=app.url, timeout=30) as client:
        client.get("/critical")
        client.get("/fail")
    five_xx = (
        'http_server_request_duration_seconds_count{job="alerting-faulty",'
        'http_response_status_code="503"}'
    )
    wait_until(lambda: running.prometheus(five_xx), timeout=30)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{app.url}/fail?after=6", timeout=30),
                                range(20)))  # fmt: skip
    assert {a.status_code for a in answers} == {503}


def test_alert_expressions_find_the_faulty_service_and_not_the_healthy_one(
    running: Running,
) -> None:
    _drive_faults(running)
    with httpx.Client(base_url=running.healthy.url, timeout=30) as client:
        for _ in range(40):
            client.get("/ok")
    driven = ("ChatAIHighErrorRate", "ChatAISlowResponses", "ChatAICriticalError")
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    for name in driven:
        expr = rules[name]
        found = wait_until(lambda expr=expr: running.prometheus(expr), timeout=45)
        jobs = {s["metric"].get("job") for s in found}
        assert "alerting-faulty" in jobs, (name, found)
        assert "alerting-healthy" not in jobs, (name, found)


def test_a_firing_alert_reaches_the_webhook_through_alertmanager(running: Running) -> None:
    with httpx.Client(base_url=running.faulty.url, timeout=30) as client:
        client.get("/critical")

    def notified() -> list[dict[str, Any]]:
        return [
            alert
            for note in read_alerts(running.stack.alerts_file)
            for alert in note["body"].get("alerts", [])
            if alert["labels"].get("alertname") == "ChatAICriticalErrorFast"
            and alert["labels"].get("job") == "alerting-faulty"
        ]

    alerts = wait_until(notified, timeout=60)
    assert alerts[0]["labels"]["severity"] == "critical"
    assert alerts[0]["labels"]["error_type"] == "ConnectionError"
    notes = [n for n in read_alerts(running.stack.alerts_file)
             if any(a["labels"].get("alertname") == "ChatAICriticalErrorFast"
                    and a["labels"].get("job") == "alerting-faulty"
                    for a in n["body"].get("alerts", []))]  # fmt: skip
    assert notes[0]["path"] == "/chatai/alerts?priority=critical"  # the on-call route


# --- exemplars: from a latency bucket to its trace ------------------------------------------------


def test_latency_exemplars_lead_to_traces_jaeger_returns(running: Running) -> None:
    """Requests keep coming while we look, as behind a real latency panel: an exemplar is on
    a histogram point only for the interval its request was measured in."""
    app = running.healthy
    query = 'http_server_request_duration_seconds_bucket{job="alerting-healthy"}'

    def exemplars() -> list[dict[str, Any]]:
        for _ in range(5):
            httpx.get(f"{app.url}/ok", timeout=10)
        answer = httpx.get(
            f"{running.stack.prometheus_url}/api/v1/query_exemplars",
            params={"query": query, "start": str(running.started_ns / 1e9 - 60),
                    "end": str(time.time() + 60)},
            timeout=10,
        )  # fmt: skip
        return [e for series in answer.json()["data"] for e in series["exemplars"]]

    found = wait_until(exemplars, timeout=45, every=0.2)
    trace_ids = {e["labels"]["trace_id"] for e in found if "trace_id" in e["labels"]}
    assert trace_ids
    returned = [t for t in list(trace_ids)[:5] if wait_until(lambda t=t: running.jaeger_trace(t))]
    assert returned


# --- replay -------------------------------------------------------------------------------------


def test_replay_yaml_puts_the_demos_traces_into_jaeger(running: Running, tmp_path: Path) -> None:
    output = tmp_path / "telemetry"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # no collector: files
    done = subprocess.run(
        [bin_path("chatai-otel"), "demo", "--output", str(output), "--no-redis"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trace_ids = set()
    for line in (output / "traces.jsonl").read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                trace_ids.update(s["traceId"] for s in scope_spans["spans"])
    replay = subprocess.Popen(
        [str(binaries.build_otelcol()), "--config", str(COLLECTOR / "replay.yaml")],
        env={**os.environ, "REPLAY_FILES": str(output / "*.jsonl"),
             "REPLAY_TARGET": f"127.0.0.1:{running.stack.ports.otlp_grpc}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        sample = sorted(trace_ids)[:10]
        wait_until(lambda: all(running.jaeger_trace(t) for t in sample), timeout=60)
    finally:
        replay.send_signal(signal.SIGTERM)
        replay.wait(20)


# --- the collector killed and restarted under load -----------------------------------------------


def _wrk(url: str, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_collector_restart_under_load_fails_no_request_and_counts_what_it_drops(
    running: Running,
) -> None:
    """SIGKILL the collector while wrk drives an instrumented app, start it again 6 s later:
    no request fails or waits on it, the app's spans reach Jaeger again within 10 s of the
    restart, and what the app could not deliver meanwhile is counted in its own metrics."""
    app, stack = running.healthy, running.stack
    job = 'job="alerting-healthy"'
    lost = (
        f'sum(otel_sdk_processor_span_processed_total{{{job}, error_type!=""}})'
        f' or sum(otel_sdk_processor_log_processed_total{{{job}, error_type!=""}})'
    )
    assert running.prometheus(lost) == []  # nothing lost before the collector goes away
    load = _wrk(f"{app.url}/ok", 22)
    time.sleep(4)
    stack.stop_collector(signal.SIGKILL)
    time.sleep(6)
    stack.start_collector()
    wait_until(lambda: stack.readiness()["otelcol"], timeout=30, every=0.1)
    restarted = time.monotonic()
    markers: list[str] = []

    def a_marker_arrived() -> bool:
        """Send one more traced request, then look for any sent since the restart: a span
        made while the app's queue is still full of the backlog is dropped (and counted)."""
        trace_id = uuid.uuid4().hex
        answer = httpx.get(
            f"{app.url}/ok", headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"}, timeout=10
        )
        assert answer.status_code == 200
        markers.append(trace_id)
        return any(running.jaeger_trace(t) for t in markers[-20:])

    wait_until(a_marker_arrived, timeout=30, every=0.3)
    resumed_after = time.monotonic() - restarted
    output, _ = load.communicate(timeout=60)
    assert load.returncode == 0, output
    assert "Non-2xx" not in output and "Socket errors" not in output, output
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    assert requests > 1000, output  # the app kept answering while the collector was gone
    assert resumed_after < 10, f"export resumed {resumed_after:.1f} s after the restart"
    counted = wait_until(lambda: running.prometheus(lost), timeout=30)
    assert float(counted[0]["value"][1]) > 0
    print(
        f"{requests} requests, none failed; export resumed {resumed_after:.1f} s after the "
        f"restart; {float(counted[0]['value'][1]):.0f} spans or records counted lost"
    )
