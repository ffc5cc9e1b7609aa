"""The app of ``bench_web``: one tiny FastAPI app, run four ways (``BENCH_MODE``).

* ``bare``: nothing added.
* ``seed``: the seed's RequestLoggingMiddleware (BaseHTTPMiddleware) and its JSON
  StructuredFormatter, logging request start and completion to stdout.
* ``stock`` / ``chatai``: the same code as ``bare``; the launcher adds telemetry
  (``opentelemetry-instrument`` with the stock distro, or with ours).

It imports nothing of chatai-otel, so the stock arm can run in a virtualenv
without it. ``/chat`` runs one SELECT through SQLAlchemy (``BENCH_DB_URL``,
SQLite by default; PostgreSQL with ``postgresql+psycopg://...``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import create_engine, text

MODE = os.environ.get("BENCH_MODE", "bare")
TABLE = os.environ.get("BENCH_TABLE", "bench_messages")
engine = create_engine(os.environ.get("BENCH_DB_URL", "sqlite:///bench.db"))
with engine.begin() as setup:
    setup.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, body TEXT)"))
    if setup.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar() == 0:
        setup.execute(text(f"INSERT INTO {TABLE} (id, body) VALUES (1, 'hello')"))
QUERY = text(f"SELECT id, body FROM {TABLE} WHERE id = :id")

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/chat")
async def chat() -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(QUERY, {"id": 1}).one()
    return {"id": row.id, "reply": row.body}


if MODE == "seed":
    from starlette.middleware.base import BaseHTTPMiddleware

    class StructuredFormatter(logging.Formatter):
        """The seed's JSON formatter (logging-and-observability.md), unchanged in substance."""

        def format(self, record: logging.LogRecord) -> str:
            log_data = {
                "timestamp": datetime.now(UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "module": record.module,
                "function": record.funcName,
                "line": record.lineno,
            }
            if record.exc_info:
                log_data["exception"] = self.formatException(record.exc_info)
            for key in ("request_id", "method", "url", "path", "query_params", "headers"):
                if hasattr(record, key):
                    log_data[key] = getattr(record, key)
            for key in ("client_ip", "user_agent", "status_code", "duration_seconds"):
                if hasattr(record, key):
                    log_data[key] = getattr(record, key)
            if hasattr(record, "response_size"):
                log_data["response_size"] = record.response_size
            return json.dumps(log_data, ensure_ascii=False, default=str)

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(StructuredFormatter())
    logger = logging.getLogger("chatai.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    class RequestLoggingMiddleware(BaseHTTPMiddleware):
        """The seed's middleware: a uuid per request, start and completion logged as JSON."""

        async def dispatch(self, request: Request, call_next: Any) -> Any:
            request_id = str(uuid.uuid4())
            start_time = time.time()
            logger.info(
                "HTTP_REQUEST_START",
                extra={
                    "request_id": request_id,
                    "method": request.method,
                    "url": str(request.url),
                    "path": request.url.path,
                    "query_params": dict(request.query_params),
                    "headers": dict(request.headers),
                    "client_ip": request.client.host if request.client else None,
                    "user_agent": request.headers.get("User-Agent", ""),
                },
            )
            try:
                response = await call_next(request)
            except Exception as exc:
                logger.error(
                    "HTTP_REQUEST_ERROR",
                    extra={"request_id": request_id, "error_type": type(exc).__name__},
                    exc_info=True,
                )
                raise
            logger.info(
                "HTTP_REQUEST_COMPLETE",
                extra={
                    "request_id": request_id,
                    "status_code": response.status_code,
                    "duration_seconds": time.time() - start_time,
                    "response_size": response.headers.get("content-length", 0),
                },
            )
            response.headers["X-Request-ID"] = request_id
            return response

    app.add_middleware(RequestLoggingMiddleware)
