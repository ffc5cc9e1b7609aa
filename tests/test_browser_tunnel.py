"""The browser telemetry tunnel: the rewriting on its own, then the example backend's mount
under ``opentelemetry-instrument uvicorn``, forwarding to a real OTLP receiver."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from chatai_otel.export import otlp_json as otlpjson
from chatai_otel.integrations.browser_tunnel import TokenBuckets, rewrite_request, unpack
from chatai_otel.testing.receiver import OTLPReceiver, attributes_of
from conftest import AppProcess, bin_path, cors_preflight, free_port, telemetry_env, wait_until

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chatai"
FRONTEND_ORIGIN = "http://127.0.0.1:3000"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJlLW9mLXRoZS1qd3Q"


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def trace_request(trace_id: bytes, **attributes: str) -> ExportTraceServiceRequest:
    """One browser-like span (a fetch) under a resource that calls itself something else."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [_kv("service.name", "i-am-the-backend"), _kv("browser.brands", "Chromium")]
    )
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id = trace_id, os.urandom(8)
    span.name = "HTTP GET"
    span.kind = Span.SPAN_KIND_CLIENT
    span.start_time_unix_nano, span.end_time_unix_nano = (
        1_700_000_000_000_000_000,
        1_700_000_000_100_000_000,
    )
    span.attributes.extend(_kv(key, value) for key, value in attributes.items())
    return request


# --- the rewriting, in process ---------------------------------------------------------------


def test_rewrite_forces_the_service_name_and_scrubs_every_value_by_key_and_shape() -> None:
    request = trace_request(
        os.urandom(16),
        **{
            "http.url": f"http://127.0.0.1:8000/dialogs?access_token={TOKEN}&page=2",
            "password": "hunter2-hunter2",
            "note": f"Bearer {TOKEN}",
            "page": "/chat",
        },
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    event = span.events.add(name="exception", time_unix_nano=1)
    nested = KeyValueList(values=[_kv("client_secret", "s3cr3t-value"), _kv("ok", "fine")])
    event.attributes.add(key="detail", value=AnyValue(kvlist_value=nested))
    span.status.message = f"failed at https://user:pa55word@example.com/x?sig={TOKEN}"

    rewrite_request("traces", request, "chatai-frontend")

    resource = attributes_of(request.resource_spans[0].resource.attributes)
    assert resource == {"service.name": "chatai-frontend", "browser.brands": "Chromium"}
    attributes = attributes_of(span.attributes)
    assert attributes["password"] == "[REDACTED]"
    assert TOKEN not in attributes["http.url"] and "page=2" in attributes["http.url"]
    assert TOKEN not in attributes["note"]
    assert attributes["page"] == "/chat"
    detail = {kv.key: kv.value.string_value for kv in event.attributes[0].value.kvlist_value.values}
    assert detail == {"client_secret": "[REDACTED]", "ok": "fine"}
    assert "pa55word" not in span.status.message and TOKEN not in span.status.message


def test_rewrite_scrubs_log_bodies_and_log_attributes() -> None:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    record: LogRecord = resource_logs.scope_logs.add().log_records.add()
    record.body.string_value = f"fetch failed: http://api/x?api_key={TOKEN}"
    record.attributes.append(_kv("authorization", f"Bearer {TOKEN}"))

    rewrite_request("logs", request, "chatai-frontend")

    assert TOKEN not in record.body.string_value
    assert attributes_of(record.attributes) == {"authorization": "[REDACTED]"}
    assert attributes_of(resource_logs.resource.attributes) == {"service.name": "chatai-frontend"}


def test_token_buckets_allow_the_burst_then_the_rate_and_forget_the_oldest_clients() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3, max_clients=2)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", now=0.0) == pytest.approx(0.5)
    assert buckets.take("a", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert buckets.take("b", now=0.5) == 0.0  # another client has its own bucket
    buckets.take("c", now=0.5)
    assert "a" not in buckets._buckets and len(buckets._buckets) == 2


def test_unpack_refuses_a_gzip_body_that_unpacks_beyond_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    assert len(bomb) < 2000
    with pytest.raises(OverflowError):
        unpack(bomb, "gzip", 100_000)
    assert unpack(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    with pytest.raises(ValueError):
        unpack(b"not gzip", "gzip", 10)


# --- the example backend's tunnel, for real ----------------------------------------------------


@pytest.fixture
def backend(receiver: OTLPReceiver, tmp_path: Path) -> Iterator[AppProcess]:
    """The example backend (SQLite, in-process jobs) exporting to ``receiver``; tight limits."""
    port = free_port()
    env = telemetry_env(
        receiver,
        PYTHONPATH=str(EXAMPLE),
        OTEL_SERVICE_NAME="chatai-backend",
        DATABASE_URL=f"sqlite:///{tmp_path / 'chatai.db'}",
        CHATAI_FRONTEND_ORIGINS=FRONTEND_ORIGIN,
        CHATAI_OTEL_BROWSER_MAX_BODY="64KiB",
        CHATAI_OTEL_BROWSER_RATE_LIMIT="2",
        CHATAI_OTEL_BROWSER_BURST="5",
    )
    app = AppProcess(
        [bin_path("opentelemetry-instrument"), bin_path("uvicorn"), "chatai.main:app",
         "--port", str(port)],
        env, port, tmp_path,
    )  # fmt: skip
    try:
        app.wait_ready("/health/live")
        yield app
    finally:
        app.stop()


def _post(url: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.post(
        url, content=body, headers={"content-type": content_type, **headers}, timeout=10
    )


def test_browser_spans_reach_the_collector_renamed_and_scrubbed_in_protobuf_and_json(
    backend: AppProcess, receiver: OTLPReceiver
) -> None:
    proto_id, json_id = os.urandom(16), os.urandom(16)
    url = f"{backend.url}/dialogs?token={TOKEN}"
    proto = trace_request(proto_id, **{"http.url": url})
    answer = _post(
        f"{backend.url}/otlp/v1/traces", proto.SerializeToString(), "application/x-protobuf"
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"
    as_json = otlpjson.encode(trace_request(json_id, **{"http.url": url})).encode()
    answer = _post(
        f"{backend.url}/otlp/v1/traces", gzip.compress(as_json), "application/json",
        **{"content-encoding": "gzip"},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.json() == {}

    browser = receiver.wait_for_spans(
        2, lambda span: span.trace_id in (proto_id.hex(), json_id.hex())
    )
    assert len(browser) == 2
    for span in browser:
        assert span.resource["service.name"] == "chatai-frontend"
        assert span.resource["browser.brands"] == "Chromium"
        assert TOKEN not in span.attributes["http.url"]
        assert "/dialogs?token=" in span.attributes["http.url"]
    # the tunnel's own requests are not the backend's telemetry
    assert not [s for s in receiver.spans() if "/otlp" in str(s.attributes.get("url.path", ""))]


def test_the_tunnel_answers_415_413_400_and_429_and_the_backend_keeps_answering(
    backend: AppProcess, receiver: OTLPReceiver
) -> None:
    traces = f"{backend.url}/otlp/v1/traces"
    answers = [
        _post(traces, b"{}", "text/plain").status_code,
        _post(traces, b"x" * (64 * 1024 + 1), "application/x-protobuf").status_code,
        _post(traces, b"\xff\xff\xff", "application/x-protobuf").status_code,
        _post(traces, b'{"resourceSpans": 3}', "application/json").status_code,
    ]
    assert answers == [415, 413, 400, 400]
    flood = [_post(traces, b"", "application/x-protobuf") for _ in range(20)]
    statuses = [r.status_code for r in flood]
    assert 429 in statuses, statuses
    limited = next(r for r in flood if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    for _ in range(10):  # the backend's own routes are not rate limited by the tunnel
        assert httpx.get(backend.url + "/", timeout=5).status_code == 200

    def outcomes() -> dict[str, float]:
        counts: dict[str, float] = {}
        for point in receiver.metrics():
            if point.name == "chatai.browser.tunnel.requests":
                outcome = point.attributes["chatai.tunnel.outcome"]
                counts[outcome] = max(counts.get(outcome, 0), point.value)
        return counts

    counted = wait_until(
        lambda: (c := outcomes()) and c.get("rate_limited", 0) >= statuses.count(429) and c
    )
    assert counted["unsupported_media_type"] == 1 and counted["too_large"] == 1
    assert counted["invalid"] == 2


def test_cors_lets_the_frontend_origin_send_traceparent_and_read_the_request_id(
    backend: AppProcess,
) -> None:
    preflight = cors_preflight(
        f"{backend.url}/dialogs",
        FRONTEND_ORIGIN,
        "authorization,content-type,traceparent,tracestate,x-request-id",
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == FRONTEND_ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    for header in ("traceparent", "tracestate", "x-request-id"):
        assert header in allowed
    tunnel = cors_preflight(f"{backend.url}/otlp/v1/traces", FRONTEND_ORIGIN, "content-type")
    assert tunnel.status_code == 200
    answer = httpx.get(f"{backend.url}/", headers={"origin": FRONTEND_ORIGIN})
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()
    assert answer.headers["x-request-id"]
    refused = cors_preflight(f"{backend.url}/dialogs", "http://evil.example")
    assert "access-control-allow-origin" not in refused.headers


def test_json_body_is_an_otlp_json_document() -> None:
    """The JSON the tests send is what OTLP/JSON exporters send: hex ids, camelCase keys."""
    document = json.loads(otlpjson.encode(trace_request(bytes(range(16)))))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == bytes(range(16)).hex()
