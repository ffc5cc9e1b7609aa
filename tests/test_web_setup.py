"""How the web layer gets switched on: by hand, by the distro, and what it says when it cannot."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from chatai_otel.integrations.asgi import valid_request_id
from chatai_otel.integrations.instrumentors import LIBRARIES, Library, report_inactive
from conftest import bin_path, drop_table, free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

SERVER = 2  # SpanKind.SERVER in OTLP


def _uvicorn(port: int, app: str = "chat_app:app", instrument: bool = True) -> list[str]:
    prefix = [bin_path("opentelemetry-instrument")] if instrument else []
    return [
        *prefix,
        bin_path("uvicorn"),
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]


@pytest.fixture
def table() -> object:
    name = f"web_setup_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(name)


def test_instrument_app_by_hand_without_the_wrapper(receiver, start_app, table) -> None:
    """``import chatai_otel.setup`` + ``instrument_app(app)`` under plain uvicorn: same telemetry."""
    port = free_port()
    env = telemetry_env(
        receiver, CHAT_APP_TABLE=table, CHAT_APP_PORT=str(port), CHAT_APP_BY_HAND="1"
    )
    app = start_app(_uvicorn(port, instrument=False), env, port)
    app.wait_ready()
    answer = httpx.get(f"{app.url}/items/4")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    server = receiver.wait_for_spans(
        1, lambda s: s.kind == SERVER and s.attributes.get("chatai.request.id") == request_id
    )[0]
    assert server.attributes["http.route"] == "/items/{item_id}"
    spans = receiver.wait_for_spans(3, lambda s: s.trace_id == server.trace_id)
    assert {s.parent_span_id for s in spans if s is not server} == {server.span_id}
    assert "connect" not in {s.name for s in receiver.spans()}
    assert httpx.get(f"{app.url}/boom").json()["detail"] == "Internal server error"


def test_excluded_urls_come_from_the_environment(receiver, start_app, table) -> None:
    port = free_port()
    env = telemetry_env(
        receiver,
        CHAT_APP_TABLE=table,
        CHAT_APP_PORT=str(port),
        CHATAI_OTEL_EXCLUDED_URLS="/ping,/items/*",
    )
    app = start_app(_uvicorn(port), env, port)
    app.wait_ready()
    for path in ("/ping", "/items/1", "/health"):
        assert httpx.get(f"{app.url}{path}").status_code == 200
    receiver.wait_for_spans(1, lambda s: s.attributes.get("url.path") == "/health")
    time.sleep(0.5)
    paths = {s.attributes.get("url.path") for s in receiver.spans() if s.kind == SERVER}
    assert paths == {"/health"}
    lines = [json.loads(x) for x in app.stdout().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("message") == "HTTP_REQUEST_COMPLETE"]
    assert [x["path"] for x in access] == ["/health"]
    assert "headers" not in access[0]  # no request headers on the access line by default


def test_a_bad_excluded_urls_value_stops_start_up_with_one_line(start_app, table) -> None:
    port = free_port()
    env = telemetry_env(None, CHAT_APP_TABLE=table, CHATAI_OTEL_EXCLUDED_URLS="health")
    app = start_app(_uvicorn(port), env, port)
    assert app.wait(timeout=30) == 2
    assert "CHATAI_OTEL_EXCLUDED_URLS='health' is invalid" in app.stderr()


def test_start_up_line_names_library_version_and_range(receiver, start_app, tmp_path) -> None:
    """A redis distribution outside the supported range (metadata first on the path)."""
    fake = tmp_path / "site"
    (fake / "redis-1.0.dist-info").mkdir(parents=True)
    (fake / "redis-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: redis\nVersion: 1.0\n"
    )
    port = free_port()
    env = telemetry_env(receiver)
    env["PYTHONPATH"] = f"{fake}:{env['PYTHONPATH']}"
    app = start_app(_uvicorn(port, app="basic_app:app"), env, port)
    app.wait_ready()
    lines = [json.loads(x) for x in app.stdout().splitlines() if x.startswith("{")]
    about_redis = [x for x in lines if x.get("library") == "redis"]
    assert len(about_redis) == 1, lines
    line = about_redis[0]
    assert line["level"] == "WARNING"
    assert line["version"] == "1.0"
    assert line["supported"] == "redis >= 2.6"
    assert "redis 1.0" in line["message"] and "redis >= 2.6" in line["message"]
    assert not [x for x in lines if x.get("library") in ("sqlalchemy", "httpx", "fastapi")]
    # the rest still works
    assert httpx.get(f"{app.url}/ping").status_code == 200
    receiver.wait_for_spans(1, lambda s: s.kind == SERVER)


def test_an_absent_library_is_reported_too(monkeypatch, capsys) -> None:
    absent = Library("nosuchlib", "chatai-no-such-library", "chatai-no-such-library >= 1", "x")
    monkeypatch.setattr("chatai_otel.integrations.instrumentors.LIBRARIES", (*LIBRARIES, absent))
    lines = report_inactive(again=True)
    assert lines == [
        "chatai-no-such-library instrumentation is off: chatai-no-such-library is not installed "
        "(supported: chatai-no-such-library >= 1); no x"
    ]
    assert "chatai-no-such-library" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (b"abc-123_X.y", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"abc\ndef", False),
        (b"abc\r\ndef", False),
        (b"abc\n", False),
        (b"abc def", False),
        (b"abc/def", False),
        ("ä".encode(), False),
        (b"x" * 10_240, False),
    ],
)
def test_request_id_rule(raw: bytes, accepted: bool) -> None:
    assert (valid_request_id(raw) is not None) is accepted


def test_uvicorn_workers_each_get_the_middleware(receiver, start_app, table) -> None:
    """Spawned workers (uvicorn --workers 2) configure and instrument themselves."""
    port = free_port()
    env = telemetry_env(receiver, CHAT_APP_TABLE=table, CHAT_APP_PORT=str(port))
    # a generous worker health check: start-up under load can pass uvicorn's default 5 s
    app = start_app(
        [*_uvicorn(port), "--workers", "2", "--timeout-worker-healthcheck", "60"], env, port
    )
    app.wait_ready()
    for _ in range(10):
        with httpx.Client() as client:
            assert "x-request-id" in client.get(f"{app.url}/ping").headers
    receiver.wait_for_spans(
        10, lambda s: s.kind == SERVER and s.attributes["http.route"] == "/ping"
    )
