"""What a health check says: a status, the outcome of one check, its cached result, and the
report the endpoints return."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
