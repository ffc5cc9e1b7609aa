"""The FastAPI router: ``/health`` (liveness), ``/health/ready`` and ``/health/detailed``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter

from chatai_otel.health.checker import HealthChecker
from chatai_otel.health.report import HealthStatus

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
