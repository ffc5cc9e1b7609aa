"""Which libraries we instrument, with which options, and a start-up line for each that cannot be.

The backend talks to PostgreSQL through SQLAlchemy, to Redis, and to OpenAI and
Telegram through httpx; FastAPI serves it. Redis and httpx use the
stock OpenTelemetry instrumentors; SQLAlchemy gets our lean statement spans
(:mod:`chatai_otel.integrations.sql`: no ``connect`` span per pooled checkout, statements
never carry parameter values) and FastAPI our lean middleware
(:mod:`chatai_otel.integrations.asgi`), both far cheaper than the stock ones.

Each instrumentation activates when its library is first imported, not at start-up: an app
that never imports httpx or Redis does not carry them (7.5 MB of idle memory for the two,
measured) nor their instrumentors. One that is imported already activates at once.

An instrumentation that cannot activate — its library is not installed, or
its version is outside the supported range — is never silent: one log line at
start-up names the library, the version found and the range supported.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from wrapt import register_post_import_hook

from chatai_otel.logs.structlog_bridge import get_logger

__all__ = [
    "LIBRARIES",
    "Library",
    "activate_on_import",
    "inactive_libraries",
    "instrument_libraries",
    "instrument_with_options",
    "report_inactive",
]


@dataclass(frozen=True)
class Library:
    """One library we instrument: the distribution, the versions supported, what it gives."""

    entry_point: str  # name in the opentelemetry_instrumentor entry-point group
    distribution: str
    requirement: str
    gives: str


# FastAPI's range is ours (the middleware reads scope["route"], set by Starlette's router);
# the others are the ranges the stock instrumentors declare.
LIBRARIES: tuple[Library, ...] = (
    Library("fastapi", "fastapi", "fastapi >= 0.100", "HTTP server spans, metrics, access log"),
    Library("sqlalchemy", "sqlalchemy", "sqlalchemy >= 1.0.0, < 2.1.0", "database spans"),
    Library("redis", "redis", "redis >= 2.6", "Redis command spans"),
    Library("httpx", "httpx", "httpx >= 0.18.0", "outgoing HTTP client spans"),
)

# Per instrumentor entry point: the library module whose first import activates it, and the
# instrumentor's own module (importing it imports the library).
ACTIVATED_ON_IMPORT: dict[str, tuple[str, str]] = {
    "sqlalchemy": ("sqlalchemy", "opentelemetry.instrumentation.sqlalchemy"),
    "redis": ("redis", "opentelemetry.instrumentation.redis"),
    "httpx": ("httpx", "opentelemetry.instrumentation.httpx"),
    "httpx2": ("httpx2", "opentelemetry.instrumentation.httpx"),
}


def activate_on_import(entry_point: str, activate: Callable[[], None]) -> None:
    """Run ``activate`` once: right after the library of ``entry_point`` is first imported,
    or now if it is imported already (or is not one we know).

    An app that imports the instrumentor's module itself (to instrument one client by hand)
    imports the library from inside it: activation then waits until that module is
    complete. A failure is logged, never raised into the import that triggered it.
    """
    modules = ACTIVATED_ON_IMPORT.get(entry_point)
    if modules is None:
        activate()
        return
    library, instrumentor_module = modules
    lock = threading.Lock()
    done = False

    def once(module: Any = None) -> None:
        nonlocal done
        completed = getattr(module, "__name__", None) == instrumentor_module  # its body has run
        if library not in sys.modules or (not completed and _initializing(instrumentor_module)):
            return  # the instrumentor's module calls again when its body has run
        with lock:
            if done:
                return
            done = True
        try:
            activate()
        except Exception:
            get_logger("chatai_otel.instrumentations").exception(
                f"{entry_point} instrumentation failed to start", library=entry_point
            )

    if library in sys.modules:
        once()
        return
    register_post_import_hook(once, library)
    register_post_import_hook(once, instrumentor_module)


def _initializing(module_name: str) -> bool:
    """True while ``module_name`` is being imported (in sys.modules, not yet complete)."""
    module = sys.modules.get(module_name)
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def inactive_libraries() -> list[tuple[Library, str | None]]:
    """The libraries whose instrumentation cannot activate, with the version found (None: absent)."""
    result = []
    for library in LIBRARIES:
        if get_dependency_conflicts([library.requirement]) is not None:
            result.append((library, _installed_version(library.distribution)))
    return result


_reported = False


def report_inactive(*, again: bool = False) -> list[str]:
    """Log one line per library that cannot be instrumented (once per process); return the lines."""
    global _reported
    if _reported and not again:
        return []
    _reported = True
    log = get_logger("chatai_otel.instrumentations")
    lines = []
    for library, found in inactive_libraries():
        if found is None:
            line = (
                f"{library.distribution} instrumentation is off: {library.distribution} is not "
                f"installed (supported: {library.requirement}); no {library.gives}"
            )
            log.info(
                line,
                library=library.distribution,
                version=None,
                supported=library.requirement,
            )
        else:
            line = (
                f"{library.distribution} instrumentation is off: {library.distribution} {found} is "
                f"installed, outside the supported range {library.requirement}; no {library.gives}"
            )
            log.warning(
                line,
                library=library.distribution,
                version=found,
                supported=library.requirement,
            )
        lines.append(line)
    return lines


def instrument_with_options(name: str, instrumentor: Any, **kwargs: Any) -> None:
    """Instrument one library with our options (``kwargs`` from the caller win).

    SQLAlchemy gets our lean statement spans (:mod:`chatai_otel.integrations.sql`) unless
    ``CHATAI_OTEL_DB_CONNECT_SPANS`` asks for the stock instrumentation and its
    ``connect`` span per pooled checkout.
    """
    from chatai_otel.bootstrap import current
    from chatai_otel.config import load_settings

    telemetry = current()
    settings = telemetry.settings if telemetry is not None else load_settings()
    if name == "sqlalchemy" and not settings.db_connect_spans:
        from chatai_otel.integrations.sql import instrument_sqlalchemy

        instrument_sqlalchemy()
        return
    if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
        return
    instrumentor.instrument(**kwargs)


def instrument_libraries() -> None:
    """For hand-configured processes: instrument SQLAlchemy, Redis and httpx once (each when
    it is first imported), and report the rest.

    Under ``opentelemetry-instrument`` the distro does this already; calling it
    again changes nothing.
    """
    inactive = {library.entry_point for library, _found in inactive_libraries()}
    for library in LIBRARIES:
        if library.entry_point == "fastapi" or library.entry_point in inactive:
            continue
        activate_on_import(library.entry_point, _stock_activation(library.entry_point))
    report_inactive()


def _stock_activation(name: str) -> Callable[[], None]:
    def activate() -> None:
        instrument_with_options(name, _stock_instrumentor(name))

    return activate


def _stock_instrumentor(name: str) -> Any:
    if name == "sqlalchemy":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        return SQLAlchemyInstrumentor()
    if name == "redis":
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        return RedisInstrumentor()
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    return HTTPXClientInstrumentor()
