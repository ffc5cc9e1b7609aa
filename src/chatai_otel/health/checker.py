"""``HealthChecker``: checks run concurrently, each bounded by its timeout, cached for the
TTL, concurrent callers sharing one run; status changes logged once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import MeterProvider

from chatai_otel.bootstrap import current
from chatai_otel.config import Settings, load_settings
from chatai_otel.health.builtin_checks import DatabaseCheck, HttpCheck, RedisCheck, SystemCheck
from chatai_otel.health.metrics import instruments_for
from chatai_otel.health.off_loop import OneThread, describe
from chatai_otel.health.report import CheckOutcome, CheckResult, HealthReport, HealthStatus
from chatai_otel.logs.structlog_bridge import get_logger
from chatai_otel.redaction import scrub, scrub_text

_LOGGER_NAME = "chatai_otel.health"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

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
        self.cache_ttl = settings.health.cache_ttl if cache_ttl is None else cache_ttl
        self.timeout = settings.health.timeout if timeout is None else timeout
        self.interval = settings.health.interval if interval is None else interval
        self.version = settings.service_version if version is None else version
        self._checks: dict[str, _Check] = {}
        self._background: asyncio.Task[None] | None = None
        self._instruments = instruments_for(meter_provider)
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
                self.settings.health.disk_threshold if disk_threshold is None else disk_threshold
            ),
            memory_threshold=(
                self.settings.health.memory_threshold
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
            text, kind = describe(exc, redact)
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
    thread = OneThread(name)

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
