"""The settings of this process, whether ``configure()`` ran yet or not.

Events, errors and alerts need a few settings (service name, audit set, the
webhook) at call time. After ``configure()`` they are the configured ones;
before it (a script that never configures, a unit test) they are read from the
environment once, and a bad value there falls back to the defaults instead of
raising into application code: ``configure()`` is where bad config is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from chatai_otel import bootstrap
from chatai_otel.config import ConfigError, Settings, load_settings
from chatai_otel.providers import Telemetry

__all__ = ["PerConfigure", "settings", "telemetry"]

T = TypeVar("T")

_fallback: Settings | None = None


def telemetry() -> Telemetry | None:
    """The configured handle, or None before ``configure()``."""
    return bootstrap.current()


def settings() -> Settings:
    """The configured settings, else the environment's (read once), else the defaults."""
    global _fallback
    configured = bootstrap.current()
    if configured is not None:
        return configured.settings
    if _fallback is None:
        try:
            _fallback = load_settings()
        except ConfigError:
            _fallback = Settings()
    return _fallback


class PerConfigure(Generic[T]):
    """A value built once per configured process, and afresh on each call before that.

    A structlog logger bound before ``configure()`` keeps the unconfigured
    pipeline for good, so module-level loggers are built through this.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._key: object = None
        self._value: T | None = None

    def get(self) -> T:
        configured = bootstrap.current()
        if configured is None:
            return self._factory()
        if self._key is not configured or self._value is None:
            self._value = self._factory()
            self._key = configured
        return self._value
