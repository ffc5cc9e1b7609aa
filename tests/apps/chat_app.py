"""A small ChatAI-like backend for the web-layer tests: PostgreSQL (sync and async), Redis, httpx.

It knows nothing of telemetry except ``bind_user`` and ``get_logger``: run it under
``opentelemetry-instrument`` (our distro instruments it), or set CHAT_APP_BY_HAND=1
to configure with ``import chatai_otel.setup`` + ``instrument_app``.
"""

import os

if os.environ.get("CHAT_APP_BY_HAND"):
    import chatai_otel.setup  # noqa: F401

import httpx
import redis
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException
from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from chatai_otel import bind_user, get_logger

DSN = os.environ.get("CHAT_APP_DSN", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLE = os.environ["CHAT_APP_TABLE"]
KEY = os.environ.get("CHAT_APP_KEY", TABLE)

engine = create_engine(DSN, pool_size=2)
async_engine = create_async_engine(DSN, pool_size=2)
cache = redis.Redis(host="127.0.0.1", port=6379)
async_cache = aioredis.Redis(host="127.0.0.1", port=6379)
log = get_logger("chat_app")
tracer = trace.get_tracer("chat_app")

with engine.begin() as conn:
    conn.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, body TEXT)"))
    conn.execute(text(f"INSERT INTO {TABLE} VALUES (1, 'hello') ON CONFLICT DO NOTHING"))

app = FastAPI()
if os.environ.get("CHAT_APP_BY_HAND"):
    from chatai_otel import instrument_app

    instrument_app(app)


class Message(BaseModel):
    text: str
    dialog_id: int


async def current_user(x_user: str = Header(default="")) -> str:
    """Stands in for the auth dependency of the real backend."""
    if x_user:
        bind_user(x_user, session_id=f"session-of-{x_user}")
    return x_user


def sync_current_user(x_user: str = Header(default="")) -> str:
    """The same from a sync dependency (FastAPI runs it in a worker thread)."""
    if x_user:
        bind_user(x_user, session_id=f"session-of-{x_user}")
    return x_user


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, object]:
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT body FROM {TABLE} WHERE id = :id"), {"id": 1}).one()
    cached = cache.get(f"{KEY}:{item_id}")
    log.info("item.read", item_id=item_id)
    return {"item": item_id, "body": row.body, "cached": cached}


@app.get("/async-db")
async def async_db() -> dict[str, object]:
    async with async_engine.connect() as conn:
        row = (await conn.execute(text(f"SELECT body FROM {TABLE} WHERE id = 1"))).one()
    await async_cache.set(f"{KEY}:async", "1", ex=60)
    return {"body": row.body}


@app.post("/messages")
async def post_message(message: Message) -> dict[str, object]:
    return {"ok": True, "dialog_id": message.dialog_id}


@app.get("/db-error")
async def db_error() -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT * FROM table_that_does_not_exist_at_all"))


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("exploded with Authorization: Bearer sk-live-abcdefghijklmnop")


@app.get("/upstream")
async def upstream() -> None:
    """A deliberate 502: the app's own answer when a dependency fails."""
    raise HTTPException(502, "upstream unavailable")


@app.get("/whoami")
async def whoami(user: str = Depends(current_user)) -> dict[str, str]:
    log.info("whoami.answered")
    return {"user": user}


@app.get("/whoami-sync")
async def whoami_sync(user: str = Depends(sync_current_user)) -> dict[str, str]:
    return {"user": user}


@app.get("/outgoing")
async def outgoing() -> dict[str, object]:
    port = os.environ["CHAT_APP_PORT"]
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/ping")
    return {"status": answer.status_code}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "healthy"}


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@app.get("/metrics")
async def prometheus_metrics() -> str:
    return "# nothing"


class Planted(BaseModel):
    secret: str


# Query names of signed URLs (semantic conventions' defaults, AWS SigV4) and ours.
SIGNED_QUERY_KEYS = (
    "sig",
    "Signature",
    "AWSAccessKeyId",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "access_token",
    "api_key",
)


def planted_attributes(secret: str) -> dict[str, str]:
    """A secret under secret keys and in secret shapes under plain keys."""
    return {
        "password": secret,
        "client_secret": secret,
        "authorization": secret,
        "note.bearer": f"Bearer {secret}",
        "note.basic": f"Basic {secret}",
        "note.jwt": f"eyJhbGciOiJIUzI1NiJ9.eyJ{secret}.{secret}",
        "note.dsn": f"postgresql://app:{secret}@db:5432/chat",
        "note.download": f"https://cdn.example.com/f?api_key={secret}&size=2",
        "note.link": f"https://cdn.example.com/f?access_token={secret}",
    }


@app.post("/planted")
async def planted(body: Planted) -> dict[str, object]:
    """App code putting a secret (sent in the body, never in a URL) on every kind of span."""
    secret = body.secret
    attributes = planted_attributes(secret)
    server = trace.get_current_span()
    for key, value in attributes.items():
        server.set_attribute(key, value)
    server.add_event("planted.on.server", attributes)
    with tracer.start_as_current_span("planted.internal", attributes=attributes) as span:
        span.set_attribute("later.password", secret)
        span.set_attributes({"later.note": f"Bearer {secret}"})
        span.add_event("planted.on.internal", attributes)
        span.add_link(server.get_span_context(), attributes)
        query = "&".join(f"{key}={secret}" for key in SIGNED_QUERY_KEYS)
        signed = f"http://127.0.0.1:{os.environ['CHAT_APP_PORT']}/ping?{query}&keep=visible"
        async with httpx.AsyncClient() as client:
            answer = await client.get(signed)
        log.info("planted.fetched", url=signed)
    return {"status": answer.status_code}
