"""The web layer end to end: a real uvicorn process under opentelemetry-instrument (our distro),
real PostgreSQL and Redis, a real OTLP receiver. One app process serves the whole module;
each test tells its requests apart by request id or trace id."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatai_otel.testing.receiver import OTLPReceiver, ReceivedSpan
from conftest import AppProcess, bin_path, drop_table, free_port, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

SERVER, CLIENT = 2, 3
HEX32 = re.compile(r"[0-9a-f]{32}")


class Backend:
    def __init__(self, receiver: OTLPReceiver, app: AppProcess) -> None:
        self.receiver = receiver
        self.app = app
        self.client = httpx.Client(base_url=app.url, timeout=10)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return self.client.get(path, **kwargs)  # type: ignore[arg-type]

    def server_span(self, request_id: str) -> ReceivedSpan:
        spans = self.receiver.wait_for_spans(
            1, lambda s: s.kind == SERVER and s.attributes.get("chatai.request.id") == request_id
        )
        assert len(spans) == 1, spans
        return spans[0]

    def trace(self, trace_id: str, count: int) -> list[ReceivedSpan]:
        return self.receiver.wait_for_spans(count, lambda s: s.trace_id == trace_id)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.app.stdout().splitlines() if line.startswith("{")]

    def access_lines(self, request_id: str) -> list[dict]:
        return [
            line
            for line in self.lines()
            if line.get("request_id") == request_id
            and line.get("message") in ("HTTP_REQUEST_COMPLETE", "HTTP_REQUEST_ERROR")
        ]


def _start_backend(
    tmp: Path, receiver: OTLPReceiver, table: str, **env: str
) -> Iterator[AppProcess]:
    port = free_port()
    args = [
        bin_path("opentelemetry-instrument"),
        bin_path("uvicorn"),
        "chat_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    app_env = telemetry_env(receiver, CHAT_APP_TABLE=table, CHAT_APP_PORT=str(port), **env)
    app = AppProcess(args, app_env, port, tmp)
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()
        drop_table(table)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    table = f"web_e2e_{uuid.uuid4().hex[:10]}"
    with OTLPReceiver() as receiver:
        for app in _start_backend(
            tmp_path_factory.mktemp("backend"),
            receiver,
            table,
            CHATAI_OTEL_CAPTURE_HEADERS="authorization,cookie,user-agent,x-custom",
        ):
            yield Backend(receiver, app)


# --- span tree -----------------------------------------------------------------------------


def test_one_server_span_with_db_and_redis_children_and_nothing_else(backend: Backend) -> None:
    answer = backend.get("/items/7")
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    server = backend.server_span(request_id)
    assert server.name == "GET /items/{item_id}"
    assert server.attributes["http.route"] == "/items/{item_id}"
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == "/items/7"
    assert server.attributes["url.scheme"] == "http"
    assert server.parent_span_id == ""
    time.sleep(0.5)  # anything else of this trace would have arrived with it
    spans = backend.trace(server.trace_id, 3)
    assert len(spans) == 3, [s.name for s in spans]
    children = [s for s in spans if s is not server]
    assert all(c.parent_span_id == server.span_id for c in children)
    assert all(c.kind == CLIENT for c in children)
    db = next(s for s in children if s.name.startswith("SELECT"))
    query = db.attributes.get("db.query.text") or db.attributes.get("db.statement")
    assert query.startswith("SELECT body FROM")
    assert "%(id)s" in query or ":id" in query  # parameters, never their values
    redis_span = next(s for s in children if s not in (db,))
    assert "GET" in redis_span.name
    command = redis_span.attributes.get("db.query.text") or redis_span.attributes.get(
        "db.statement"
    )
    assert command == "GET ?"  # the key (and any value) never recorded
    names = {s.name for s in backend.receiver.spans()}
    assert "connect" not in names
    assert not [n for n in names if n.endswith(("http send", "http receive"))]


def test_spans_from_an_async_engine_and_redis_asyncio(backend: Backend) -> None:
    answer = backend.get("/async-db")
    assert answer.status_code == 200
    server = backend.server_span(answer.headers["x-request-id"])
    spans = backend.trace(server.trace_id, 3)
    children = [s for s in spans if s.parent_span_id == server.span_id]
    assert any(s.name.startswith("SELECT") for s in children), [s.name for s in spans]
    assert any("SET" in s.name for s in children), [s.name for s in spans]


def test_outgoing_httpx_call_is_a_client_span_and_propagates_the_trace(backend: Backend) -> None:
    answer = backend.get("/outgoing")
    assert answer.status_code == 200
    server = backend.server_span(answer.headers["x-request-id"])
    spans = backend.trace(server.trace_id, 3)
    client = next(s for s in spans if s.kind == CLIENT)
    assert client.parent_span_id == server.span_id
    inner = next(s for s in spans if s.kind == SERVER and s is not server)
    assert inner.parent_span_id == client.span_id  # our middleware continued the caller's trace
    assert inner.attributes["http.route"] == "/ping"


# --- metrics ---------------------------------------------------------------------------------


def test_duration_histogram_is_keyed_by_route_template(backend: Backend) -> None:
    for item in (101, 102, 103):
        assert backend.get(f"/items/{item}").status_code == 200

    def item_points(point) -> bool:
        return (
            point.name == "http.server.request.duration"
            and point.attributes.get("http.route") == "/items/{item_id}"
            and (point.count or 0) >= 3
        )

    points = backend.receiver.wait_for_metrics(1, item_points)
    point = points[-1]
    assert point.unit == "s"
    assert set(point.attributes) == {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.scheme",
    }
    assert point.attributes["http.response.status_code"] == 200
    routes = {
        p.attributes.get("http.route")
        for p in backend.receiver.metrics()
        if p.name == "http.server.request.duration"
    }
    assert not [r for r in routes if r and re.search(r"/items/\d", r)], routes


# --- request ids -----------------------------------------------------------------------------


def test_a_valid_incoming_request_id_is_kept_echoed_logged_and_on_the_span(
    backend: Backend,
) -> None:
    incoming = f"req-{uuid.uuid4().hex[:8]}.A_1"
    answer = backend.get("/items/1", headers={"X-Request-ID": incoming})
    assert answer.headers["x-request-id"] == incoming
    backend.server_span(incoming)
    # stdout lines of a request leave in a batch up to CHATAI_OTEL_LOG_STDOUT_INTERVAL later
    assert _eventually(lambda: len(backend.access_lines(incoming)) == 1)
    item_lines = [
        line
        for line in backend.lines()
        if line.get("message") == "item.read" and line.get("request_id") == incoming
    ]
    assert len(item_lines) == 1


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 129, "x" * 10_240, "has space", "semi;colon", "ünïcode", 'quote"d'],
    ids=["empty", "129-chars", "10KB", "space", "semicolon", "non-ascii", "quote"],
)
def test_an_invalid_request_id_is_replaced_by_a_generated_one(backend: Backend, bad: str) -> None:
    answer = backend.client.get("/ping", headers=[(b"X-Request-ID", bad.encode("utf-8"))])
    assert answer.status_code == 200
    generated = answer.headers["x-request-id"]
    assert HEX32.fullmatch(generated)
    assert len(backend.access_lines(generated)) == 1 or _eventually(
        lambda: len(backend.access_lines(generated)) == 1
    )
    backend.server_span(generated)


def _eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_request_id_with_a_newline_never_forges_a_log_line(backend: Backend) -> None:
    """Raw bytes on a real socket: an obs-fold continuation line, and a bare CR inside the value."""
    marker = uuid.uuid4().hex
    for raw_header in (
        f"X-Request-ID: abc\r\n {marker}-fold",
        f"X-Request-ID: abc\r{marker}-cr",
        f"X-Request-ID: abc\n{marker}-lf",
    ):
        request = (
            f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n{raw_header}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", backend.app.port), timeout=5) as sock:
            sock.sendall(request)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        echoed = re.search(r"(?im)^x-request-id: (.*)$", head)
        if status == 200:  # the server accepted the request: the id must be ours or a clean one
            assert echoed is not None
            assert marker not in echoed.group(1)
            assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", echoed.group(1).strip())
        else:  # the HTTP parser refused it outright, before any app code ran
            assert status == 400
    time.sleep(0.5)
    for line in backend.app.stdout().splitlines():
        assert marker not in line or line.startswith("{"), line
        if marker in line:
            assert json.loads(line).get("request_id", "").find(marker) == -1


# --- user context ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/whoami", "/whoami-sync"])
def test_bind_user_reaches_logs_span_and_access_line(backend: Backend, path: str) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    answer = backend.get(path, headers={"X-User": user})
    request_id = answer.headers["x-request-id"]
    server = backend.server_span(request_id)
    assert server.attributes["user.id"] == user
    assert _eventually(lambda: len(backend.access_lines(request_id)) == 1)
    access = backend.access_lines(request_id)[0]
    assert access["user_id"] == user
    assert access["session_id"] == f"session-of-{user}"
    if path == "/whoami":
        inner = [
            line
            for line in backend.lines()
            if line.get("message") == "whoami.answered" and line.get("request_id") == request_id
        ]
        assert inner and inner[0]["user_id"] == user
        assert inner[0]["session_id"] == f"session-of-{user}"


# --- access log ------------------------------------------------------------------------------


def test_one_access_line_per_request_with_the_seed_fields(backend: Backend) -> None:
    answer = backend.get("/items/5?page=2", headers={"User-Agent": "pytest-agent/1.0"})
    request_id = answer.headers["x-request-id"]
    assert _eventually(lambda: len(backend.access_lines(request_id)) == 1)
    line = backend.access_lines(request_id)[0]
    assert line["message"] == "HTTP_REQUEST_COMPLETE"
    assert line["level"] == "INFO"
    assert line["method"] == "GET"
    assert line["route"] == "/items/{item_id}"
    assert line["path"] == "/items/5"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["client_ip"] == "127.0.0.1"
    assert line["user_agent"] == "pytest-agent/1.0"
    assert line["response_size"] == len(answer.content)
    server = backend.server_span(request_id)
    assert line["trace_id"] == server.trace_id
    records = backend.receiver.wait_for_logs(
        1,
        lambda r: (
            r.body == "HTTP_REQUEST_COMPLETE" and r.attributes.get("request_id") == request_id
        ),
    )
    assert len(records) == 1 and records[0].trace_id == server.trace_id


def test_health_and_metrics_urls_stay_out_of_traces_and_the_access_log(backend: Backend) -> None:
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    for path in ("/health", "/health/live", "/metrics"):
        assert backend.get(path, headers={"X-Request-ID": marker}).status_code == 200
    backend.get("/ping", headers={"X-Request-ID": marker + "-ping"})
    backend.server_span(marker + "-ping")  # later than the probes, so theirs would be here too
    time.sleep(0.5)
    traced = [s.attributes.get("url.path") for s in backend.receiver.spans() if s.kind == SERVER]
    assert not [p for p in traced if p and (p.startswith("/health") or p == "/metrics")]
    # stdout lines leave in order: once the ping's is out, the probes' would be too
    assert _eventually(lambda: len(backend.access_lines(marker + "-ping")) == 1)
    assert not backend.access_lines(marker)


# --- secrets ---------------------------------------------------------------------------------


def test_authorization_and_cookie_never_reach_logs_or_spans(backend: Backend) -> None:
    token = f"tok{uuid.uuid4().hex}"
    cookie = f"sess{uuid.uuid4().hex}"
    answer = backend.get(
        "/items/3",
        headers={
            "Authorization": f"Bearer {token}",
            "Cookie": f"session={cookie}",
            "X-Custom": "visible-value",
        },
    )
    request_id = answer.headers["x-request-id"]
    server = backend.server_span(request_id)
    assert _eventually(lambda: len(backend.access_lines(request_id)) == 1)
    access = backend.access_lines(request_id)[0]
    assert access["headers"]["x-custom"] == "visible-value"  # capture is on for this app
    assert access["headers"]["authorization"] == "[REDACTED]"
    assert access["headers"]["cookie"] == "[REDACTED]"
    backend.receiver.wait_for_logs(
        1, lambda r: r.attributes.get("request_id") == request_id and "headers" in r.attributes
    )
    everything = (
        backend.app.stdout() + repr(backend.receiver.spans()) + repr(backend.receiver.logs())
    )
    assert token not in everything
    assert cookie not in everything
    assert server.attributes.get("http.request.header.authorization") is None


def test_secrets_app_code_puts_on_any_span_and_signed_urls_never_leave(backend: Backend) -> None:
    """Span attributes, events and links set by app code on the server span (ours), on an
    SDK span and its link; a signed URL on the httpx client span, the server span it reaches
    and a log line: scrubbed by key and by value shape before export."""
    secret = f"S{uuid.uuid4().hex}"
    answer = backend.client.post("/planted", json={"secret": secret})
    assert answer.json() == {"status": 200}
    request_id = answer.headers["x-request-id"]
    server = backend.server_span(request_id)
    spans = backend.trace(server.trace_id, 4)  # POST server, internal, GET client, GET server
    by_name = {(s.name, s.kind): s for s in spans}
    internal = by_name["planted.internal", 1]
    client = next(s for s in spans if s.kind == CLIENT)
    pinged = next(s for s in spans if s.kind == SERVER and s is not server)
    assert _eventually(
        lambda: any(line.get("message") == "planted.fetched" for line in backend.lines())
    )
    backend.receiver.wait_for_logs(1, lambda r: r.body == "planted.fetched")

    everything = (
        backend.app.stdout() + repr(backend.receiver.spans()) + repr(backend.receiver.logs())
    )
    assert secret not in everything
    # the attributes are there, with the marker where the secret was
    expected = {
        "password": "[REDACTED]",
        "client_secret": "[REDACTED]",
        "authorization": "[REDACTED]",
        "note.bearer": "Bearer [REDACTED]",
        "note.basic": "Basic [REDACTED]",
        "note.jwt": "[REDACTED]",
        "note.dsn": "postgresql://app:[REDACTED]@db:5432/chat",
        "note.download": "https://cdn.example.com/f?api_key=[REDACTED]&size=2",
        "note.link": "https://cdn.example.com/f?access_token=[REDACTED]",
    }
    for span in (server, internal):
        assert {k: span.attributes.get(k) for k in expected} == expected, span.name
    assert internal.attributes["later.password"] == "[REDACTED]"
    assert internal.attributes["later.note"] == "Bearer [REDACTED]"
    events = {e["name"]: e["attributes"] for span in (server, internal) for e in span.events}
    for name in ("planted.on.server", "planted.on.internal"):
        assert {k: events[name].get(k) for k in expected} == expected
    (link,) = internal.links
    assert link["span_id"] == server.span_id
    assert {k: link["attributes"].get(k) for k in expected} == expected
    # signed URLs: every signature-bearing query value redacted, the rest kept
    names = ("sig", "Signature", "AWSAccessKeyId", "X-Goog-Signature", "X-Amz-Signature",
             "X-Amz-Credential", "X-Amz-Security-Token", "access_token", "api_key")  # fmt: skip
    redacted_query = "&".join(f"{name}=[REDACTED]" for name in names) + "&keep=visible"
    assert client.attributes["url.full"].endswith("/ping?" + redacted_query)
    assert pinged.attributes["url.query"] == redacted_query
    (line,) = [line for line in backend.lines() if line.get("message") == "planted.fetched"]
    assert line["url"].endswith("/ping?" + redacted_query)


# --- exception handlers ----------------------------------------------------------------------


def test_validation_error_is_422_with_details_and_request_id(backend: Backend) -> None:
    answer = backend.client.post("/messages", json={"text": "hi", "dialog_id": "not-a-number"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["request_id"] == answer.headers["x-request-id"]
    assert body["detail"][0]["loc"] == ["body", "dialog_id"]
    assert body["detail"][0]["type"] == "int_parsing"
    assert "not-a-number" not in answer.text  # the rejected input is not echoed
    server = backend.server_span(body["request_id"])
    assert server.attributes["http.response.status_code"] == 422
    assert server.status_code != 2  # a client error is no server error
    events = [e for e in server.events if e["name"] == "exception"]
    assert events and events[0]["attributes"]["exception.type"].endswith("RequestValidationError")


def test_database_error_is_500_without_internals(backend: Backend) -> None:
    answer = backend.get("/db-error")
    assert answer.status_code == 500
    body = answer.json()
    assert body == {
        "detail": "Database error occurred",
        "request_id": answer.headers["x-request-id"],
    }
    server = backend.server_span(body["request_id"])
    assert server.status_code == 2  # ERROR
    assert server.attributes["error.type"].startswith("sqlalchemy.exc.")
    assert [e for e in server.events if e["name"] == "exception"]
    failed = backend.trace(server.trace_id, 2)
    statement = next(s for s in failed if s.parent_span_id == server.span_id)
    assert statement.name.startswith("SELECT")
    assert statement.status_code == 2
    assert statement.attributes["error.type"].startswith("psycopg.errors.")
    assert _eventually(lambda: len(backend.access_lines(body["request_id"])) == 1)
    line = backend.access_lines(body["request_id"])[0]
    assert line["message"] == "HTTP_REQUEST_ERROR"
    assert line["level"] == "ERROR"
    assert line["status"] == 500
    assert line["error_type"] == "ProgrammingError"


def test_unhandled_exception_is_500_scrubbed_and_logged_once(backend: Backend) -> None:
    answer = backend.get("/boom")
    assert answer.status_code == 500
    body = answer.json()
    assert body == {"detail": "Internal server error", "request_id": answer.headers["x-request-id"]}
    server = backend.server_span(body["request_id"])
    assert server.status_code == 2
    assert server.attributes["error.type"] == "RuntimeError"
    exceptions = [e for e in server.events if e["name"] == "exception"]
    assert len(exceptions) == 1
    assert "sk-live-abcdefghijklmnop" not in json.dumps(exceptions[0]["attributes"])
    assert "exploded" in exceptions[0]["attributes"]["exception.message"]
    assert _eventually(lambda: len(backend.access_lines(body["request_id"])) == 1)
    line = backend.access_lines(body["request_id"])[0]
    assert line["message"] == "HTTP_REQUEST_ERROR"
    assert line["error_message"] == "exploded with Authorization: [REDACTED]"
    # the stack is logged once, by track_error (error counter, error record), linked by event id
    tracked = [
        x
        for x in backend.lines()
        if x.get("message") == "application_error" and x.get("request_id") == body["request_id"]
    ]
    assert len(tracked) == 1
    assert tracked[0]["event_id"] == line["error_event_id"]
    assert "RuntimeError" in json.dumps(tracked[0])
    assert "sk-live-abcdefghijklmnop" not in json.dumps(tracked[0])
    errors = backend.receiver.wait_for_metrics(
        1,
        lambda p: (
            p.name == "chatai.errors"
            and p.attributes.get("error.category") == "system"
            and p.attributes.get("error.type") == "RuntimeError"
        ),
    )
    assert errors[-1].value >= 1
    assert "Exception in ASGI application" not in backend.app.stderr()


def test_http_exception_keeps_its_status_and_gains_the_request_id(backend: Backend) -> None:
    answer = backend.get("/no/such/route")
    assert answer.status_code == 404
    assert answer.json() == {"detail": "Not Found", "request_id": answer.headers["x-request-id"]}
    server = backend.server_span(answer.headers["x-request-id"])
    assert "http.route" not in server.attributes  # no template matched: never the raw path
    assert server.name == "GET"


def test_a_deliberate_5xx_http_exception_is_an_answer_not_a_system_error(backend: Backend) -> None:
    """HTTPException(502) from app code: its status and detail, on the span, no track_error."""
    answer = backend.get("/upstream")
    assert answer.status_code == 502
    request_id = answer.headers["x-request-id"]
    assert answer.json() == {"detail": "upstream unavailable", "request_id": request_id}
    server = backend.server_span(request_id)
    assert server.status_code == 2  # a 5xx is a server error
    assert server.attributes["error.type"] == "502"  # the status code, as the semconv asks
    exceptions = [e for e in server.events if e["name"] == "exception"]
    assert len(exceptions) == 1
    assert exceptions[0]["attributes"]["exception.type"].endswith("HTTPException")
    assert _eventually(lambda: len(backend.access_lines(request_id)) == 1)
    line = backend.access_lines(request_id)[0]
    assert line["message"] == "HTTP_REQUEST_ERROR"
    assert line["status"] == 502
    assert line["error_message"] == "502: upstream unavailable"
    assert "error_event_id" not in line
    tracked = [
        x
        for x in backend.lines()
        if x.get("message") == "application_error" and x.get("request_id") == request_id
    ]
    assert not tracked  # not counted as a generic system error
    backend.receiver.wait_for_metrics(
        1,
        lambda p: (
            p.name == "http.server.request.duration"
            and p.attributes.get("http.route") == "/upstream"
            and p.attributes.get("error.type") == "502"
        ),
    )
