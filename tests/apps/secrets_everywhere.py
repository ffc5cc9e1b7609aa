"""Generated secrets on every path a secret can take; none may reach stdout, OTLP or the store.

Run as its own process (``python secrets_everywhere.py <examples> <schema> <stdout file>``,
stdout redirected to that file): it configures chatai-otel for real, with a real OTLP
receiver on loopback in this process, a real uvicorn server (in a thread) serving an
instrumented FastAPI app, httpx instrumented, and the durable store on PostgreSQL. Hypothesis
plants one secret per example -- by key name or by value shape -- on one path, then flushes
and searches what was printed and exported; at the end, every row of the store. Exit 0 when
nothing leaked; otherwise hypothesis' falsifying example on stderr and exit 1.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from chatai_otel.testing.receiver import OTLPReceiver

EXAMPLES, SCHEMA, STDOUT_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]

receiver = OTLPReceiver().start()
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    PORT = probe.getsockname()[1]
os.environ.update(receiver.env("grpc"))
os.environ.update(
    OTEL_SERVICE_NAME="secrets-everywhere",
    OTEL_METRICS_EXPORTER="none",
    CHATAI_OTEL_LOG_FORMAT="json",
    CHATAI_OTEL_CAPTURE_HEADERS="authorization,cookie,x-api-key,x-note",
    CHATAI_OTEL_STORE_URL="postgresql://postgres@127.0.0.1:5432/test",
    CHATAI_OTEL_STORE_SCHEMA=SCHEMA,
    CHATAI_OTEL_STORE_CREATE_TABLES="true",
    CHATAI_OTEL_STORE_JOURNAL_DIR=os.path.join(os.path.dirname(STDOUT_FILE), "journal"),
)

import httpx  # noqa: E402
import psycopg  # noqa: E402
import structlog  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from opentelemetry import trace  # noqa: E402

import chatai_otel  # noqa: E402
from chatai_otel import BusinessEvent, ErrorCategory, ErrorSeverity, context  # noqa: E402
from chatai_otel.logs.line_writer import flush_all  # noqa: E402
from chatai_otel.tracking import events  # noqa: E402

telemetry = chatai_otel.configure()
log = chatai_otel.get_logger("planted")
stdlib = logging.getLogger("planted.std")
tracer = trace.get_tracer("planted")
app = chatai_otel.instrument_app(FastAPI())


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/on-server-span")
async def on_server_span(request: Request) -> dict[str, str]:
    """App code setting what the body says on the request's server span."""
    body = await request.json()
    span = trace.get_current_span()
    span.set_attribute(body["key"], body["value"])
    span.add_event("planted", {body["key"]: body["value"]})
    return {"status": "ok"}


@app.post("/client-call")
async def client_call(request: Request) -> dict[str, str]:
    """An outgoing httpx call to the URL in the body (a client span, a server span, a log)."""
    url = (await request.json())["url"]
    async with httpx.AsyncClient() as client:
        await client.get(url)
    return {"status": "ok"}


server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_config=None))
threading.Thread(target=server.run, daemon=True).start()
BASE = f"http://127.0.0.1:{PORT}"
while not server.started:
    time.sleep(0.02)
http = httpx.Client(base_url=BASE, timeout=10)

# --- what is planted -----------------------------------------------------------------------

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"
secrets = st.text(alphabet=ALPHABET, min_size=16, max_size=32).map(lambda s: "Zq" + s)
SECRET_KEYS = ["password", "api_key", "apiKey", "token", "client_secret", "authorization",
               "cookie", "session", "private_key", "X-Api-Key", "csrf_token", "passwd",
               "access_token", "refresh_token", "db_password", "secret"]  # fmt: skip
QUERY_KEYS = ["sig", "Signature", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
              "X-Goog-Signature", "AWSAccessKeyId", "token", "access_token", "api_key",
              "password"]  # fmt: skip
PLAIN_KEYS = ["note", "detail", "item", "author", "meta", "url", "target"]


def shapes(secret: str) -> list[str]:
    return [
        f"Bearer {secret}",
        f"Basic {secret}",
        f"Token {secret}9",
        f"eyJhbGciOiJIUzI1NiJ9.eyJ{secret}.{secret}",
        f"postgresql://app:{secret}@db:5432/chat",
        f"redis://:{secret}@cache:6379/0",
        f"https://user:{secret}@example.com/path",
        f"https://cdn.example.com/f?api_key={secret}&size=2",
        f"https://s3.example.com/f?X-Amz-Signature={secret}&X-Amz-Expires=60",
        f"password={secret}",
        f"token: {secret}",
        f'{{"client_secret": "{secret}"}}',
        f"sk-{secret}",
        f"123456789:{secret}{secret}",
    ]


def planting(secret: str) -> st.SearchStrategy[tuple[str, Any]]:
    """(key, value): the secret under a secret key, or in a secret shape under a plain key."""
    by_key = st.tuples(st.sampled_from(SECRET_KEYS), st.just(secret))
    by_shape = st.tuples(st.sampled_from(PLAIN_KEYS), st.sampled_from(shapes(secret)))
    nested = st.tuples(
        st.sampled_from(PLAIN_KEYS),
        st.one_of(by_key, by_shape).map(
            lambda kv: {"inner": {kv[0]: kv[1]}, "list": [{kv[0]: kv[1]}]}
        ),
    )
    return st.one_of(by_key, by_shape, nested)


def flat(key: str, value: Any) -> str:
    """The planting as text that keeps it a secret: ``key=value`` (or the dict's repr)."""
    return f"{key}={value}" if isinstance(value, str) else repr({key: value})


# --- the paths -----------------------------------------------------------------------------


def structlog_field(secret: str, key: str, value: Any) -> None:
    log.info("planted.field", **{key: value})


def stdlib_extra(secret: str, key: str, value: Any) -> None:
    stdlib.warning("planted.extra", extra={f"x_{key}": value, "detail": flat(key, value)})


def message_text(secret: str, key: str, value: Any) -> None:
    log.info(f"calling with {flat(key, value)}")
    stdlib.info("calling %s with %s", key, flat(key, value))


def exception_text(secret: str, key: str, value: Any) -> None:
    try:
        raise ConnectionError(f"failed: {flat(key, value)}")
    except ConnectionError:
        log.exception("planted.exception")
        stdlib.exception("planted.std.exception")


def business_event(secret: str, key: str, value: Any) -> None:
    events.emit(BusinessEvent(event_type=events.EventType.MESSAGE_SENT, user_id=1,
                              data={key: value, "n": 1}))  # fmt: skip


def tracked_error(secret: str, key: str, value: Any) -> None:
    try:
        raise RuntimeError(f"upstream said {flat(key, value)}")
    except RuntimeError as error:
        chatai_otel.track_error(error, ErrorCategory.EXTERNAL_SERVICE, ErrorSeverity.LOW,
                                context={key: value})  # fmt: skip


def internal_span(secret: str, key: str, value: Any) -> None:
    text = flat(key, value)
    with tracer.start_as_current_span("planted", attributes={key: text}) as span:
        span.set_attribute(f"later.{key}", text)
        span.add_event("planted", {key: text})
        span.add_link(span.get_span_context(), {key: text})
        try:
            raise ValueError(text)
        except ValueError as error:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, text)


def server_span(secret: str, key: str, value: Any) -> None:
    http.post("/on-server-span", json={"key": key, "value": flat(key, value)})


def client_span(secret: str, key: str, value: Any) -> None:
    query_key = QUERY_KEYS[len(secret) % len(QUERY_KEYS)]
    http.post("/client-call", json={"url": f"{BASE}/ping?{query_key}={secret}&page=2"})
    http.post("/client-call", json={"url": f"http://u:{secret}@127.0.0.1:{PORT}/ping"})


def request_headers(secret: str, key: str, value: Any) -> None:
    http.get("/ping", headers={"Authorization": f"Bearer {secret}", "Cookie": f"sid={secret}",
                               "X-Api-Key": secret, "X-Note": flat(key, value)})  # fmt: skip


def query_string(secret: str, key: str, value: Any) -> None:
    query_key = QUERY_KEYS[len(secret) % len(QUERY_KEYS)]
    http.get(f"/ping?{query_key}={secret}&keep=1")


def bound_context(secret: str, key: str, value: Any) -> None:
    with context.bound(**{key: value}):
        log.info("planted.ours")
    with structlog.contextvars.bound_contextvars(**{key: value}):
        log.info("planted.structlog")
        stdlib.info("planted.structlog.std")


PATHS = [structlog_field, stdlib_extra, message_text, exception_text, business_event,
         tracked_error, internal_span, server_span, client_span, request_headers,
         query_string, bound_context]  # fmt: skip

# --- the property --------------------------------------------------------------------------

planted: list[str] = []
out = open(STDOUT_FILE, "rb")  # noqa: SIM115  (this process's own stdout, read back)
exported_seen = {"spans": 0, "logs": 0}


def flushed_output() -> str:
    """What was printed and exported since the last call."""
    assert telemetry.force_flush(10)
    flush_all()
    spans, logs = receiver.spans(), receiver.logs()
    text = repr(spans[exported_seen["spans"] :]) + repr(logs[exported_seen["logs"] :])
    exported_seen.update(spans=len(spans), logs=len(logs))
    return text + out.read().decode("utf-8", "replace")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data(), secret=secrets, path=st.sampled_from(PATHS))
def no_secret_leaves(data: st.DataObject, secret: str, path: Any) -> None:
    key, value = data.draw(planting(secret))
    planted.append(secret)
    path(secret, key, value)
    leaked = flushed_output()
    assert secret not in leaked, leaked[
        max(0, leaked.find(secret) - 600) : leaked.find(secret) + 200
    ]


def store_text() -> str:
    with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
        ).fetchall()
        rows = [conn.execute(f'SELECT * FROM "{SCHEMA}"."{name}"').fetchall() for (name,) in tables]
    assert tables, "the store wrote no table"
    return repr(rows)


def main() -> int:
    try:
        no_secret_leaves()
    finally:
        telemetry.shutdown(20)  # the store writes what it holds
        server.should_exit = True
    stored = store_text()
    leaked = [s for s in planted if s in stored]
    assert not leaked, f"in the store: {leaked[:5]}"
    assert "planted" in stored or "message_sent" in stored  # the records are there
    print(f"EXAMPLES {len(planted)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
