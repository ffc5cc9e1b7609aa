"""The one home of private OpenTelemetry access: nothing else names an SDK internal, every
fast path is on with the installed SDK, and a missing internal turns its path off (one log
line, doctor says so) while the telemetry still arrives."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chatai_otel import _sdk_compat

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "chatai_otel"
COMPAT = PACKAGE / "_sdk_compat.py"

# Private names of other libraries the package may use, and why.
ALLOWED_FOREIGN_PRIVATE = {
    "_getframe": "sys._getframe: the caller's frame for logger names and stack text",
    "_exit": "os._exit: leaving a sitecustomize hook that cannot raise SystemExit",
    "_get_running_loop": "asyncio's C accessor of the running loop, no exception when none",
    "_logger": "structlog: the wrapped logger of a BoundLoggerBase (its documented attribute)",
    "_processors": "structlog: a bound logger's processor chain (BoundLoggerBase)",
    "_process_event": "structlog: the documented hook of custom bound loggers",
    "_CONTEXT_VARS": "structlog.contextvars' registry, read with a public fallback",
    "_register_atexit": "threading's hook run when threads are joined at shutdown",
}


def _modules() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py")) if path != COMPAT]


def _names_we_define() -> set[str]:
    """Every name the package itself binds: its own private names are not foreign."""
    ours: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == COMPAT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                ours.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                ours.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
            elif isinstance(node, ast.arg):
                ours.add(node.arg)
    return ours


def _private(name: str) -> bool:
    """A single-underscore name (dunders and abc's own ``_abc_impl`` are not private API)."""
    return name.startswith("_") and not name.startswith(("__", "_abc_"))


def test_no_module_but_the_compat_layer_names_a_private_opentelemetry_symbol():
    ours = _names_we_define()
    found: list[str] = []
    for path in _modules():
        where = path.relative_to(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("opentelemetry"):
                parts = (node.module or "").split(".")
                names = [alias.name for alias in node.names]
                if any(_private(part) for part in parts) or any(map(_private, names)):
                    found.append(f"{where}:{node.lineno} from {node.module} import {names}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("opentelemetry") and any(
                        _private(part) for part in alias.name.split(".")
                    ):
                        found.append(f"{where}:{node.lineno} import {alias.name}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                if node.attr not in ours and node.attr not in ALLOWED_FOREIGN_PRIVATE:
                    found.append(f"{where}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"opentelemetry(\.\w+)*\._\w+(\.\w+)*", node.value):
                    found.append(f"{where}:{node.lineno} {node.value!r}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and node.args[1].value not in ours
                and node.args[1].value not in ALLOWED_FOREIGN_PRIVATE
            ):
                found.append(f"{where}:{node.lineno} {node.func.id}(..., {node.args[1].value!r})")
    assert not found, "private OpenTelemetry names outside _sdk_compat:\n" + "\n".join(found)


def _opentelemetry_bases(cls: type) -> list[type]:
    return [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("opentelemetry") and base is not object
    ]


def test_no_class_overrides_or_touches_a_private_member_of_an_opentelemetry_base():
    """Subclassing an SDK class must not reach its private hooks or state either."""
    found: list[str] = []
    for path in _modules():
        name = ".".join(("chatai_otel", *path.relative_to(PACKAGE).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        if name == "chatai_otel.setup":
            continue  # importing it configures the process (and has no classes)
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not isinstance(cls, type) or cls.__module__ != name:
                continue
            bases = _opentelemetry_bases(cls)
            if not bases:
                continue
            theirs: set[str] = set()
            for base in bases:
                theirs.update(member for member in vars(base) if _private(member))
                try:
                    theirs.update(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(base)))
                except (OSError, TypeError):
                    pass
            for member in vars(cls):
                if _private(member) and member in theirs:
                    found.append(f"{name}.{cls.__qualname__} defines {member}")
            try:
                source = inspect.getsource(cls)
            except (OSError, TypeError):
                continue
            for member in set(re.findall(r"(?:self|super\(\))\.(_[a-z]\w*)", source)):
                if member in theirs and member not in vars(cls):
                    found.append(f"{name}.{cls.__qualname__} uses {member}")
    assert not found, "private SDK members outside _sdk_compat:\n" + "\n".join(found)


def test_every_fast_path_is_on_with_the_installed_sdk():
    paths = _sdk_compat.fast_paths()
    assert set(paths) == {
        "cheap spans",
        "encoded gRPC export",
        "encoded HTTP export",
        "request histogram",
    }
    off = {name: path.reason for name, path in paths.items() if not path.on}
    assert not off


def test_each_probe_names_the_internal_that_is_missing(monkeypatch):
    """Break one internal at a time (restored afterwards): its probe says which."""
    import opentelemetry.attributes as attributes
    from opentelemetry.exporter.otlp.proto.grpc import exporter
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    def changed(value, limit):  # a release whose helper treats strings otherwise
        return None if isinstance(value, str) else value

    monkeypatch.setattr(attributes, "_clean_attribute_value", changed)
    assert "_clean_attribute_value" in _sdk_compat._probe_spans()
    monkeypatch.undo()

    monkeypatch.delattr(exporter.OTLPExporterMixin, "_initialize_channel_and_stub")
    assert "_initialize_channel_and_stub" in _sdk_compat._probe_grpc_send()
    monkeypatch.undo()

    monkeypatch.setattr(trace_exporter.OTLPSpanExporter, "_export", None, raising=False)
    original_init = trace_exporter.OTLPSpanExporter.__init__

    def without_client(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.__dict__.pop("_client", None)

    monkeypatch.setattr(trace_exporter.OTLPSpanExporter, "__init__", without_client)
    assert "neither" in _sdk_compat._probe_http_send()
    monkeypatch.undo()

    from opentelemetry.sdk.metrics._internal import exemplar

    class Reordered:  # a release whose Exemplar takes its fields in another order
        def __init__(self, value, time_unix_nano, filtered_attributes=None):
            pass

    monkeypatch.setattr(exemplar, "Exemplar", Reordered)
    assert "Exemplar(" in _sdk_compat._probe_histograms()
    monkeypatch.undo()

    assert not any(
        probe() for probe in (_sdk_compat._probe_spans, _sdk_compat._probe_histograms)
    ), "undo restored every internal"


# A child process where every probe finds its internal missing (as on an SDK release the
# compat layer does not know), then a span, a log record and a request-histogram point
# through a real receiver: the stock SDK paths and our plain senders carry them.
_EVERY_PATH_OFF = r"""
import json, sys
from chatai_otel import _sdk_compat

def missing():
    return "AttributeError: the internal is not there (simulated)"

_sdk_compat._PROBES = tuple(
    (name, uses, fallback, missing) for name, uses, fallback, _probe in _sdk_compat._PROBES
)
print(json.dumps({name: [path.on, path.reason] for name, path in _sdk_compat.fast_paths().items()}))
sys.stdout.flush()

import chatai_otel
from chatai_otel.export.senders import PlainGrpcSender, PlainHttpSender
from chatai_otel.export.histograms import request_histogram
from chatai_otel.export.spans import processor_of
from chatai_otel.export.cheap_spans import FastTracer
from opentelemetry import trace

telemetry = chatai_otel.configure()
sender = processor_of(trace.get_tracer_provider())._exporter
assert isinstance(sender, (PlainGrpcSender, PlainHttpSender)), sender
tracer = FastTracer("compat.test")
with tracer.start_as_current_span("after-the-fallback") as span:
    assert type(span).__module__.startswith("opentelemetry.sdk"), type(span)
    chatai_otel.get_logger("compat").info("log through the fallback")
histogram = request_histogram(
    "compat.histogram", unit="s", description="d", boundaries=[1.0], scope_name="compat",
    scope_version=None,
)
assert type(histogram).__name__ == "_SdkHistogramAdapter", histogram
histogram.record(0.5, (), {"a": "b"})
telemetry.shutdown()
"""


@pytest.mark.e2e
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_missing_internals_turn_their_fast_paths_off_and_telemetry_still_arrives(
    receiver, protocol
):
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "compat-fallback",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }
    done = subprocess.run(
        [sys.executable, "-c", _EVERY_PATH_OFF],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout.splitlines()[0])
    assert not any(on for on, _reason in paths.values())
    # one line per path this process uses that is off: which, why, and what runs instead
    sending = "encoded gRPC export" if protocol == "grpc" else "encoded HTTP export"
    other = "encoded HTTP export" if protocol == "grpc" else "encoded gRPC export"
    for name in ("cheap spans", sending, "request histogram"):
        lines = [line for line in done.stdout.splitlines() if f"{name} off on" in line]
        assert len(lines) == 1, done.stdout
    assert f"{other} off on" not in done.stdout  # not used, so not even probed
    span = receiver.wait_for_spans(predicate=lambda item: item.name == "after-the-fallback")[0]
    assert span.resource["service.name"] == "compat-fallback"
    log = receiver.wait_for_logs(predicate=lambda item: item.body == "log through the fallback")[0]
    assert log.trace_id == span.trace_id
    point = receiver.wait_for_metrics(predicate=lambda item: item.name == "compat.histogram")[0]
    assert point.kind == "histogram" and point.count == 1


@pytest.mark.e2e
def test_doctor_lists_the_fast_paths():
    doctor = Path(sys.executable).with_name("chatai-otel")
    done = subprocess.run(
        [str(doctor), "doctor"],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    section = done.stdout.split("Fast paths")[1].split("\n\n")[0]
    for name in ("cheap spans", "encoded gRPC export", "encoded HTTP export", "request histogram"):
        assert re.search(rf"{name}\s+on\s+uses ", section), section
