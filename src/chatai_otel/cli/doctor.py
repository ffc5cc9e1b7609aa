"""``chatai-otel doctor``: what this process would do, and whether it can.

* the effective configuration (:class:`~chatai_otel.config.Settings` read from
  this environment), with secrets masked: OTLP header values, the alert
  webhook's path and query, credentials in URLs, any variable named like a secret;
* whether each OTLP endpoint answers OTLP (an empty export request, see
  :func:`chatai_otel.export.forwarder.probe`), not merely whether a port is open;
* which instrumentations ``opentelemetry-instrument`` would activate with this
  distro and which it skips, and why (disabled, library missing, version out of range);
* the versions of the packages that matter.

Exit status: 0 all well, 1 an endpoint does not answer, 2 the configuration is invalid.
"""

from __future__ import annotations

import os
import platform
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TextIO

from chatai_otel._sdk_compat import fast_paths, metric_cardinality_limits
from chatai_otel.config import SIGNALS, ConfigError, Settings, load_settings
from chatai_otel.export.forwarder import ProbeResult, probe
from chatai_otel.redaction import REDACTED, Scrubber

__all__ = ["Instrumentation", "instrumentations", "mask_env", "run"]

PACKAGES = (
    "chatai-otel",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-instrumentation",
    "opentelemetry-semantic-conventions",
    "structlog",
    "orjson",
    "fastapi",
    "starlette",
    "uvicorn",
    "gunicorn",
    "sqlalchemy",
    "psycopg",
    "redis",
    "httpx",
    "psutil",
    "genai-prices",
    "aiogram",
    "grpcio",
    "protobuf",
)
# Variables whose whole value is a secret whatever their name says.
_SECRET_VALUES = frozenset({"OTEL_EXPORTER_OTLP_HEADERS", "CHATAI_OTEL_ALERT_WEBHOOK_HEADERS"})
_URL_VARIABLES = frozenset({"CHATAI_OTEL_ALERT_WEBHOOK_URL"})
_scrubber = Scrubber()


# --- masking --------------------------------------------------------------------------------------


def mask_headers(headers: Mapping[str, str]) -> str:
    """``name=[REDACTED]`` for every header: names help debugging, values are credentials."""
    return ",".join(f"{name}={REDACTED}" for name in headers) if headers else "(none)"


def mask_url(url: str) -> str:
    """Scheme, host and port only; path, query and user info hidden (webhook URLs are secrets)."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    hidden = "/" + REDACTED if (parsed.path.strip("/") or parsed.query) else ""
    return f"{parsed.scheme}://{host}{port}{hidden}"


def mask_env(name: str, value: str) -> str:
    """One environment variable's value as doctor shows it."""
    if name in _SECRET_VALUES or name.endswith("_HEADERS"):
        pairs = [item.partition("=")[0].strip() for item in value.split(",") if item.strip()]
        return ",".join(f"{key}={REDACTED}" for key in pairs) or REDACTED
    if name in _URL_VARIABLES:
        return mask_url(value)
    if _scrubber.is_secret_key(name.removeprefix("OTEL_").removeprefix("CHATAI_OTEL_")):
        return REDACTED
    return _scrubber.scrub_text(value)


# --- instrumentations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instrumentation:
    name: str
    active: bool
    detail: str


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _disabled() -> set[str]:
    raw = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {item.strip() for item in raw.split(",") if item.strip()}


def _conflict_text(conflict: Any, requirement: str | None = None) -> str:
    """``redis 1.0 is installed, outside the supported range redis >= 2.6`` (markers dropped)."""
    required = getattr(conflict, "required", None)
    if required:
        required = requirement or str(required).split(";", 1)[0].strip()
    found = getattr(conflict, "found", None)
    if required and found:
        return f"{found} is installed, outside the supported range {required}"
    if required:
        return f"{required} is not installed"
    return str(conflict)


def instrumentations() -> list[Instrumentation]:
    """What ``opentelemetry-instrument`` with this distro would load, and what it skips and why."""
    from opentelemetry.instrumentation.dependencies import (
        get_dependency_conflicts,
        get_dist_dependency_conflicts,
    )

    from chatai_otel.distro import REPLACED_INSTRUMENTORS
    from chatai_otel.integrations.instrumentors import LIBRARIES

    disabled = _disabled()
    libraries = {library.entry_point: library for library in LIBRARIES}
    result: dict[str, Instrumentation] = {}

    # FastAPI: our own middleware, installed by the configurator, not the stock instrumentor.
    fastapi = libraries["fastapi"]
    if "fastapi" in disabled or "*" in disabled:
        result["fastapi"] = Instrumentation(
            "fastapi", False, "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
        )
    else:
        conflict = get_dependency_conflicts([fastapi.requirement])
        result["fastapi"] = (
            Instrumentation("fastapi", False, _conflict_text(conflict))
            if conflict is not None
            else Instrumentation(
                "fastapi",
                True,
                f"fastapi {_version('fastapi')}: chatai-otel's ASGI middleware ({fastapi.gives})",
            )
        )

    for entry_point in metadata.entry_points(group="opentelemetry_instrumentor"):
        name = entry_point.name
        if name in REPLACED_INSTRUMENTORS or name in result:
            continue
        if name in disabled or "*" in disabled:
            result[name] = Instrumentation(
                name, False, "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
            )
            continue
        try:
            conflict = get_dist_dependency_conflicts(entry_point.dist) if entry_point.dist else None
        except Exception as error:
            result[name] = Instrumentation(name, False, f"cannot check: {error}")
            continue
        library = libraries.get(name)
        if conflict is not None:
            requirement = library.requirement if library is not None else None
            result[name] = Instrumentation(name, False, _conflict_text(conflict, requirement))
            continue
        what = library.gives if library is not None else "stock instrumentor"
        version = _version(library.distribution) if library is not None else None
        detail = f"{library.distribution} {version}: {what}" if library and version else what
        if name == "sqlalchemy":
            detail += " (no sqlcommenter, no connect span per checkout)"
        result[name] = Instrumentation(name, True, detail)

    for name, library in libraries.items():
        if name not in result:
            result[name] = Instrumentation(
                name,
                False,
                f"opentelemetry-instrumentation-{name} is not installed (no {library.gives})",
            )
    return sorted(result.values(), key=lambda item: item.name)


# --- report ---------------------------------------------------------------------------------------


def _settings_rows(settings: Settings) -> list[tuple[str, str]]:
    rows = [
        ("service.name", settings.service_name),
        ("service.version", settings.service_version),
        ("deployment.environment.name", settings.environment),
        ("SDK", "disabled (OTEL_SDK_DISABLED)" if settings.sdk_disabled else "enabled"),
    ]
    if settings.resource_attributes:
        rows.append(
            (
                "resource attributes",
                ", ".join(
                    f"{k}={_scrubber.scrub_text(v)}"
                    for k, v in settings.resource_attributes.items()
                ),
            )
        )
    for signal in SIGNALS:
        kind = settings.exporter_kind(signal)
        if kind != "otlp":
            rows.append((f"{signal} exporter", kind))
            continue
        exporter = settings.exporter_for(signal)
        rows.append(
            (
                f"{signal} exporter",
                f"otlp {exporter.protocol} {exporter.endpoint} "
                f"(headers {mask_headers(exporter.headers)}, compression {exporter.compression}, "
                f"timeout {exporter.timeout:g} s{', TLS' if not exporter.insecure else ''})",
            )
        )
    rows += [
        ("sampler", f"{settings.sampler} (arg {settings.sampler_arg:g})"),
        ("metric export interval", f"{settings.metric_export_interval:g} s"),
        (
            "span queue / batch",
            f"{settings.span_batch.max_queue_size} / {settings.span_batch.max_export_batch_size}, "
            f"every {settings.span_batch.schedule_delay:g} s",
        ),
        (
            "log queue / batch",
            f"{settings.log_batch.max_queue_size} / {settings.log_batch.max_export_batch_size}, "
            f"every {settings.log_batch.schedule_delay:g} s",
        ),
        (
            "metric cardinality limit",
            str(settings.metric_cardinality_limit)
            if metric_cardinality_limits()
            else f"{settings.metric_cardinality_limit}: not applied, opentelemetry-sdk "
            f"{_version('opentelemetry-sdk')} keeps every attribute set (limits need 1.45)",
        ),
        ("shutdown timeout", f"{settings.shutdown_timeout:g} s"),
        ("log level / format", f"{settings.logging.level} / {settings.logging.format}"),
        ("excluded URLs", ",".join(settings.web.excluded_urls) or "(none)"),
        (
            "alert webhook",
            mask_url(settings.alerts.webhook_url) if settings.alerts.webhook_url else "(none)",
        ),
        (
            "event store",
            (
                f"{_scrubber.scrub_text(settings.store.url)} (journal {settings.store.journal_dir}, "
                f"durability {settings.store.durability})"
            )
            if settings.store.url
            else "(none: events and errors are not written to SQL)",
        ),
    ]
    shown = {
        "sdk_disabled", "service_name", "service_version", "environment", "resource_attributes",
        "traces_exporter", "metrics_exporter", "logs_exporter", "traces", "metrics", "logs",
        "sampler", "sampler_arg", "metric_export_interval", "span_batch", "log_batch",
        "metric_cardinality_limit", "shutdown_timeout", "log_level", "log_format",
        "excluded_urls", "alert_webhook_url", "store_url", "store_journal_dir", "store_durability",
    }  # fmt: skip
    for name, value, secret in settings.flat_items():
        if name not in shown:
            rows.append((name.replace("_", " "), _plain(value, secret=secret)))
    return rows


def _plain(value: Any, *, secret: bool) -> str:
    """A setting as text; for a field kept out of repr (it may hold a secret), keys only."""
    if isinstance(value, Mapping):
        if secret:
            return mask_headers(value)
        return ", ".join(f"{k}={_scrubber.scrub_text(str(v))}" for k, v in value.items()) or "-"
    if secret and value:
        return REDACTED
    if isinstance(value, tuple | list):
        return ", ".join(str(item) for item in value) or "-"
    return "-" if value is None else _scrubber.scrub_text(str(value))


def _probes(settings: Settings, timeout: float) -> list[tuple[list[str], ProbeResult]]:
    """One probe per distinct (endpoint, protocol, headers) among the OTLP signals."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    exporters = {}
    for signal in SIGNALS:
        if settings.exporter_kind(signal) != "otlp":
            continue
        exporter = settings.exporter_for(signal)
        key = (exporter.endpoint, exporter.protocol, tuple(sorted(exporter.headers.items())))
        groups.setdefault(key, []).append(signal)
        exporters[key] = (signal, exporter)
    results = []
    for key, signals in groups.items():
        signal, exporter = exporters[key]
        results.append((signals, probe(signal, exporter, timeout)))
    return results


def run(stream: TextIO = sys.stdout, *, timeout: float = 2.0) -> int:
    """Print the report; return the exit status (0 ok, 1 an endpoint is down, 2 bad config)."""
    status = 0

    def out(text: str = "") -> None:
        print(text, file=stream)

    out("chatai-otel doctor")
    out()
    out("Configuration (effective; secrets masked)")
    settings: Settings | None
    try:
        settings = load_settings()
    except ConfigError as error:
        settings = None
        status = 2
        out(f"  INVALID: {error}")
    if settings is not None:
        rows = _settings_rows(settings)
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            out(f"  {name.ljust(width)}  {value}")
    variables = sorted(
        (name, value)
        for name, value in os.environ.items()
        if name.startswith(("OTEL_", "CHATAI_OTEL_"))
    )
    if variables:
        out("  set in the environment:")
        for name, value in variables:
            out(f"    {name}={mask_env(name, value)}")
    out()

    out("OTLP endpoints")
    if settings is None:
        out("  not checked: the configuration is invalid")
    else:
        probes = _probes(settings, timeout)
        if not probes:
            out("  none: no signal exports over OTLP")
        for signals, result in probes:
            verdict = "OK" if result.ok else "NOT ANSWERING"
            out(
                f"  {'/'.join(signals)}: {result.endpoint} ({result.protocol})  {verdict}: "
                f"{result.detail}"
            )
            if not result.ok:
                status = max(status, 1)
        if any(not result.ok for _s, result in probes):
            out(
                "  -> start a collector (./dev stack up or docker compose up), point OTEL_EXPORTER_OTLP_ENDPOINT at "
                "one, or try `chatai-otel demo`, which writes OTLP/JSON files when none answers"
            )
    out()

    out("Instrumentations (as opentelemetry-instrument loads them with this distro)")
    found = instrumentations()
    width = max((len(item.name) for item in found), default=0)
    for item in found:
        out(f"  {item.name.ljust(width)}  {'active ' if item.active else 'skipped'}  {item.detail}")
    out()

    out("Fast paths (SDK internals probed by chatai_otel._sdk_compat)")
    paths = list(fast_paths().values())
    width = max((len(path.name) for path in paths), default=0)
    for path in paths:
        if path.on:
            out(f"  {path.name.ljust(width)}  on   uses {path.uses}")
        else:
            out(f"  {path.name.ljust(width)}  OFF  {path.reason}: {path.fallback}")
    out()

    out("Packages")
    out(f"  python {platform.python_version()} ({sys.executable})")
    installed = [(name, _version(name)) for name in PACKAGES]
    width = max(len(name) for name in PACKAGES)
    for name, version in installed:
        out(f"  {name.ljust(width)}  {version or '-'}")
    return status
