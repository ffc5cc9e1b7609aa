"""Configuration: standard OTEL_* variables honoured, bad values stop start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatai_otel.config import ConfigError, StoreSettings, flat_names, load_settings
from conftest import bin_path, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

BAD_VALUES = [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon", "grpc or http/protobuf"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "http/protobuf"),
    ("OTEL_TRACES_SAMPLER", "sometimes", "traceidratio"),
    ("OTEL_TRACES_SAMPLER_ARG", "abc", "between 0 and 1"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5", "between 0 and 1"),
    ("OTEL_TRACES_SAMPLER_ARG", "-0.1", "between 0 and 1"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "http:// or https://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", "http:// or https://"),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "ftp://collector:4317", "http:// or https://"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999", "port"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "-5", ">"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "milliseconds"),
    ("OTEL_BSP_SCHEDULE_DELAY", "-1", "milliseconds"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "integer"),
    ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "many", "integer"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", "milliseconds"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "authorization", "key=value"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "key=value"),
    ("OTEL_SDK_DISABLED", "maybe", "true or false"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console, none"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "gzip"),
    ("CHATAI_OTEL_SHUTDOWN_TIMEOUT", "-3", "seconds"),
    ("CHATAI_OTEL_LOG_FORMAT", "xml", "json"),
]


@pytest.mark.parametrize(("variable", "value", "accepted"), BAD_VALUES)
def test_bad_value_raises_a_config_error_naming_variable_value_and_accepted(
    variable, value, accepted
):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert caught.value.variable == variable
    assert variable in message
    assert repr(value) in message
    assert accepted in message
    assert "\n" not in message


def test_batch_larger_than_queue_is_rejected():
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        load_settings({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"})


def _one_error_line(stderr: str, variable: str, value: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chatai-otel: configuration error:")
    assert variable in lines[0] and value in lines[0]
    assert "Traceback" not in stderr


def test_an_immediate_exit_never_crashes_the_interpreter():
    """A process that stops at once (here: a bad value) must exit with 2, not a signal.

    A daemon thread still importing while the interpreter finalized crashed it now and then
    (SIGSEGV / SIGABRT, ~1 in 20 exits): each of twenty runs must exit cleanly.
    """
    env = telemetry_env(None, OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="abc")
    codes = [
        subprocess.run(
            [sys.executable, "-c", "import chatai_otel.setup"],
            env=env,
            capture_output=True,
            timeout=60,
        ).returncode
        for _ in range(20)
    ]
    assert codes == [2] * 20


@pytest.mark.parametrize(("variable", "value", "accepted"), BAD_VALUES[::3])
def test_import_setup_exits_with_one_line(variable, value, accepted):
    env = telemetry_env(None, **{variable: value})
    done = subprocess.run(
        [sys.executable, "-c", "import chatai_otel.setup; print('SHOULD NOT RUN')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SHOULD NOT RUN" not in done.stdout
    _one_error_line(done.stderr, variable, value)


@pytest.mark.parametrize(("variable", "value", "accepted"), BAD_VALUES[1::3])
def test_instrument_wrapper_exits_with_one_line(variable, value, accepted):
    env = telemetry_env(None, **{variable: value})
    done = subprocess.run(
        [bin_path("opentelemetry-instrument"), sys.executable, "-c", "print('SHOULD NOT RUN')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SHOULD NOT RUN" not in done.stdout
    _one_error_line(done.stderr, variable, value)


def test_standard_variables_are_honoured():
    settings = load_settings(
        {
            "OTEL_SERVICE_NAME": "chatai-api",
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,deployment.environment.name=prod,team=ai%20core",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:9999/custom",
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc,x-tenant=7",
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "2500",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_METRIC_EXPORT_INTERVAL": "15000",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
            "OTEL_BLRP_SCHEDULE_DELAY": "250",
            "OTEL_LOGS_EXPORTER": "none",
        }
    )
    assert settings.service_name == "chatai-api"
    assert settings.service_version == "1.2.3"
    assert settings.environment == "prod"
    assert settings.resource_attributes["team"] == "ai core"
    assert settings.traces.endpoint == "http://collector:4318/v1/traces"
    assert settings.traces.protocol == "http/protobuf"
    assert settings.metrics.endpoint == "http://metrics:9999/custom"  # per-signal: used as given
    assert settings.traces.headers == {"authorization": "Bearer abc", "x-tenant": "7"}
    assert settings.logs.timeout == 2.5 and settings.traces.timeout == 10.0
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert settings.metric_export_interval == 15.0
    assert settings.span_batch.max_queue_size == 4096
    assert settings.log_batch.schedule_delay == 0.25
    assert settings.logs_exporter == "none"


def test_defaults_and_overrides():
    settings = load_settings({})
    assert settings.traces.endpoint == "http://localhost:4317"
    assert settings.traces.protocol == "grpc"
    assert settings.shutdown_timeout == 5.0
    assert load_settings({}, service_name="bot").service_name == "bot"
    with pytest.raises(TypeError, match="unknown settings: colour"):
        load_settings({}, colour="blue")


def test_settings_are_grouped_by_area_and_configured_by_flat_names():
    settings = load_settings(
        {"CHATAI_OTEL_HEALTH_TIMEOUT": "3", "CHATAI_OTEL_BROWSER_BURST": "7"},
        log_level="debug",
        access_log=False,
        store_url="sqlite:///events.db",
        alert_webhook_url="https://hooks.example/T/secret",
        redact_keys=("pin",),
    )
    assert settings.logging.level == "debug"
    assert settings.web.access_log is False
    assert settings.health.timeout == 3.0
    assert settings.browser.burst == 7
    assert settings.store.url == "sqlite:///events.db"
    assert settings.alerts.webhook_url == "https://hooks.example/T/secret"
    assert settings.redaction.keys == ("pin",)
    # Secrets stay out of the repr of the whole object, as they did of the flat one.
    assert "secret" not in repr(settings) and "events.db" not in repr(settings)
    # A whole group is a base its flat names refine.
    base = StoreSettings(url="sqlite:///a.db", batch_size=10)
    assert load_settings({}, store=base, store_batch_size=20).store == StoreSettings(
        url="sqlite:///a.db", batch_size=20
    )


def test_every_flat_name_is_unambiguous_and_round_trips():
    settings = load_settings({})
    items = {name: value for name, value, _secret in settings.flat_items()}
    # flat_items names every setting; configure() also takes each group whole
    groups = {"logging", "redaction", "web", "health", "alerts", "store", "browser"}
    assert set(flat_names()) == set(items) | groups and not set(items) & groups
    assert items["log_level"] == "info" and items["store_durability"] == "all"
    assert items["excluded_urls"] == settings.web.excluded_urls
    secrets = {name for name, _value, secret in settings.flat_items() if secret}
    assert secrets == {"alert_webhook_url", "alert_webhook_headers", "store_url"}
    # Rebuilt from its own flat items, the object is the same.
    assert load_settings({}, **items) == settings


def test_configure_twice_returns_the_same_handle():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import chatai_otel, chatai_otel.setup as s;"
            "a = chatai_otel.configure(); b = chatai_otel.configure(service_name='other');"
            "assert a is b is s.telemetry; assert a.resource.attributes['service.name'] == 'test-app';"
            "print('OK')",
        ],
        env=telemetry_env(None, OTEL_SDK_DISABLED="false"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_sdk_disabled_exports_nothing_and_still_logs(receiver):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import chatai_otel.setup as s; from chatai_otel import get_logger;"
            "assert not s.telemetry.enabled; get_logger('x').info('still.logged')",
        ],
        env=telemetry_env(receiver, OTEL_SDK_DISABLED="true"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "still.logged" in done.stdout
    assert receiver.counts()["logs"] == 0
