"""A FastAPI app with the health router, for the end-to-end health tests.

Its dependencies come from the environment: ``HEALTH_DB_URL`` (PostgreSQL),
``HEALTH_REDIS_URL`` (Redis, possibly a closed port) and ``HEALTH_TELEGRAM_URL``
(the local stand-in for Telegram, with a token in its path).
"""

import os

import redis
import sqlalchemy as sa
from fastapi import FastAPI

from chatai_otel import HealthChecker, health_router

engine = sa.create_engine(os.environ["HEALTH_DB_URL"], pool_size=2)
checker = HealthChecker()
checker.add_database(engine)
checker.add_redis(redis.Redis.from_url(os.environ["HEALTH_REDIS_URL"]), timeout=0.5)
checker.add_http("telegram", os.environ["HEALTH_TELEGRAM_URL"])
checker.add_system(disk_threshold=100, memory_threshold=100)

app = FastAPI()
app.include_router(health_router(checker))


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/db")
def db() -> dict[str, int]:
    """The app's own query: instrumented as usual (only the health checks' queries are not)."""
    with engine.connect() as conn:
        return {"value": conn.execute(sa.text("SELECT 42")).scalar_one()}
