"""``chatai-otel doctor`` and ``chatai-otel view``, run as the console script they are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from chatai_otel.cli.doctor import mask_env, mask_url
from conftest import bin_path, free_port

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

SECRET = "s3cr3t-value-do-not-print"


def cli(*args: str, cwd: Path | None = None, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CHATAI_OTEL_"))}
    env.update(env_extra)
    return subprocess.run(
        [bin_path("chatai-otel"), *args],
        env=env,
        cwd=str(cwd) if cwd else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def section(output: str, title: str) -> str:
    return output.split(title, 1)[1].split("\n\n", 1)[0]


def test_doctor_reports_a_closed_endpoint_and_masks_secrets():
    port = free_port()
    done = cli(
        "doctor",
        "--timeout",
        "1",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {SECRET},x-tenant=acme",
        CHATAI_OTEL_ALERT_WEBHOOK_URL=f"https://hooks.example.com/services/T0/B0/{SECRET}",
        OTEL_SERVICE_NAME="doctor-test",
        CHATAI_OTEL_STORE_URL=f"postgresql://chatai:{SECRET}@db:5432/chatai",
        CHATAI_OTEL_ALERT_WEBHOOK_HEADERS=f"x-api-key={SECRET}",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert SECRET not in out + done.stderr
    assert "authorization=[REDACTED],x-tenant=[REDACTED]" in out  # names shown, values never
    assert "https://hooks.example.com/[REDACTED]" in out
    assert "postgresql://chatai:[REDACTED]@db:5432/chatai" in out
    assert "x-api-key=[REDACTED]" in out
    assert "doctor-test" in out
    endpoints = section(out, "OTLP endpoints")
    assert f"traces/metrics/logs: http://127.0.0.1:{port} (OTLP/gRPC)  NOT ANSWERING" in endpoints
    assert "UNAVAILABLE" in endpoints


def test_doctor_reports_an_answering_endpoint(receiver):
    done = cli("doctor", **receiver.env("grpc"))
    assert done.returncode == 0, done.stdout
    assert "OK: answers OTLP/gRPC in" in section(done.stdout, "OTLP endpoints")
    over_http = cli("doctor", **receiver.env("http/protobuf"))
    assert over_http.returncode == 0, over_http.stdout
    endpoints = section(over_http.stdout, "OTLP endpoints")
    # per-signal paths: three probes, each answered
    for signal in ("traces", "metrics", "logs"):
        assert f"{signal}: {receiver.http_endpoint}/v1/{signal} (OTLP/HTTP)  OK" in endpoints
    counts = receiver.counts()  # the probes really reached it: one over gRPC, three over HTTP
    assert counts["traces_requests"] + counts["metrics_requests"] + counts["logs_requests"] == 4


def test_doctor_reports_an_endpoint_that_is_not_otlp(tmp_path):
    """An open port that does not speak OTLP (a plain HTTP server) is not 'answering'."""
    server = subprocess.Popen(
        ["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port := free_port())],
        cwd=str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time

        import httpx

        for _ in range(50):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        done = cli(
            "doctor",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        )
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 1
    assert "NOT ANSWERING: HTTP 501" in section(done.stdout, "OTLP endpoints")


def test_doctor_reports_skipped_instrumentations_and_why(tmp_path):
    # A redis older than the instrumentation supports shadows the real one (a dist-info first on
    # the path is what importlib.metadata finds), and httpx is switched off by the standard variable.
    fake = tmp_path / "site"
    (fake / "redis-1.0.dist-info").mkdir(parents=True)
    (fake / "redis-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: redis\nVersion: 1.0\n"
    )
    done = cli(
        "doctor",
        "--timeout",
        "0.5",
        PYTHONPATH=str(fake),
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="httpx",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    rows = {
        line.split()[0]: line
        for line in section(done.stdout, "Instrumentations").splitlines()[1:]
        if line.strip()
    }
    assert "skipped" in rows["redis"]
    assert "redis 1.0 is installed, outside the supported range redis >= 2.6" in rows["redis"]
    assert "skipped" in rows["httpx"] and "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in rows["httpx"]
    assert "active" in rows["sqlalchemy"] and "no connect span" in rows["sqlalchemy"]
    assert "active" in rows["fastapi"] and "chatai-otel's ASGI middleware" in rows["fastapi"]
    packages = section(done.stdout, "Packages")
    assert "opentelemetry-sdk" in packages and "chatai-otel" in packages


def test_doctor_with_an_invalid_setting_says_which_and_exits_2():
    done = cli("doctor", OTEL_TRACES_SAMPLER_ARG="1.5")
    assert done.returncode == 2
    assert "INVALID: OTEL_TRACES_SAMPLER_ARG='1.5' is invalid" in done.stdout
    assert "Packages" in done.stdout  # the rest of the report still comes


def test_masking_rules():
    assert mask_env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=abc, x=1") == (
        "api-key=[REDACTED],x=[REDACTED]"
    )
    assert mask_env("CHATAI_OTEL_SOME_TOKEN", "abc") == "[REDACTED]"
    assert mask_env("OTEL_SERVICE_NAME", "chatai") == "chatai"
    assert "pw" not in mask_env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:pw@collector:4317")
    assert mask_url("https://hooks.slack.com/services/T/B/X?token=1") == (
        "https://hooks.slack.com/[REDACTED]"
    )
    assert mask_url("http://alerts.internal:8080") == "http://alerts.internal:8080"


def test_view_rejects_a_file_that_is_not_otlp_json(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"resourceSpans": []}\n{"hello": 1}\n')
    done = cli("view", str(bad))
    assert done.returncode == 2
    assert f"{bad}:2: no resourceSpans, resourceMetrics, resourceLogs key" in done.stderr
    hexless = tmp_path / "base64.jsonl"
    hexless.write_text(
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"S/kvNXezTaajzpKdDg5HNg==",'
        '"spanId":"APBnqgupArc=","name":"x"}]}]}]}\n'
    )
    done = cli("view", str(hexless))
    assert done.returncode == 2 and "is not hex" in done.stderr
