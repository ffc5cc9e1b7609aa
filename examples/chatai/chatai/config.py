"""The example's own settings, from the environment (telemetry settings are chatai-otel's)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class AppConfig:
    database_url: str
    database_schema: str | None  # a PostgreSQL schema of its own (tests share one database)
    redis_url: str | None
    queue: str  # the Redis list (or in-process queue name) jobs go through
    rate_limit: int  # messages per user per minute
    rate_limit_prefix: str  # of the Redis keys counting them
    signup_credit: float  # balance a new user starts with
    frontend_origins: list[str]  # browser origins allowed by CORS (the Next.js frontend)


def _async_url(url: str) -> str:
    """SQLAlchemy's asyncio drivers: aiosqlite for SQLite, psycopg (3) for PostgreSQL."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load() -> AppConfig:
    return AppConfig(
        database_url=_async_url(os.environ.get("DATABASE_URL", "sqlite:///./chatai.db")),
        database_schema=os.environ.get("DATABASE_SCHEMA") or None,
        redis_url=os.environ.get("REDIS_URL") or None,
        queue=os.environ.get("CHATAI_QUEUE", "chatai:jobs"),
        rate_limit=int(os.environ.get("CHATAI_RATE_LIMIT", "30")),
        rate_limit_prefix=os.environ.get("CHATAI_RATE_LIMIT_PREFIX", "chatai:rl"),
        signup_credit=float(os.environ.get("CHATAI_SIGNUP_CREDIT", "0")),
        frontend_origins=[
            origin.strip()
            for origin in os.environ.get(
                "CHATAI_FRONTEND_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000"
            ).split(",")
            if origin.strip()
        ],
    )


config = load()
