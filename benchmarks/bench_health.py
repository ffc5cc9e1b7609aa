"""Health checks: the seed's /health/detailed next to chatai-otel's, side by side, interleaved.

Both check the same real dependencies: PostgreSQL (127.0.0.1:5432, db ``test``), Redis
(127.0.0.1:6379), and two external APIs played by a local HTTP server in its own process
that answers after 50 ms (OpenAI and Telegram cannot run here). Arms:

* ``seed``          — the seed's HealthChecker as written: checks one after another, the sync
  database session on the event loop, a new httpx client per call, ``cpu_percent(interval=1)``;
* ``chatai``        — ``HealthChecker`` with the cache off (``cache_ttl=0``): every request runs
  every check, concurrently;
* ``chatai-cached`` — the same with the default 2 s cache (what a probe storm meets).

Per arm and round: the latency of one ``/health/detailed`` (served in-process through the
app's ASGI interface), the largest event-loop lag while it ran (a 5 ms ticker), and a storm
of concurrent probes: its wall time and how many ``SELECT 1`` reached the database.

    python -m benchmarks health [--rounds N] [--storm N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

STANDIN = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        time.sleep(0.05)
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
s = ThreadingHTTPServer(("127.0.0.1", 0), H); s.daemon_threads = True
print(s.server_address[1], flush=True); s.serve_forever()
"""
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
ARMS = ("seed", "chatai", "chatai-cached")


def seed_app(engine: Any, redis_client: Any, services: dict[str, str]) -> Any:
    """The seed's /health/detailed (docs: System Health Monitoring), kept as it is written."""
    import httpx
    import psutil
    from fastapi import FastAPI
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    session_local = sessionmaker(bind=engine)

    class SeedHealthChecker:
        async def check_database_health(self) -> dict[str, Any]:
            try:
                start_time = time.time()
                db = session_local()
                try:
                    db.execute(text("SELECT 1")).fetchone()
                    connection_time = time.time() - start_time
                    stats = db.execute(
                        text(
                            "SELECT COUNT(*) as total_connections, SUM(CASE WHEN state = 'active' "
                            "THEN 1 ELSE 0 END) as active_connections FROM pg_stat_activity"
                        )
                    ).fetchone()
                    return {
                        "status": "healthy",
                        "connection_time_seconds": connection_time,
                        "total_connections": stats[0] if stats else 0,
                        "active_connections": stats[1] if stats else 0,
                    }
                finally:
                    db.close()
            except Exception as e:
                return {"status": "unhealthy", "error": str(e)}

        async def check_redis_health(self) -> dict[str, Any]:
            try:
                start_time = time.time()
                await redis_client.ping()
                ping_time = time.time() - start_time
                info = await redis_client.info()
                return {
                    "status": "healthy",
                    "ping_time_seconds": ping_time,
                    "used_memory": info.get("used_memory_human", "unknown"),
                    "connected_clients": info.get("connected_clients", 0),
                }
            except Exception as e:
                return {"status": "unhealthy", "error": str(e)}

        async def check_external_services_health(self) -> dict[str, Any]:
            results: dict[str, Any] = {}
            for service_name, url in services.items():
                try:
                    start_time = time.time()
                    async with httpx.AsyncClient() as client:
                        response = await client.get(url, timeout=5.0)
                        response_time = time.time() - start_time
                    results[service_name] = {
                        "status": "healthy" if response.status_code == 200 else "degraded",
                        "response_time_seconds": response_time,
                        "status_code": response.status_code,
                    }
                except Exception as e:
                    results[service_name] = {"status": "unhealthy", "error": str(e)}
            return results

        async def get_system_metrics(self) -> dict[str, Any]:
            return {
                "cpu_percent": psutil.cpu_percent(interval=1),
                "memory_percent": psutil.virtual_memory().percent,
                "disk_usage_percent": psutil.disk_usage("/").percent,
                "load_average": psutil.getloadavg(),
            }

    checker = SeedHealthChecker()
    app = FastAPI()

    @app.get("/health/detailed")
    async def detailed_health_check() -> dict[str, Any]:
        start_time = time.time()
        results: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(),
            "overall_status": "healthy",
            "checks": {},
        }
        results["checks"]["database"] = await checker.check_database_health()
        results["checks"]["redis"] = await checker.check_redis_health()
        results["checks"]["external_services"] = await checker.check_external_services_health()
        results["checks"]["system"] = await checker.get_system_metrics()
        unhealthy = [
            name
            for name, check in results["checks"].items()
            if isinstance(check, dict) and check.get("status") == "unhealthy"
        ]
        if unhealthy:
            results["overall_status"] = "unhealthy"
            results["unhealthy_services"] = unhealthy
        results["check_duration_seconds"] = time.time() - start_time
        return results

    return app


def chatai_app(engine: Any, redis_client: Any, services: dict[str, str], ttl: float) -> Any:
    from fastapi import FastAPI

    from chatai_otel import HealthChecker, health_router
    from chatai_otel.config import load_settings

    checker = HealthChecker(load_settings({}), cache_ttl=ttl, interval=0, timeout=5)
    checker.add_database(engine)
    checker.add_redis(redis_client)
    for name, url in services.items():
        checker.add_http(name, url)
    checker.add_system(disk_threshold=100, memory_threshold=100)
    app = FastAPI()
    app.include_router(health_router(checker, background=False))
    return app


async def measure(
    get: Callable[[], Awaitable[Any]], storm: int, selects: list[str]
) -> dict[str, float]:
    """One call with a loop-lag ticker beside it, then ``storm`` concurrent calls."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    await asyncio.sleep(2.1)  # let any cached result expire, as between two real probes
    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    response = await get()
    latency = time.perf_counter() - started
    stop.set()
    await task
    assert response.status_code == 200, response.text
    selects.clear()
    started = time.perf_counter()
    responses = await asyncio.gather(*(get() for _ in range(storm)))
    storm_time = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    return {
        "latency": latency,
        "max_lag": max(lags, default=latency),
        "storm": storm_time,
        "selects": float(selects.count("SELECT 1")),
    }


async def run(rounds: int, storm: int) -> dict[str, list[dict[str, float]]]:
    import httpx
    import redis.asyncio
    import sqlalchemy as sa

    standin = subprocess.Popen([sys.executable, "-c", STANDIN], stdout=subprocess.PIPE, text=True)
    assert standin.stdout is not None
    port = int(standin.stdout.readline())
    services = {
        "openai": f"http://127.0.0.1:{port}/v1/models",
        "telegram": f"http://127.0.0.1:{port}/botTOKEN/getMe",
    }
    engine = sa.create_engine(PG_URL, pool_size=5)
    selects: list[str] = []
    sa.event.listen(
        engine, "before_cursor_execute", lambda _c, _cur, statement, *_: selects.append(statement)
    )
    redis_client = redis.asyncio.Redis.from_url(REDIS_URL)
    apps = {
        "seed": seed_app(engine, redis_client, services),
        "chatai": chatai_app(engine, redis_client, services, ttl=0.0),
        "chatai-cached": chatai_app(engine, redis_client, services, ttl=2.0),
    }
    clients = {
        arm: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://app", timeout=600
        )
        for arm, app in apps.items()
    }
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    try:
        for arm in ARMS:  # warm-up: imports, first connections, psutil's first sample
            await clients[arm].get("/health/detailed")
        for number in range(rounds):
            order = ARMS[number % len(ARMS) :] + ARMS[: number % len(ARMS)]
            for arm in order:
                client = clients[arm]
                figures = await measure(lambda c=client: c.get("/health/detailed"), storm, selects)
                results[arm].append(figures)
                print(f"round {number + 1} {arm}: {figures}", file=sys.stderr, flush=True)
    finally:
        for client in clients.values():
            await client.aclose()
        await redis_client.aclose()
        engine.dispose()
        standin.kill()
        standin.wait()
    return results


def table(results: dict[str, list[dict[str, float]]], rounds: int, storm: int) -> str:
    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in results[arm])

    base = median("seed", "latency")
    lines = [
        f"Medians of {rounds} interleaved rounds; external APIs answer after 50 ms; "
        f"storm = {storm} concurrent probes.",
        "",
        "| arm | /health/detailed | vs seed | max event-loop lag during it | "
        f"{storm} concurrent probes | SELECT 1 per storm |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        latency = median(arm, "latency")
        lines.append(
            f"| {arm} | {latency * 1000:.1f} ms | {latency / base:.2f}x | "
            f"{median(arm, 'max_lag') * 1000:.1f} ms | {median(arm, 'storm') * 1000:.0f} ms | "
            f"{median(arm, 'selects'):.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks health")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storm", type=int, default=10)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.rounds, args.storm))
    print(table(results, args.rounds, args.storm))
