"""Settings, read once from the environment and validated.

The standard ``OTEL_*`` variables are honoured with their specified meaning;
``CHATAI_OTEL_*`` variables exist only for what OpenTelemetry has no name for.
A bad value raises :class:`ConfigError` whose message names the variable, the
value and what is accepted, so start-up can stop with one clear line instead
of a traceback or a silent default.

This module imports nothing of ours: everything else builds on it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "metrics", "logs"]
SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
EXPORTERS = ("otlp", "console", "none")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
# The seed's audit set: these business events also go to the audit stream (and are durable).
DEFAULT_AUDIT_EVENTS = (
    "user_registered",
    "user_login",
    "balance_topped_up",
    "handoff_requested",
    "security_violation",
)
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_EXCLUDED_URLS = ("/health", "/health/*", "/metrics")


class ConfigError(ValueError):
    """A configuration value is invalid; the message is meant for a human, in one line."""

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is invalid: {accepted}")


@dataclass(frozen=True)
class ExporterSettings:
    """Where and how one signal is shipped over OTLP."""

    endpoint: str
    protocol: Protocol
    headers: Mapping[str, str]
    timeout: float  # seconds
    compression: Literal["none", "gzip", "deflate"]
    insecure: bool


@dataclass(frozen=True)
class BatchSettings:
    """Bounds of one batch processor: its queue is the only buffer between app and network."""

    schedule_delay: float  # seconds
    export_timeout: float  # seconds
    max_queue_size: int
    max_export_batch_size: int


class _Group:
    """A group of settings of one area; each field also has a flat name for ``configure()``.

    The flat name is ``FLAT_PREFIX`` + the field name (``store_url`` for ``store.url``): the
    keyword arguments of ``configure()`` and ``load_settings()`` stay one flat namespace.
    """

    FLAT_PREFIX: ClassVar[str] = ""


@dataclass(frozen=True)
class LogSettings(_Group):
    """The logging pipeline (chatai_otel.logs)."""

    FLAT_PREFIX: ClassVar[str] = "log_"

    level: str = "info"
    format: str = "auto"
    levels: Mapping[str, str] = field(default_factory=dict)  # per-logger overrides
    stdout: bool = True  # JSON (or console) lines on stdout
    # seconds a stdout line may wait to be written with others by a background thread;
    # 0 = each line written on the calling thread (chatai_otel.logs.line_writer)
    stdout_interval: float = 0.05
    file: str | None = None  # application log (JSON lines), like the seed's api.log
    error_file: str | None = None  # records >= ERROR only, like the seed's error.log
    audit_file: str | None = None  # the audit stream only, like the seed's audit.log
    max_value_size: int = 8192  # characters per field value before truncation


@dataclass(frozen=True)
class RedactionSettings(_Group):
    """Key names the scrubber (chatai_otel.redaction) treats as secret, or never as secret."""

    FLAT_PREFIX: ClassVar[str] = "redact_"

    keys: tuple[str, ...] = ()  # extra secret key names
    safe_keys: tuple[str, ...] = ()  # key names never redacted by name


@dataclass(frozen=True)
class WebSettings(_Group):
    """The web layer (chatai_otel.integrations.asgi and .fastapi)."""

    # paths kept out of traces, metrics and the access log
    excluded_urls: tuple[str, ...] = DEFAULT_EXCLUDED_URLS
    access_log: bool = True
    # uvicorn's own "GET /x HTTP/1.1" 200 line beside ours; off: one access line per request
    uvicorn_access_log: bool = False
    capture_headers: tuple[str, ...] = ()  # lower-case request header names put on the access line


@dataclass(frozen=True)
class HealthSettings(_Group):
    """Health checks (chatai_otel.health)."""

    FLAT_PREFIX: ClassVar[str] = "health_"

    cache_ttl: float = 2.0  # seconds a check result is reused: a probe storm costs one run
    timeout: float = 2.0  # seconds a check may take before it counts as unhealthy
    interval: float = 15.0  # seconds between background runs (fresh metrics); 0 = off
    disk_threshold: float = 90.0  # disk usage percent above which the system is degraded
    memory_threshold: float = 85.0  # memory usage percent above which the system is degraded


@dataclass(frozen=True)
class AlertSettings(_Group):
    """The critical-error webhook (chatai_otel.tracking.alerts)."""

    FLAT_PREFIX: ClassVar[str] = "alert_"

    webhook_url: str | None = field(default=None, repr=False)  # may hold a secret token
    webhook_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    dedup_window: float = 300.0  # seconds: one alert per error fingerprint per window
    rate_limit: int = 20  # alerts per minute, all fingerprints together
    timeout: float = 5.0  # seconds per webhook request
    queue_size: int = 100  # alerts waiting for the sender; more are dropped and counted


@dataclass(frozen=True)
class StoreSettings(_Group):
    """The durable event and error store (chatai_otel.store); no URL: no SQL copy of events."""

    FLAT_PREFIX: ClassVar[str] = "store_"

    url: str | None = field(default=None, repr=False)  # may hold a password
    schema: str | None = None
    journal_dir: str = ""  # "" -> default_journal_dir(service_name)
    disk_budget: int = 1 << 30  # bytes of journal files
    durability: str = "all"  # "all": every record journaled; "audit": others best-effort
    # rows per transaction at most: PostgreSQL's WAL flush per batch stays short where it
    # shares a disk with the journal (same throughput as 2000 in benchmarks/bench_store.py)
    batch_size: int = 1000
    flush_interval: float = 0.1  # seconds a small batch waits for company
    queue_size: int = 10_000  # records waiting for the journal or the writer
    create_tables: bool = False  # create missing tables at the first connection


@dataclass(frozen=True)
class BrowserSettings(_Group):
    """The browser telemetry tunnel (chatai_otel.integrations.browser_tunnel)."""

    FLAT_PREFIX: ClassVar[str] = "browser_"

    service_name: str = "chatai-frontend"  # forced on what browsers send
    max_body: int = 512 * 1024  # bytes per OTLP request as sent
    rate_limit: float = 5.0  # requests per second per client address
    burst: int = 20  # requests a client may send at once before the rate applies


@dataclass(frozen=True)
class Settings:
    """Everything chatai-otel decides, in one immutable object, grouped by area."""

    sdk_disabled: bool = False
    service_name: str = "chatai"
    service_version: str = "0.0.0"
    environment: str = "development"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    # --- OpenTelemetry's own settings: exporters, sampling, batching ---
    traces_exporter: str = "otlp"
    metrics_exporter: str = "otlp"
    logs_exporter: str = "otlp"
    traces: ExporterSettings = field(default_factory=lambda: _default_exporter("traces"))
    metrics: ExporterSettings = field(default_factory=lambda: _default_exporter("metrics"))
    logs: ExporterSettings = field(default_factory=lambda: _default_exporter("logs"))
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    metric_export_interval: float = 60.0  # seconds
    metric_export_timeout: float = 30.0  # seconds
    span_batch: BatchSettings = field(default_factory=lambda: BatchSettings(5.0, 30.0, 2048, 512))
    # Logs come in bursts: the queue default is 8192, not the spec's 2048, which overflowed
    # under a burst of log lines on a busy 2-core machine (benchmarks/bench_logging.py).
    log_batch: BatchSettings = field(default_factory=lambda: BatchSettings(1.0, 30.0, 8192, 512))
    metric_cardinality_limit: int = 1000  # attribute sets per metric before folding into overflow
    shutdown_timeout: float = 5.0  # seconds; a dead collector never holds a shutdown longer
    # --- chatai-otel's areas ---
    logging: LogSettings = field(default_factory=LogSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    web: WebSettings = field(default_factory=WebSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    browser: BrowserSettings = field(default_factory=BrowserSettings)
    # event types also written to the audit stream and kept durable (tracking.events, store)
    audit_events: tuple[str, ...] = DEFAULT_AUDIT_EVENTS
    db_connect_spans: bool = False  # a `connect` span per pooled SQLAlchemy checkout
    gc_tuning: bool = True  # gc.freeze() and a higher young threshold once the app serves

    def exporter_for(self, signal: Signal) -> ExporterSettings:
        """The OTLP settings of one signal."""
        result: ExporterSettings = getattr(self, signal)
        return result

    def exporter_kind(self, signal: Signal) -> str:
        """``otlp``, ``console`` or ``none`` for one signal."""
        result: str = getattr(self, f"{signal}_exporter")
        return result

    def flat_items(self) -> list[tuple[str, Any, bool]]:
        """``(flat name, value, secret)`` for every setting, as ``configure()`` names them."""
        items: list[tuple[str, Any, bool]] = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, _Group):
                items.extend(
                    (value.FLAT_PREFIX + inner.name, getattr(value, inner.name), not inner.repr)
                    for inner in dataclasses.fields(value)  # type: ignore[arg-type]
                )
            else:
                items.append((item.name, value, not item.repr))
        return items


@functools.cache
def _groups() -> dict[str, type[_Group]]:
    """The fields of Settings that hold a group, with the group's class (its default factory)."""
    groups: dict[str, type[_Group]] = {}
    for item in dataclasses.fields(Settings):
        factory = item.default_factory
        if isinstance(factory, type) and issubclass(factory, _Group):
            groups[item.name] = factory
    return groups


@functools.cache
def flat_names() -> dict[str, tuple[str | None, str]]:
    """Every name ``configure()`` accepts -> (group field or None for top level, field name)."""
    names: dict[str, tuple[str | None, str]] = {
        item.name: (None, item.name) for item in dataclasses.fields(Settings)
    }
    for group, cls in _groups().items():
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            flat = cls.FLAT_PREFIX + item.name
            if flat in names:
                raise AssertionError(f"setting {flat} would be ambiguous")
            names[flat] = (group, item.name)
    return names


def _assemble(values: Mapping[str, Any]) -> Settings:
    """Settings from flat names; a whole group given by its field name is the base of its flat ones."""
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    names = flat_names()
    for name, value in values.items():
        group, field_name = names[name]
        if group is None:
            top[name] = value
        else:
            grouped.setdefault(group, {})[field_name] = value
    for group, cls in _groups().items():
        given = grouped.get(group, {})
        if group in top:
            top[group] = dataclasses.replace(top[group], **given)
        else:
            top[group] = cls(**given)
    return Settings(**top)


def _default_exporter(signal: Signal) -> ExporterSettings:
    return ExporterSettings(
        endpoint=DEFAULT_GRPC_ENDPOINT,
        protocol="grpc",
        headers={},
        timeout=10.0,
        compression="none",
        insecure=True,
    )


# --- parsing helpers: each names the variable in its error -------------------------------

T = TypeVar("T")


def _clean(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _clean(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(name, raw, "expected true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _clean(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered not in choices:
        raise ConfigError(name, raw, f"expected one of {', '.join(choices)}")
    return lowered


def _number(
    env: Mapping[str, str],
    name: str,
    default: T,
    convert: Callable[[str], T],
    *,
    minimum: float = 0.0,
    allow_zero: bool = True,
    maximum: float | None = None,
    unit: str = "",
) -> T:
    raw = _clean(env, name)
    if raw is None:
        return default
    bound = f"{'>= ' if allow_zero else '> '}{minimum:g}"
    if maximum is not None:
        bound = f"between {minimum:g} and {maximum:g}"
    kind = "an integer" if convert is int else "a number"
    accepted = f"expected {kind} {bound}{unit}"
    try:
        value = convert(raw)
    except ValueError:
        raise ConfigError(name, raw, accepted) from None
    as_float = float(value)  # type: ignore[arg-type]
    if (
        math.isnan(as_float)
        or math.isinf(as_float)
        or as_float < minimum
        or (not allow_zero and as_float == minimum)
        or (maximum is not None and as_float > maximum)
    ):
        raise ConfigError(name, raw, accepted)
    return value


def _millis(
    env: Mapping[str, str], name: str, default_seconds: float, *, allow_zero: bool
) -> float:
    """OTel durations are integer milliseconds; we keep seconds internally."""
    millis = _number(env, name, None, _int_or_float, allow_zero=allow_zero, unit=" (milliseconds)")
    return default_seconds if millis is None else float(millis) / 1000.0


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool) -> float:
    return float(_number(env, name, default, float, allow_zero=allow_zero, unit=" (seconds)"))


def _percent(env: Mapping[str, str], name: str, default: float) -> float:
    return float(_number(env, name, default, float, minimum=0.0, maximum=100.0, unit=" (percent)"))


def _int_or_float(raw: str) -> float:
    return float(int(raw)) if raw.lstrip("-").isdigit() else float(raw)


def parse_key_values(name: str, raw: str | None) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (W3C baggage style, values URL-decoded) as OTel specifies."""
    if raw is None:
        return {}
    result: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(name, raw, "expected comma-separated key=value pairs")
        result[urllib.parse.unquote(key)] = urllib.parse.unquote(value.strip())
    return result


def _endpoint(name: str, raw: str) -> str:
    accepted = "expected an http:// or https:// URL with a host, e.g. http://localhost:4317"
    parsed = urllib.parse.urlsplit(raw)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(name, raw, accepted)
    try:
        parsed.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigError(name, raw, "expected a port between 1 and 65535") from None
    return raw


def _exporter_settings(env: Mapping[str, str], signal: Signal) -> ExporterSettings:
    upper = signal.upper()
    generic, specific = "OTEL_EXPORTER_OTLP_", f"OTEL_EXPORTER_OTLP_{upper}_"

    def pick(suffix: str) -> tuple[str, str | None]:
        """The per-signal variable wins over the generic one; return the name that was used."""
        for prefix in (specific, generic):
            value = _clean(env, prefix + suffix)
            if value is not None:
                return prefix + suffix, value
        return generic + suffix, None

    protocol_var, protocol_raw = pick("PROTOCOL")
    protocol: Protocol = "grpc"
    if protocol_raw is not None:
        if protocol_raw == "http/json":
            raise ConfigError(
                protocol_var,
                protocol_raw,
                "http/json is not supported by the Python OTLP exporters; use grpc or http/protobuf",
            )
        if protocol_raw not in ("grpc", "http/protobuf"):
            raise ConfigError(protocol_var, protocol_raw, "expected grpc or http/protobuf")
        protocol = protocol_raw  # type: ignore[assignment]

    specific_endpoint = _clean(env, specific + "ENDPOINT")
    generic_endpoint = _clean(env, generic + "ENDPOINT")
    if specific_endpoint is not None:
        # A per-signal endpoint is used exactly as given (the OTLP spec).
        endpoint = _endpoint(specific + "ENDPOINT", specific_endpoint)
    else:
        base = generic_endpoint or (
            DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT
        )
        endpoint = _endpoint(generic + "ENDPOINT", base)
        if protocol == "http/protobuf":
            endpoint = endpoint.rstrip("/") + f"/v1/{signal}"

    headers_var, headers_raw = pick("HEADERS")
    headers = parse_key_values(headers_var, headers_raw)

    timeout_var, timeout_raw = pick("TIMEOUT")
    timeout = 10.0
    if timeout_raw is not None:
        timeout = _millis({timeout_var: timeout_raw}, timeout_var, 10.0, allow_zero=False)

    compression_var, compression_raw = pick("COMPRESSION")
    compression = _choice(
        {compression_var: compression_raw} if compression_raw else {},
        compression_var,
        "none",
        ("none", "gzip", "deflate"),
    )
    insecure_var, insecure_raw = pick("INSECURE")
    scheme_insecure = endpoint.startswith("http://")
    insecure = _bool(
        {insecure_var: insecure_raw} if insecure_raw else {}, insecure_var, scheme_insecure
    )
    return ExporterSettings(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        timeout=timeout,
        compression=compression,  # type: ignore[arg-type]
        insecure=insecure,
    )


def _batch(
    env: Mapping[str, str], prefix: str, default_delay: float, default_queue: int = 2048
) -> BatchSettings:
    queue = _number(
        env, f"{prefix}_MAX_QUEUE_SIZE", default_queue, int, minimum=0, allow_zero=False
    )
    batch = _number(env, f"{prefix}_MAX_EXPORT_BATCH_SIZE", 512, int, minimum=0, allow_zero=False)
    if batch > queue:
        raise ConfigError(
            f"{prefix}_MAX_EXPORT_BATCH_SIZE",
            batch,
            f"must not exceed {prefix}_MAX_QUEUE_SIZE ({queue})",
        )
    return BatchSettings(
        schedule_delay=_millis(env, f"{prefix}_SCHEDULE_DELAY", default_delay, allow_zero=True),
        export_timeout=_millis(env, f"{prefix}_EXPORT_TIMEOUT", 30.0, allow_zero=False),
        max_queue_size=queue,
        max_export_batch_size=batch,
    )


def _log_levels(env: Mapping[str, str], name: str) -> dict[str, str]:
    """``uvicorn.access=warning,sqlalchemy.engine=info``: per-logger levels."""
    raw = _clean(env, name)
    pairs = parse_key_values(name, raw)
    for logger_name, level in pairs.items():
        if level.strip().lower() not in LOG_LEVELS:
            raise ConfigError(
                name,
                raw,
                f"expected logger=level pairs; {logger_name!r} has level {level!r}, "
                f"levels are {', '.join(LOG_LEVELS)}",
            )
    return {key.strip(): value.strip().lower() for key, value in pairs.items()}


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _clean(env, name)
    if raw is None:
        return ()
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _log_files(env: Mapping[str, str]) -> dict[str, str | None]:
    """CHATAI_OTEL_LOG_DIR gives the seed's split (api.log, error.log, audit.log); each file
    variable overrides its part, and an empty value turns that file off."""
    directory = _clean(env, "CHATAI_OTEL_LOG_DIR")
    defaults = {
        "log_file": "api.log",
        "log_error_file": "error.log",
        "log_audit_file": "audit.log",
    }
    variables = {
        "log_file": "CHATAI_OTEL_LOG_FILE",
        "log_error_file": "CHATAI_OTEL_LOG_ERROR_FILE",
        "log_audit_file": "CHATAI_OTEL_LOG_AUDIT_FILE",
    }
    result: dict[str, str | None] = {}
    for key, variable in variables.items():
        if variable in env:
            result[key] = _clean(env, variable)
        elif directory is not None:
            result[key] = os.path.join(directory, defaults[key])
        else:
            result[key] = None
    return result


def _exporter_kind(env: Mapping[str, str], name: str) -> str:
    raw = _clean(env, name)
    if raw is None:
        return "otlp"
    kinds = [part.strip().lower() for part in raw.split(",") if part.strip()]
    if len(kinds) != 1 or kinds[0] not in EXPORTERS:
        raise ConfigError(name, raw, f"expected one of {', '.join(EXPORTERS)}")
    return kinds[0]


def _url_patterns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated paths; a trailing ``*`` matches any suffix. Empty (``""``) excludes nothing."""
    raw = env.get(name)
    if raw is None:
        return DEFAULT_EXCLUDED_URLS
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        if not pattern.startswith("/") or "*" in pattern[:-1]:
            raise ConfigError(
                name, raw, "expected comma-separated paths starting with /, e.g. /health,/health/*"
            )
    return patterns


def _header_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _clean(env, name)
    if raw is None:
        return ()
    names = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    for header in names:
        if not all(c.isalnum() or c in "-_" for c in header):
            raise ConfigError(
                name, raw, "expected comma-separated header names, e.g. user-agent,referer"
            )
    return names


def _event_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Audit event types and the critical-error webhook."""
    values: dict[str, Any] = {}
    audit = _clean(env, "CHATAI_OTEL_AUDIT_EVENTS")
    if audit is not None:
        values["audit_events"] = tuple(
            part.strip().lower() for part in audit.split(",") if part.strip()
        )
    url = _clean(env, "CHATAI_OTEL_ALERT_WEBHOOK_URL")
    if url is not None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            # The URL itself is not echoed: webhook URLs (Slack's, for one) are secrets.
            raise ConfigError(
                "CHATAI_OTEL_ALERT_WEBHOOK_URL",
                "[hidden]",
                "expected an http:// or https:// URL with a host",
            )
        values["alert_webhook_url"] = url
    values["alert_webhook_headers"] = parse_key_values(
        "CHATAI_OTEL_ALERT_WEBHOOK_HEADERS", _clean(env, "CHATAI_OTEL_ALERT_WEBHOOK_HEADERS")
    )
    values["alert_dedup_window"] = _seconds(
        env, "CHATAI_OTEL_ALERT_DEDUP_WINDOW", 300.0, allow_zero=True
    )
    values["alert_rate_limit"] = _number(
        env,
        "CHATAI_OTEL_ALERT_RATE_LIMIT",
        20,
        int,
        minimum=0,
        allow_zero=False,
        unit=" (per minute)",
    )
    values["alert_timeout"] = _seconds(env, "CHATAI_OTEL_ALERT_TIMEOUT", 5.0, allow_zero=False)
    values["alert_queue_size"] = _number(
        env, "CHATAI_OTEL_ALERT_QUEUE_SIZE", 100, int, minimum=0, allow_zero=False
    )
    return values


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
STORE_DURABILITY = ("all", "audit")


def _byte_size(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """A size in bytes: ``1073741824``, ``512MiB``, ``1GiB``."""
    raw = _clean(env, name)
    if raw is None:
        return default
    accepted = f"expected a size of at least {minimum} bytes, e.g. 1073741824, 512MiB or 1GiB"
    number = raw.rstrip("BbKkMmGgTtIi ")
    unit = raw[len(number) :].strip().lower()
    if unit not in _SIZE_UNITS:
        raise ConfigError(name, raw, accepted)
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        raise ConfigError(name, raw, accepted) from None
    if value < minimum:
        raise ConfigError(name, raw, accepted)
    return value


def default_journal_dir(service_name: str, env: Mapping[str, str] | None = None) -> str:
    """``$XDG_STATE_HOME/chatai-otel/journal/<service>`` (``~/.local/state`` without XDG)."""
    env = os.environ if env is None else env
    base = _clean(env, "XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name) or "chatai"
    return os.path.join(base, "chatai-otel", "journal", safe)


def _store_settings(env: Mapping[str, str], service_name: str) -> dict[str, Any]:
    """The durable event store: where it writes, how much disk its journal may take."""
    values: dict[str, Any] = {}
    url = _clean(env, "CHATAI_OTEL_STORE_URL")
    if url is not None:
        scheme = url.partition("://")[0].partition("+")[0].lower()
        if "://" not in url or scheme not in ("postgresql", "postgres", "sqlite"):
            # The URL itself is not echoed: it may hold a password.
            raise ConfigError(
                "CHATAI_OTEL_STORE_URL",
                "[hidden]",
                "expected a postgresql:// (psycopg 3) or sqlite:/// SQLAlchemy URL",
            )
        values["store_url"] = url
    values["store_schema"] = _clean(env, "CHATAI_OTEL_STORE_SCHEMA")
    values["store_journal_dir"] = _clean(
        env, "CHATAI_OTEL_STORE_JOURNAL_DIR"
    ) or default_journal_dir(service_name, env)
    values["store_disk_budget"] = _byte_size(
        env, "CHATAI_OTEL_STORE_DISK_BUDGET", 1 << 30, minimum=1 << 20
    )
    values["store_durability"] = _choice(
        env, "CHATAI_OTEL_STORE_DURABILITY", "all", STORE_DURABILITY
    )
    values["store_batch_size"] = _number(
        env, "CHATAI_OTEL_STORE_BATCH_SIZE", 1000, int, minimum=0, allow_zero=False
    )
    values["store_flush_interval"] = _seconds(
        env, "CHATAI_OTEL_STORE_FLUSH_INTERVAL", 0.1, allow_zero=True
    )
    values["store_queue_size"] = _number(
        env, "CHATAI_OTEL_STORE_QUEUE_SIZE", 10_000, int, minimum=0, allow_zero=False
    )
    values["store_create_tables"] = _bool(env, "CHATAI_OTEL_STORE_CREATE_TABLES", False)
    return values


def _browser_settings(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "browser_service_name": _clean(env, "CHATAI_OTEL_BROWSER_SERVICE_NAME")
        or "chatai-frontend",
        "browser_max_body": _byte_size(
            env, "CHATAI_OTEL_BROWSER_MAX_BODY", 512 * 1024, minimum=1024
        ),
        "browser_rate_limit": float(
            _number(
                env,
                "CHATAI_OTEL_BROWSER_RATE_LIMIT",
                5.0,
                float,
                minimum=0.0,
                allow_zero=False,
                unit=" (requests per second per client)",
            )
        ),
        "browser_burst": _number(
            env, "CHATAI_OTEL_BROWSER_BURST", 20, int, minimum=0, allow_zero=False
        ),
    }


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings; ``overrides`` win over the environment.

    Overrides use the flat names (``log_level``, ``store_url``: see :func:`flat_names`); a
    whole group (``store=StoreSettings(...)``) is accepted too.
    """
    env = os.environ if env is None else env
    resource_attributes = parse_key_values(
        "OTEL_RESOURCE_ATTRIBUTES", _clean(env, "OTEL_RESOURCE_ATTRIBUTES")
    )
    service_name = (
        _clean(env, "OTEL_SERVICE_NAME") or resource_attributes.get("service.name") or "chatai"
    )
    sampler = _choice(env, "OTEL_TRACES_SAMPLER", "parentbased_always_on", SAMPLERS)
    # Validated even when the sampler ignores it: a bad ratio is a misconfiguration either way.
    sampler_arg = float(
        _number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0, float, minimum=0.0, maximum=1.0)
    )

    values: dict[str, Any] = dict(
        sdk_disabled=_bool(env, "OTEL_SDK_DISABLED", False),
        service_name=service_name,
        service_version=(
            _clean(env, "CHATAI_OTEL_SERVICE_VERSION")
            or resource_attributes.get("service.version")
            or "0.0.0"
        ),
        environment=(
            _clean(env, "CHATAI_OTEL_ENVIRONMENT")
            or resource_attributes.get("deployment.environment.name")
            or resource_attributes.get("deployment.environment")
            or "development"
        ),
        resource_attributes=resource_attributes,
        traces_exporter=_exporter_kind(env, "OTEL_TRACES_EXPORTER"),
        metrics_exporter=_exporter_kind(env, "OTEL_METRICS_EXPORTER"),
        logs_exporter=_exporter_kind(env, "OTEL_LOGS_EXPORTER"),
        traces=_exporter_settings(env, "traces"),
        metrics=_exporter_settings(env, "metrics"),
        logs=_exporter_settings(env, "logs"),
        sampler=sampler,
        sampler_arg=sampler_arg,
        metric_export_interval=_millis(env, "OTEL_METRIC_EXPORT_INTERVAL", 60.0, allow_zero=False),
        metric_export_timeout=_millis(env, "OTEL_METRIC_EXPORT_TIMEOUT", 30.0, allow_zero=False),
        span_batch=_batch(env, "OTEL_BSP", 5.0),
        log_batch=_batch(env, "OTEL_BLRP", 1.0, default_queue=8192),
        metric_cardinality_limit=_number(
            env, "CHATAI_OTEL_METRIC_CARDINALITY_LIMIT", 1000, int, minimum=0, allow_zero=False
        ),
        shutdown_timeout=_seconds(env, "CHATAI_OTEL_SHUTDOWN_TIMEOUT", 5.0, allow_zero=False),
        log_level=_choice(env, "CHATAI_OTEL_LOG_LEVEL", "info", LOG_LEVELS),
        log_format=_choice(env, "CHATAI_OTEL_LOG_FORMAT", "auto", LOG_FORMATS),
        log_levels=_log_levels(env, "CHATAI_OTEL_LOG_LEVELS"),
        log_stdout=_bool(env, "CHATAI_OTEL_LOG_STDOUT", True),
        log_stdout_interval=float(
            _number(
                env,
                "CHATAI_OTEL_LOG_STDOUT_INTERVAL",
                0.05,
                float,
                minimum=0.0,
                maximum=10.0,
                unit=" (seconds)",
            )
        ),
        **_log_files(env),
        log_max_value_size=_number(
            env, "CHATAI_OTEL_LOG_MAX_VALUE_SIZE", 8192, int, minimum=64, unit=" (characters)"
        ),
        redact_keys=_names(env, "CHATAI_OTEL_REDACT_KEYS"),
        redact_safe_keys=_names(env, "CHATAI_OTEL_REDACT_SAFE_KEYS"),
        health_cache_ttl=_seconds(env, "CHATAI_OTEL_HEALTH_CACHE_TTL", 2.0, allow_zero=True),
        health_timeout=_seconds(env, "CHATAI_OTEL_HEALTH_TIMEOUT", 2.0, allow_zero=False),
        health_interval=_seconds(env, "CHATAI_OTEL_HEALTH_INTERVAL", 15.0, allow_zero=True),
        health_disk_threshold=_percent(env, "CHATAI_OTEL_HEALTH_DISK_THRESHOLD", 90.0),
        health_memory_threshold=_percent(env, "CHATAI_OTEL_HEALTH_MEMORY_THRESHOLD", 85.0),
        excluded_urls=_url_patterns(env, "CHATAI_OTEL_EXCLUDED_URLS"),
        access_log=_bool(env, "CHATAI_OTEL_ACCESS_LOG", True),
        uvicorn_access_log=_bool(env, "CHATAI_OTEL_UVICORN_ACCESS_LOG", False),
        capture_headers=_header_names(env, "CHATAI_OTEL_CAPTURE_HEADERS"),
        db_connect_spans=_bool(env, "CHATAI_OTEL_DB_CONNECT_SPANS", False),
        gc_tuning=_bool(env, "CHATAI_OTEL_GC_TUNING", True),
    )
    values.update(_event_settings(env))
    values.update(_store_settings(env, service_name))
    values.update(_browser_settings(env))
    unknown = set(overrides) - set(flat_names())
    if unknown:
        raise TypeError(f"configure() got unknown settings: {', '.join(sorted(unknown))}")
    whole_groups = set(overrides) & set(_groups())
    if whole_groups:  # a group given whole replaces what the environment said of it
        names = flat_names()
        values = {k: v for k, v in values.items() if names[k][0] not in whole_groups}
    values.update(overrides)
    return _assemble(values)
