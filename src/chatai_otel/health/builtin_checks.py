"""The built-in checks: the database (``SELECT 1`` and pool figures), Redis, an HTTP
dependency (its URL and headers never in a response or a log line) and the host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from chatai_otel.health.off_loop import OneThread, describe
from chatai_otel.health.report import CheckOutcome, HealthStatus
from chatai_otel.redaction import REDACTED, scrub_text

# --- built-in checks --------------------------------------------------------------------------


class DatabaseCheck:
    """``SELECT 1`` through an SQLAlchemy engine (sync or async), with pool figures.

    On PostgreSQL it also reports the client connections from ``pg_stat_activity``
    (total and active, as the seed did) and ``max_connections``. A sync engine
    runs on a thread; an async engine is awaited on the loop.
    """

    _PG_STATS = (
        "SELECT count(*), count(*) FILTER (WHERE state = 'active'), "
        "current_setting('max_connections')::int "
        "FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )

    def __init__(self, engine: Any, *, name: str = "database") -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        self.engine = engine
        self._is_async = isinstance(engine, AsyncEngine)
        self._thread = OneThread(name)

    async def __call__(self) -> CheckOutcome:
        if self._is_async:
            details = await self._probe_async()
        else:
            details = await self._thread.run(self._probe_sync)
        details.update(self._pool_figures())
        details["dialect"] = self.engine.dialect.name
        return CheckOutcome(HealthStatus.HEALTHY, details)

    def _probe_sync(self) -> dict[str, Any]:
        from sqlalchemy import text

        started = time.perf_counter()
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
            details: dict[str, Any] = {"connection_time_seconds": time.perf_counter() - started}
            if self.engine.dialect.name == "postgresql":
                details.update(_pg_figures(conn.execute(text(self._PG_STATS)).one()))
        return details

    async def _probe_async(self) -> dict[str, Any]:
        from sqlalchemy import text

        started = time.perf_counter()
        async with self.engine.connect() as conn:
            (await conn.execute(text("SELECT 1"))).scalar_one()
            details: dict[str, Any] = {"connection_time_seconds": time.perf_counter() - started}
            if self.engine.dialect.name == "postgresql":
                details.update(_pg_figures((await conn.execute(text(self._PG_STATS))).one()))
        return details

    def _pool_figures(self) -> dict[str, Any]:
        """Size and use of the engine's pool (read after our own connection went back)."""
        pool = self.engine.pool
        figures: dict[str, Any] = {"pool_class": type(pool).__name__}
        for key, method in (
            ("pool_size", "size"),
            ("pool_checked_out", "checkedout"),
            ("pool_checked_in", "checkedin"),
            ("pool_overflow", "overflow"),
        ):
            reader = getattr(pool, method, None)
            if callable(reader):
                with contextlib.suppress(Exception):
                    figures[key] = int(reader())
        return figures


def _pg_figures(row: Any) -> dict[str, Any]:
    total, active, maximum = row
    return {
        "total_connections": int(total),
        "active_connections": int(active),
        "max_connections": int(maximum),
    }


class RedisCheck:
    """``PING`` plus a few ``INFO`` fields from a ``redis.Redis`` or ``redis.asyncio.Redis``."""

    _FIELDS = ("redis_version", "used_memory_human", "connected_clients", "uptime_in_seconds")

    def __init__(self, client: Any, *, name: str = "redis") -> None:
        self.client = client
        self._is_async = _is_async_redis(client)
        self._thread = OneThread(name)

    async def __call__(self) -> CheckOutcome:
        if self._is_async:
            started = time.perf_counter()
            await self.client.ping()
            ping_time = time.perf_counter() - started
            info = await self.client.info()
        else:
            ping_time, info = await self._thread.run(self._probe_sync)
        details: dict[str, Any] = {"ping_time_seconds": ping_time}
        for key in self._FIELDS:
            if key in info:
                details["used_memory" if key == "used_memory_human" else key] = info[key]
        return CheckOutcome(HealthStatus.HEALTHY, details)

    def _probe_sync(self) -> tuple[float, Mapping[str, Any]]:
        started = time.perf_counter()
        self.client.ping()
        ping_time = time.perf_counter() - started
        return ping_time, self.client.info()


def _is_async_redis(client: Any) -> bool:
    try:
        from redis.asyncio import Redis as AsyncRedis
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        if isinstance(client, AsyncRedis | AsyncRedisCluster):
            return True
    except ImportError:  # pragma: no cover - redis is an optional dependency
        pass
    return type(client).__module__.startswith("redis.asyncio")


class _HttpxUrlFilter(logging.Filter):
    """Keeps the URLs of HTTP health checks out of httpx's own ``HTTP Request: ...`` log line."""

    def __init__(self) -> None:
        super().__init__()
        self.replacements: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.replacements and isinstance(record.args, tuple):
            record.args = tuple(
                self.replacements.get(str(arg), arg) if arg is not None else arg
                for arg in record.args
            )
        return True


_httpx_filter = _HttpxUrlFilter()


class HttpCheck:
    """A request to an HTTP dependency (OpenAI, Telegram, ...) that must answer as expected.

    The expected status is healthy; a 5xx, a connection error or a timeout is
    unhealthy; any other status is degraded (reachable, but not as expected:
    a 401 says the key is wrong). The response and the logs show only
    ``target`` (scheme, host, port): tokens live in paths (Telegram's
    ``/bot<token>/``), query strings and headers, so none of those are echoed,
    and every part of them is also removed from error texts.
    """

    def __init__(
        self,
        url: str,
        *,
        expected_status: int | Iterable[int] = 200,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        timeout: float | None = None,
        verify: bool = True,
        name: str = "http",
    ) -> None:
        import httpx

        self.url = url
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.expected = (
            frozenset({expected_status})
            if isinstance(expected_status, int)
            else frozenset(expected_status)
        )
        self.timeout = timeout
        self.verify = verify
        self.target = _safe_target(url)
        self._secrets = _secret_parts(url, self.headers)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        _httpx_filter.replacements[str(httpx.URL(url))] = f"{self.target}/{REDACTED}"
        logger = logging.getLogger("httpx")
        if _httpx_filter not in logger.filters:
            logger.addFilter(_httpx_filter)

    def redact(self, text: str) -> str:
        """``text`` without any part of the URL or header values, then scrubbed by shape."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return scrub_text(text)

    async def __call__(self) -> CheckOutcome:
        client = await self._get_client()
        started = time.perf_counter()
        try:
            response = await client.request(self.method, self.url, headers=self.headers)
        except Exception as exc:
            text, kind = describe(exc, self.redact)
            return CheckOutcome(
                HealthStatus.UNHEALTHY, {"target": self.target}, error=text, error_type=kind
            )
        elapsed = time.perf_counter() - started
        code = response.status_code
        details = {"target": self.target, "status_code": code, "response_time_seconds": elapsed}
        if code in self.expected:
            return CheckOutcome(HealthStatus.HEALTHY, details)
        status = HealthStatus.UNHEALTHY if code >= 500 else HealthStatus.DEGRADED
        return CheckOutcome(status, details, f"unexpected HTTP status {code}", str(code))

    async def _get_client(self) -> Any:
        """One client per loop, built on a thread: loading the CA bundle blocks for ~20 ms."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            timeout = self.timeout if self.timeout is not None else 5.0
            self._client = await asyncio.to_thread(
                httpx.AsyncClient, timeout=timeout, verify=self.verify, follow_redirects=False
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await client.aclose()


def _safe_target(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the only part of it that is ever shown."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _secret_parts(url: str, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every string that could carry a credential: the URL and its pieces, header values."""
    parts = urllib.parse.urlsplit(url)
    found: set[str] = {url}
    if parts.password:
        found.add(parts.password)
    if parts.username:
        found.add(parts.username)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
    found.update(p for p in (parts.path, parts.query, path_and_query) if len(p) > 1)
    found.update(s for s in parts.path.split("/") if len(s) >= 8)
    for _key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if len(value) >= 4:
            found.add(value)
            found.add(urllib.parse.quote(value, safe=""))
    for value in headers.values():
        if len(value) >= 4:
            found.add(value)
            found.update(word for word in value.split() if len(word) >= 8)
    # Longest first, so a URL is replaced whole before its pieces are.
    return tuple(sorted(found, key=len, reverse=True))


class SystemCheck:
    """CPU, memory, disk and load of the host through psutil, without blocking.

    CPU is the percentage since the previous sample (``cpu_percent(interval=None)``,
    primed when the check is created), not a one-second measurement. psutil runs
    on a thread: ``disk_usage`` is a ``statvfs`` that can hang on a dead network
    mount. Above the seed's thresholds (disk > 90 %, memory > 85 %) the host is
    degraded. The last reading also feeds the ``system.*`` gauges.
    """

    def __init__(
        self,
        *,
        disk_path: str = "/",
        disk_threshold: float = 90.0,
        memory_threshold: float = 85.0,
        cpu_threshold: float | None = None,
        name: str = "system",
    ) -> None:
        import psutil

        self.disk_path = disk_path
        self.disk_threshold = disk_threshold
        self.memory_threshold = memory_threshold
        self.cpu_threshold = cpu_threshold
        self.last_reading: Mapping[str, Any] | None = None
        self._thread = OneThread(name)
        psutil.cpu_percent(interval=None)  # the first sample; later calls measure from here

    async def __call__(self) -> CheckOutcome:
        reading = await self._thread.run(self._read)
        self.last_reading = reading
        reasons = []
        if reading["disk_usage_percent"] > self.disk_threshold:
            reasons.append(
                f"disk usage {reading['disk_usage_percent']:.1f}% > {self.disk_threshold:g}%"
            )
        if reading["memory_percent"] > self.memory_threshold:
            reasons.append(
                f"memory usage {reading['memory_percent']:.1f}% > {self.memory_threshold:g}%"
            )
        if self.cpu_threshold is not None and reading["cpu_percent"] > self.cpu_threshold:
            reasons.append(f"cpu usage {reading['cpu_percent']:.1f}% > {self.cpu_threshold:g}%")
        details = dict(reading)
        if reasons:
            details["degraded_reasons"] = reasons
            return CheckOutcome(HealthStatus.DEGRADED, details, error="; ".join(reasons))
        return CheckOutcome(HealthStatus.HEALTHY, details)

    def _read(self) -> dict[str, Any]:
        import psutil

        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        reading: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "cpu_count": psutil.cpu_count(),
            "memory_percent": memory.percent,
            "disk_usage_percent": disk.percent,
            "disk_path": self.disk_path,
            "load_average": None,
        }
        with contextlib.suppress(AttributeError, OSError):
            reading["load_average"] = [round(v, 2) for v in psutil.getloadavg()]
        return reading
