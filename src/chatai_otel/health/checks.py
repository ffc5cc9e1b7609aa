"""Health checks: concurrent, bounded by timeouts, cached, and exported as metrics.

The seed checked the database, Redis, external services and the host one after
another and blocked the event loop for a whole second in
``psutil.cpu_percent(interval=1)``. Here:

* every check runs concurrently with the others and has its own timeout, so
  ``/health/detailed`` answers within the slowest timeout, never their sum;
* synchronous clients (a sync SQLAlchemy engine, ``redis.Redis``, psutil) run
  on a thread, at most one per check: a hung client is joined by the next run
  instead of piling up threads, and the event loop never waits on it;
* each result is cached for ``CHATAI_OTEL_HEALTH_CACHE_TTL`` seconds and
  concurrent callers share one in-flight run, so a probe storm costs one
  ``SELECT 1``;
* the latest results are metrics (``chatai.health.status``,
  ``chatai.health.check.duration`` and the host gauges of the system check);
  the observable callbacks only read the cached results, they never do I/O;
* the checks themselves create no spans (instrumentation is suppressed inside
  them), and an HTTP dependency's URL and headers never appear in a response
  or a log line: only its scheme, host and port do.

Use::

    checker = HealthChecker()
    checker.add_database(engine)             # sync or async SQLAlchemy engine
    checker.add_redis(redis_client)          # redis.Redis or redis.asyncio.Redis
    checker.add_http("openai", "https://api.openai.com/v1/models",
                     headers={"Authorization": f"Bearer {key}"})
    checker.add_system()
    app.include_router(health_router(checker))

This module sits on top (with ``web`` and ``cli``): it imports config,
redaction, logs and bootstrap, and FastAPI, httpx, SQLAlchemy, redis and psutil
only when the check or router that needs them is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import metrics as metrics_api
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from chatai_otel import metric_names
from chatai_otel.bootstrap import current
from chatai_otel.config import Settings, load_settings
from chatai_otel.logs.structlog_bridge import get_logger
from chatai_otel.providers import distro_version
from chatai_otel.redaction import REDACTED, scrub, scrub_text

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = [
    "CheckOutcome",
    "CheckResult",
    "DatabaseCheck",
    "HealthChecker",
    "HealthReport",
    "HealthStatus",
    "HttpCheck",
    "RedisCheck",
    "SystemCheck",
    "health_router",
]

T = TypeVar("T")
_LOGGER_NAME = "chatai_otel.health"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ERROR_TEXT_LIMIT = 300

# Metric names, units and attributes: in metric_names, with every other metric of ours.
STATUS_METRIC = metric_names.HEALTH_STATUS
STATUS_UNIT = metric_names.HEALTH_STATUS_UNIT
DURATION_METRIC = metric_names.HEALTH_CHECK_DURATION
CHECK_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_NAME
REQUIRED_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_REQUIRED
STATUS_ATTRIBUTE = metric_names.ATTR_HEALTH_CHECK_STATUS
DURATION_BUCKETS = metric_names.HEALTH_CHECK_DURATION_BUCKETS


class HealthStatus(enum.StrEnum):
    """The state of one check or of the whole service."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def value_for_metric(self) -> float:
        """The ``chatai.health.status`` encoding: 1 healthy, 0.5 degraded, 0 unhealthy."""
        return {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}[self.value]


@dataclass(frozen=True)
class CheckOutcome:
    """What a check function returns: a status, figures worth showing, and an error text."""

    status: HealthStatus = HealthStatus.HEALTHY
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None


# Keys a check's details may not override in the JSON of a check.
_RESERVED = frozenset(
    {"status", "required", "duration_seconds", "checked_at", "error", "error_type"}
)


@dataclass(frozen=True)
class CheckResult:
    """The result of one run of one check."""

    name: str
    status: HealthStatus
    required: bool
    duration: float  # seconds
    checked_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of one check: status and timing first, then the check's own figures."""
        body: dict[str, Any] = {
            "status": self.status.value,
            "required": self.required,
            "duration_seconds": round(self.duration, 6),
            "checked_at": self.checked_at.isoformat(),
        }
        if self.error is not None:
            body["error"] = self.error
            body["error_type"] = self.error_type
        for key, value in self.details.items():
            if key not in _RESERVED:
                body[key] = value
        return body


@dataclass(frozen=True)
class HealthReport:
    """The results of one ``HealthChecker.run`` and what they add up to.

    The overall status is *unhealthy* when a required check is unhealthy,
    *degraded* when any check is degraded or an optional one (an external API,
    the host) is unhealthy, else *healthy*. *Ready* means no required check is
    unhealthy: a degraded service keeps taking traffic.
    """

    results: Mapping[str, CheckResult]
    duration: float  # seconds
    timestamp: datetime
    version: str

    @property
    def status(self) -> HealthStatus:
        if any(r.required and r.status is HealthStatus.UNHEALTHY for r in self.results.values()):
            return HealthStatus.UNHEALTHY
        if any(r.status is not HealthStatus.HEALTHY for r in self.results.values()):
            return HealthStatus.DEGRADED
        return HealthStatus.HEALTHY

    @property
    def ready(self) -> bool:
        return not any(
            r.required and r.status is HealthStatus.UNHEALTHY for r in self.results.values()
        )

    def names_with(self, status: HealthStatus) -> list[str]:
        return [name for name, r in self.results.items() if r.status is status]

    def as_dict(self) -> dict[str, Any]:
        """The body of ``/health/detailed`` (the seed's keys, plus degraded checks and timing)."""
        return {
            "overall_status": self.status.value,
            "timestamp": self.timestamp.isoformat(),
            "version": self.version,
            "checks": {name: r.as_dict() for name, r in self.results.items()},
            "unhealthy_services": self.names_with(HealthStatus.UNHEALTHY),
            "degraded_services": self.names_with(HealthStatus.DEGRADED),
            "check_duration_seconds": round(self.duration, 6),
        }


# --- running synchronous clients off the event loop ----------------------------------------


class _OneThread:
    """Runs a blocking call on a daemon thread, at most one at a time per owner.

    A call still running when the next run starts (a hung client outlived its
    timeout) is joined instead of a new thread being started, so a dead
    dependency holds one thread, not one per probe. Daemon threads never hold
    up interpreter exit; the default executor's threads would.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._pending: asyncio.Future[Any] | None = None

    async def run(self, func: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = loop.create_future()
            pending.add_done_callback(_retrieve_exception)
            self._pending = pending
            context = contextvars.copy_context()
            threading.Thread(
                target=_run_and_deliver,
                args=(context, func, loop, pending),
                daemon=True,
                name=f"chatai-health-{self._name}",
            ).start()
        result: T = await asyncio.shield(pending)
        return result


def _run_and_deliver(
    context: contextvars.Context,
    func: Callable[[], Any],
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
) -> None:
    try:
        result = context.run(func)
    except BaseException as exc:  # delivered to the awaiting check, never lost
        _deliver(loop, future, None, exc)
    else:
        _deliver(loop, future, result, None)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed while the call ran
        loop.call_soon_threadsafe(settle)


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark an exception as seen when every waiter already gave up (timed out)."""
    if not future.cancelled():
        future.exception()


def _describe(exc: BaseException, redact: Callable[[str], str] = scrub_text) -> tuple[str, str]:
    """A short, scrubbed ``(error, error_type)`` for a failed check."""
    kind = type(exc).__name__
    try:
        message = redact(str(exc)).strip().splitlines()
    except Exception:  # an exception whose str() fails still makes a result
        message = []
    text = f"{kind}: {message[0]}" if message and message[0] else kind
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[: _ERROR_TEXT_LIMIT - 3] + "..."
    return text, kind


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
        self._thread = _OneThread(name)

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
        self._thread = _OneThread(name)

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
            text, kind = _describe(exc, self.redact)
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
        self._thread = _OneThread(name)
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


# --- the checker ---------------------------------------------------------------------------


@dataclass
class _Check:
    name: str
    func: Callable[[], Awaitable[Any]]
    timeout: float
    required: bool
    impl: Any = None  # the built-in check object, when there is one
    last: CheckResult | None = None
    last_finished: float = 0.0  # monotonic
    inflight: asyncio.Task[CheckResult] | None = None


class HealthChecker:
    """Pluggable health checks, run concurrently with timeouts, cached, exported as metrics.

    A check is a callable (async, or sync and then run on a thread) returning a
    :class:`CheckOutcome`, a mapping (its figures; ``status`` and ``error`` keys
    are honoured, as in the seed's dicts), a bool, or None (healthy). An
    exception or a timeout makes it unhealthy, with a scrubbed error text.
    ``required`` checks decide readiness; optional ones only degrade.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        cache_ttl: float | None = None,
        timeout: float | None = None,
        interval: float | None = None,
        version: str | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if settings is None:
            telemetry = current()
            settings = telemetry.settings if telemetry is not None else load_settings()
        self.settings = settings
        self.cache_ttl = settings.health_cache_ttl if cache_ttl is None else cache_ttl
        self.timeout = settings.health_timeout if timeout is None else timeout
        self.interval = settings.health_interval if interval is None else interval
        self.version = settings.service_version if version is None else version
        self._checks: dict[str, _Check] = {}
        self._background: asyncio.Task[None] | None = None
        self._instruments = _instruments_for(meter_provider)
        self._instruments.checkers.append(self)

    # --- registration ----------------------------------------------------------------------

    def add(
        self,
        name: str,
        check: Callable[[], Any],
        *,
        timeout: float | None = None,
        required: bool = True,
    ) -> HealthChecker:
        """Register a check under ``name`` (letters, digits, ``_.-``; a metric attribute value)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"health check name {name!r}: expected 1-64 of A-Z a-z 0-9 _ . -")
        if name in self._checks:
            raise ValueError(f"health check {name!r} is already registered")
        wait = self.timeout if timeout is None else timeout
        if not wait > 0:
            raise ValueError(f"health check {name!r}: timeout must be > 0 seconds, got {wait!r}")
        func = check if _is_async_callable(check) else _threaded(name, check)
        self._checks[name] = _Check(name, func, float(wait), required, impl=check)
        return self

    def add_database(
        self,
        engine: Any,
        name: str = "database",
        *,
        timeout: float | None = None,
        required: bool = True,
    ) -> HealthChecker:
        """``SELECT 1`` on a sync or async SQLAlchemy engine, plus pool and PostgreSQL figures."""
        return self.add(name, DatabaseCheck(engine, name=name), timeout=timeout, required=required)

    def add_redis(
        self,
        client: Any,
        name: str = "redis",
        *,
        timeout: float | None = None,
        required: bool = True,
    ) -> HealthChecker:
        """``PING`` and ``INFO`` on a ``redis.Redis`` or ``redis.asyncio.Redis``."""
        return self.add(name, RedisCheck(client, name=name), timeout=timeout, required=required)

    def add_http(
        self,
        name: str,
        url: str,
        *,
        expected_status: int | Iterable[int] = 200,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        timeout: float | None = None,
        required: bool = False,
        verify: bool = True,
    ) -> HealthChecker:
        """An external HTTP dependency; optional by default (its outage degrades, not unreadies)."""
        wait = self.timeout if timeout is None else timeout
        check = HttpCheck(
            url,
            expected_status=expected_status,
            headers=headers,
            method=method,
            timeout=wait,
            verify=verify,
            name=name,
        )
        return self.add(name, check, timeout=wait, required=required)

    def add_system(
        self,
        name: str = "system",
        *,
        disk_path: str = "/",
        disk_threshold: float | None = None,
        memory_threshold: float | None = None,
        cpu_threshold: float | None = None,
        timeout: float | None = None,
        required: bool = False,
    ) -> HealthChecker:
        """Host CPU, memory, disk and load; degraded above the thresholds (settings by default)."""
        check = SystemCheck(
            disk_path=disk_path,
            disk_threshold=(
                self.settings.health_disk_threshold if disk_threshold is None else disk_threshold
            ),
            memory_threshold=(
                self.settings.health_memory_threshold
                if memory_threshold is None
                else memory_threshold
            ),
            cpu_threshold=cpu_threshold,
            name=name,
        )
        return self.add(name, check, timeout=timeout, required=required)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    @property
    def required_names(self) -> list[str]:
        return [c.name for c in self._checks.values() if c.required]

    # --- running ---------------------------------------------------------------------------

    async def run(self, names: Iterable[str] | None = None, *, fresh: bool = False) -> HealthReport:
        """Run the checks (all, or ``names``) concurrently.

        A failing or hanging check becomes an unhealthy result; only an unknown
        name raises (KeyError). A result younger than the cache TTL is reused
        unless ``fresh``; a check already running (for another caller) is
        joined, not started again.
        """
        started = time.perf_counter()
        selected = list(self._checks.values())
        if names is not None:
            wanted = set(names)
            unknown = wanted - set(self._checks)
            if unknown:
                raise KeyError(f"unknown health checks: {', '.join(sorted(unknown))}")
            selected = [c for c in selected if c.name in wanted]
        results = await asyncio.gather(*(self._result_of(c, fresh) for c in selected))
        return HealthReport(
            results={r.name: r for r in results},
            duration=time.perf_counter() - started,
            timestamp=datetime.now(UTC),
            version=self.version,
        )

    async def ready(self) -> HealthReport:
        """Run only the required checks (readiness must not wait for an external API)."""
        return await self.run(self.required_names)

    def last_results(self) -> dict[str, CheckResult]:
        """The latest result of each check that has run (what the metrics report)."""
        return {c.name: c.last for c in list(self._checks.values()) if c.last is not None}

    async def _result_of(self, check: _Check, fresh: bool) -> CheckResult:
        if (
            not fresh
            and check.last is not None
            and time.monotonic() - check.last_finished < self.cache_ttl
        ):
            return check.last
        loop = asyncio.get_running_loop()
        task = check.inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = loop.create_task(self._execute(check), name=f"chatai-health-{check.name}")
            check.inflight = task
        # shield: a caller that goes away (client disconnect) does not cancel the shared run
        return await asyncio.shield(task)

    async def _execute(self, check: _Check) -> CheckResult:
        redact: Callable[[str], str] = getattr(check.impl, "redact", scrub_text)
        started = time.perf_counter()
        outcome: CheckOutcome
        try:
            with suppress_instrumentation():
                async with asyncio.timeout(check.timeout):
                    outcome = _outcome_of(await check.func())
        except TimeoutError:
            outcome = CheckOutcome(
                HealthStatus.UNHEALTHY,
                error=f"timed out after {check.timeout:g} s",
                error_type="timeout",
            )
        except Exception as exc:
            text, kind = _describe(exc, redact)
            outcome = CheckOutcome(HealthStatus.UNHEALTHY, error=text, error_type=kind)
        duration = time.perf_counter() - started
        error = None if outcome.error is None else redact(outcome.error)
        try:
            details = scrub(dict(outcome.details))
        except Exception:
            details = {}
        result = CheckResult(
            name=check.name,
            status=outcome.status,
            required=check.required,
            duration=duration,
            checked_at=datetime.now(UTC),
            details=details,
            error=error,
            error_type=outcome.error_type,
        )
        previous = check.last
        check.last = result
        check.last_finished = time.monotonic()
        self._instruments.record_duration(result)
        _log_transition(previous, result)
        return result

    # --- keeping the metrics fresh ---------------------------------------------------------

    def start(self, interval: float | None = None) -> asyncio.Task[None] | None:
        """Run all checks every ``interval`` seconds in the background (None when interval is 0)."""
        every = self.interval if interval is None else interval
        if every <= 0:
            return None
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(
                self._refresh_forever(every), name="chatai-health-refresh"
            )
        return self._background

    async def stop(self) -> None:
        """Stop the background runs and close the HTTP clients of the checks."""
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for check in list(self._checks.values()):
            close = getattr(check.impl, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    @contextlib.asynccontextmanager
    async def running(self, interval: float | None = None) -> AsyncIterator[None]:
        """``async with checker.running():`` in an app's lifespan: background runs, then cleanup."""
        self.start(interval)
        try:
            yield
        finally:
            await self.stop()

    async def _refresh_forever(self, interval: float) -> None:
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:  # run() does not raise; this is only a last guard
                get_logger(_LOGGER_NAME).exception("health.refresh_failed")
            await asyncio.sleep(interval)


def _is_async_callable(func: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _threaded(name: str, func: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    thread = _OneThread(name)

    async def run_on_thread() -> Any:
        return await thread.run(func)

    return run_on_thread


def _outcome_of(value: Any) -> CheckOutcome:
    """Normalise what a check returned (see :class:`HealthChecker`)."""
    if isinstance(value, CheckOutcome):
        return value
    if value is None or value is True:
        return CheckOutcome(HealthStatus.HEALTHY)
    if value is False:
        return CheckOutcome(HealthStatus.UNHEALTHY, error="check returned False")
    if isinstance(value, Mapping):
        details = dict(value)
        raw_status = details.pop("status", HealthStatus.HEALTHY)
        try:
            status = HealthStatus(raw_status)
        except ValueError:
            return CheckOutcome(
                HealthStatus.UNHEALTHY, details, error=f"check returned status {raw_status!r}"
            )
        error = details.pop("error", None)
        return CheckOutcome(status, details, None if error is None else str(error))
    return CheckOutcome(
        HealthStatus.UNHEALTHY, error=f"check returned {type(value).__name__}, not an outcome"
    )


def _log_transition(previous: CheckResult | None, result: CheckResult) -> None:
    """One log line when a check changes state (or starts out failing), not one per run."""
    before = previous.status if previous is not None else HealthStatus.HEALTHY
    if before is result.status:
        return
    try:
        # Fetched here, not at import: a logger bound before configure() keeps the defaults.
        log = get_logger(_LOGGER_NAME)
        fields: dict[str, Any] = {
            "check": result.name,
            "status": result.status.value,
            "previous_status": before.value if previous is not None else None,
            "required": result.required,
        }
        if result.error is not None:
            fields["error"] = result.error
            fields["error_type"] = result.error_type
        if result.status is HealthStatus.HEALTHY:
            log.info("health.check.recovered", **fields)
        else:
            log.warning("health.check.failed", **fields)
    except Exception:
        pass


# --- metrics -------------------------------------------------------------------------------


class _Instruments:
    """The health metrics of one meter provider, fed by every checker that uses it."""

    def __init__(self, provider: MeterProvider | None) -> None:
        meter = (
            metrics_api.get_meter("chatai_otel.health", distro_version())
            if provider is None
            else provider.get_meter("chatai_otel.health", distro_version())
        )
        # Strong references: a checker reports its last results for the life of the process,
        # even when the code that ran it kept no reference (a worker's one-off check).
        self.checkers: list[HealthChecker] = []
        meter.create_observable_gauge(
            STATUS_METRIC,
            callbacks=[self._observe_status],
            unit=STATUS_UNIT,
            description="Latest result of each health check: 1 healthy, 0.5 degraded, 0 unhealthy.",
        )
        self._duration = meter.create_histogram(
            DURATION_METRIC,
            unit=metric_names.HEALTH_CHECK_DURATION_UNIT,
            description="Duration of each health check run, timeouts included.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_CPU_UTILIZATION,
            callbacks=[self._observe_system("cpu_percent", {})],
            unit="1",
            description="Host CPU use (0-1) since the previous sample, from the system health check.",
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_MEMORY_UTILIZATION,
            callbacks=[
                self._observe_system(
                    "memory_percent", {metric_names.ATTR_SYSTEM_MEMORY_STATE: "used"}
                )
            ],
            unit="1",
            description="Host memory in use (0-1), from the system health check.",
        )
        meter.create_observable_gauge(
            metric_names.SYSTEM_FILESYSTEM_UTILIZATION,
            callbacks=[self._observe_disk],
            unit="1",
            description="Disk space in use (0-1) of the checked mount point.",
        )
        for index, window in enumerate(("1m", "5m", "15m")):
            meter.create_observable_gauge(
                metric_names.SYSTEM_CPU_LOAD_AVERAGE.format(window=window),
                callbacks=[self._observe_load(index)],
                unit="{thread}",
                description=f"Host load average over {window}, from the system health check.",
            )

    def record_duration(self, result: CheckResult) -> None:
        try:
            attributes: dict[str, Any] = {
                CHECK_ATTRIBUTE: result.name,
                STATUS_ATTRIBUTE: result.status.value,
            }
            if result.error_type is not None and result.status is HealthStatus.UNHEALTHY:
                attributes["error.type"] = result.error_type
            self._duration.record(result.duration, attributes)
        except Exception:
            pass

    def _results(self) -> Iterator[CheckResult]:
        for checker in list(self.checkers):
            yield from checker.last_results().values()

    def _readings(self) -> Iterator[Mapping[str, Any]]:
        for checker in list(self.checkers):
            for check in list(checker._checks.values()):
                reading = getattr(check.impl, "last_reading", None)
                if isinstance(check.impl, SystemCheck) and reading is not None:
                    yield reading

    def _observe_status(self, _options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [
                Observation(
                    r.status.value_for_metric,
                    {CHECK_ATTRIBUTE: r.name, REQUIRED_ATTRIBUTE: r.required},
                )
                for r in self._results()
            ]
        except Exception:
            return []

    def _observe_system(
        self, key: str, attributes: Mapping[str, str]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(float(r[key]) / 100.0, attributes) for r in self._readings()]
            except Exception:
                return []

        return observe

    def _observe_disk(self, _options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [
                Observation(
                    float(r["disk_usage_percent"]) / 100.0,
                    {"system.filesystem.mountpoint": r["disk_path"]},
                )
                for r in self._readings()
            ]
        except Exception:
            return []

    def _observe_load(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [
                    Observation(float(r["load_average"][index]))
                    for r in self._readings()
                    if r.get("load_average")
                ]
            except Exception:
                return []

        return observe


_instruments_lock = threading.Lock()
_global_instruments: _Instruments | None = None
_provider_instruments: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def _instruments_for(provider: MeterProvider | None) -> _Instruments:
    """One set of instruments per meter provider (the global one when None), shared by checkers.

    Registering the same observable gauge twice on one meter keeps only the
    first callback, so all checkers of a provider report through one callback.
    """
    global _global_instruments
    with _instruments_lock:
        if provider is None:
            if _global_instruments is None:
                _global_instruments = _Instruments(None)
            return _global_instruments
        instruments = _provider_instruments.get(provider)
        if instruments is None:
            instruments = _Instruments(provider)
            _provider_instruments[provider] = instruments
        return instruments


# --- the FastAPI router ---------------------------------------------------------------------


def health_router(
    checker: HealthChecker,
    *,
    prefix: str = "/health",
    background: bool = True,
    include_in_schema: bool = True,
) -> APIRouter:
    """``/health``, ``/health/live``, ``/health/ready`` and ``/health/detailed``.

    * ``/health`` and ``/health/live``: no I/O at all; the process answers, so it is alive.
    * ``/health/ready``: the required checks (cached); 503 when one is unhealthy.
    * ``/health/detailed``: every check, the overall status, the unhealthy and
      degraded lists and the timings; 503 when the overall status is unhealthy.

    With ``background`` (and ``CHATAI_OTEL_HEALTH_INTERVAL`` > 0) the router's
    lifespan runs all checks periodically so the metrics stay fresh when nobody
    probes; FastAPI merges it into the app's lifespan on ``include_router``.
    """
    from fastapi import APIRouter
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        if background:
            async with checker.running():
                yield
        else:
            try:
                yield
            finally:
                await checker.stop()

    router = APIRouter(
        prefix=prefix, tags=["health"], include_in_schema=include_in_schema, lifespan=lifespan
    )

    def now() -> str:
        return datetime.now(UTC).isoformat()

    @router.get("")
    async def health() -> dict[str, Any]:
        return {
            "status": HealthStatus.HEALTHY.value,
            "timestamp": now(),
            "version": checker.version,
        }

    @router.get("/live")
    async def live() -> dict[str, Any]:
        return {"status": "alive", "timestamp": now()}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        report = await checker.ready()
        body = {
            "status": "ready" if report.ready else "not_ready",
            "timestamp": report.timestamp.isoformat(),
            "checks": {name: r.status.value for name, r in report.results.items()},
            "unhealthy_services": report.names_with(HealthStatus.UNHEALTHY),
        }
        return JSONResponse(body, status_code=200 if report.ready else 503)

    @router.get("/detailed")
    async def detailed() -> JSONResponse:
        report = await checker.run()
        code = 503 if report.status is HealthStatus.UNHEALTHY else 200
        return JSONResponse(jsonable_encoder(report.as_dict()), status_code=code)

    return router
