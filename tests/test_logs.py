"""The logging pipeline in-process: one shape, correlation, robustness, redaction, audit, files.

Each test configures the real pipeline (real SDK providers, the real LogExportProcessor and
OTLP/gRPC exporter) against the real OTLP receiver fixture, and reads what was printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import io
import json
import logging
import logging.config
import sys
import uuid
from decimal import Decimal
from pathlib import Path, PurePosixPath

import pydantic
import pytest
from opentelemetry.sdk.trace import TracerProvider

from chatai_otel import context, get_audit_logger, get_logger
from chatai_otel.config import load_settings
from chatai_otel.export.logs import processor_of
from chatai_otel.logs.configure import configure_logging, reset_logging
from chatai_otel.logs.stdlib_bridge import StdlibBridge
from chatai_otel.redaction import REDACTED

tracer = TracerProvider().get_tracer("test")
CORE_KEYS = {"timestamp", "level", "logger", "message", "module", "function", "line"}


# --- shape and correlation -------------------------------------------------------------


def test_structlog_and_stdlib_lines_have_the_same_keys(make_pipeline):
    pipe = make_pipeline()
    context.bind(request_id="req-shape")
    with tracer.start_as_current_span("shape"):
        get_logger("chatai.api").info("dialog.opened", dialog_id=42)
        logging.getLogger("uvicorn.error").info("dialog.opened", extra={"dialog_id": 42})
        logging.getLogger("sqlalchemy.engine").warning("slow %s", "query", extra={"dialog_id": 1})
    structlog_line, stdlib_line, sqlalchemy_line = pipe.stdout_json()
    assert set(structlog_line) == set(stdlib_line) == set(sqlalchemy_line)
    assert set(structlog_line) == CORE_KEYS | {"request_id", "dialog_id", "trace_id", "span_id"}
    assert list(structlog_line)[:4] == ["timestamp", "level", "logger", "message"]
    assert structlog_line["logger"] == "chatai.api"
    assert stdlib_line["logger"] == "uvicorn.error"
    assert sqlalchemy_line["message"] == "slow query"
    assert sqlalchemy_line["level"] == "WARNING"
    for line in (structlog_line, stdlib_line):
        assert line["module"] == "test_logs"
        assert line["function"] == "test_structlog_and_stdlib_lines_have_the_same_keys"
        assert isinstance(line["line"], int)
        assert line["timestamp"].endswith("Z")
        dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))


def test_trace_ids_on_stdout_and_in_otlp_equal_the_active_span(make_pipeline):
    pipe = make_pipeline()
    log = get_logger("corr")
    with tracer.start_as_current_span("outer") as outer:
        log.info("in.outer")
        with tracer.start_as_current_span("inner") as inner:
            logging.getLogger("corr.std").info("in.inner")
    log.info("no.span")
    expected = {
        "in.outer": outer.get_span_context(),
        "in.inner": inner.get_span_context(),
    }
    lines = {line["message"]: line for line in pipe.stdout_json()}
    records = {r.body: r for r in pipe.exported(3, lambda r: r.scope.startswith("corr"))}
    for message, span_context in expected.items():
        assert lines[message]["trace_id"] == format(span_context.trace_id, "032x")
        assert lines[message]["span_id"] == format(span_context.span_id, "016x")
        assert records[message].trace_id == format(span_context.trace_id, "032x")
        assert records[message].span_id == format(span_context.span_id, "016x")
    assert "trace_id" not in lines["no.span"]
    assert records["no.span"].trace_id == ""


def test_otlp_record_fields(make_pipeline):
    pipe = make_pipeline()
    context.bind(user_id=7, session_id="chat-9", request_id="req-1")
    get_logger("fields").warning("payment.failed", amount=12.5, tags=["a", "b"], meta={"k": 1})
    (record,) = pipe.exported(1, lambda r: r.scope == "fields")
    assert record.body == "payment.failed"
    assert record.severity_text == "WARNING"
    assert record.severity_number == 13
    assert record.resource["service.name"] == "test-logs"
    attributes = record.attributes
    assert attributes["user.id"] == 7  # semantic-convention names
    assert attributes["session.id"] == "chat-9"
    assert attributes["request_id"] == "req-1"
    assert attributes["amount"] == 12.5
    assert attributes["tags"] == ["a", "b"]
    assert attributes["meta"] == {"k": 1}  # kept as an OTLP map
    assert attributes["code.function.name"] == "test_otlp_record_fields"
    assert attributes["code.file.path"].endswith("test_logs.py")
    assert isinstance(attributes["code.line.number"], int)
    (line,) = pipe.stdout_json()
    assert line["user_id"] == 7 and line["session_id"] == "chat-9"


def test_every_line_is_printed_once_and_exported_once(make_pipeline):
    pipe = make_pipeline()
    log = get_logger("once")
    std = logging.getLogger("once.std")
    with tracer.start_as_current_span("once"):
        for number in range(150):
            if number % 3 == 0:
                std.info("line", extra={"n": number})
            else:
                log.info("line", n=number)
    lines = [line for line in pipe.stdout_json() if line["message"] == "line"]
    assert sorted(line["n"] for line in lines) == list(range(150))
    records = pipe.exported(150, lambda r: r.body == "line")
    assert sorted(r.attributes["n"] for r in records) == list(range(150))
    processor = processor_of(pipe.telemetry.logger_provider)
    assert processor is not None and processor.dropped == 0


def test_exceptions_become_structured_fields(make_pipeline):
    pipe = make_pipeline()
    try:
        {}["missing"]
    except KeyError:
        get_logger("exc").exception("lookup.failed", key="missing")
        logging.getLogger("exc.std").error("lookup.failed", exc_info=True)
    for line in pipe.stdout_json():
        exception = line["exception"]
        assert exception["type"] == "KeyError"
        assert exception["message"] == "'missing'"
        assert exception["stacktrace"].startswith("Traceback (most recent call last)")
        assert "KeyError: 'missing'" in exception["stacktrace"]
        assert line["level"] == "ERROR"
    records = pipe.exported(2, lambda r: r.scope.startswith("exc"))
    for record in records:
        assert record.attributes["exception.type"] == "KeyError"
        assert record.attributes["exception.message"] == "'missing'"
        assert "Traceback" in record.attributes["exception.stacktrace"]
        assert record.severity_number == 17


def test_context_fields_and_explicit_fields(make_pipeline):
    pipe = make_pipeline()
    log = get_logger("ctx").bind(component="billing")
    with context.bound(request_id="r-1", user_id=5):
        log.info("a")
        log.info("b", request_id="explicit")
    log.info("c")
    a, b, c = pipe.stdout_json()
    assert (a["request_id"], a["user_id"], a["component"]) == ("r-1", 5, "billing")
    assert b["request_id"] == "explicit"
    assert "request_id" not in c


async def test_context_bound_the_structlog_way_is_on_every_line_and_record(make_pipeline):
    """structlog.contextvars, as structlog's docs and every FastAPI guide bind request context:
    on structlog and stdlib lines, in the OTLP record, with task and thread isolation."""
    import asyncio
    import threading

    from structlog.contextvars import (
        bind_contextvars,
        bound_contextvars,
        clear_contextvars,
        unbind_contextvars,
    )

    pipe = make_pipeline()
    log = get_logger("x")
    clear_contextvars()
    try:
        bind_contextvars(tenant="acme", job_id=7)
        log.info("with.ctx")
        logging.getLogger("x.std").warning("stdlib.ctx")
        with context.bound(tenant="ours"):
            log.info("clash")  # our context wins over structlog's
        log.info("explicit", job_id=8)  # the call's own field wins over both
        with bound_contextvars(step="upload"):
            log.info("bound")
        log.info("after.bound")
        unbind_contextvars("job_id")
        log.info("unbound")

        thread = threading.Thread(target=lambda: log.info("thread"))  # a thread starts empty
        thread.start()
        thread.join()

        async def child() -> None:
            bind_contextvars(task="child")
            log.info("child")

        await asyncio.create_task(child())
        log.info("parent")  # the task's binding stayed in the task
        clear_contextvars()
        log.info("cleared")
    finally:
        clear_contextvars()

    lines = {line["message"]: line for line in pipe.stdout_json()}
    picked = {
        message: {k: line.get(k) for k in ("tenant", "job_id", "step", "task")}
        for message, line in lines.items()
    }
    none = {"tenant": None, "job_id": None, "step": None, "task": None}
    assert picked == {
        "with.ctx": {**none, "tenant": "acme", "job_id": 7},
        "stdlib.ctx": {**none, "tenant": "acme", "job_id": 7},
        "clash": {**none, "tenant": "ours", "job_id": 7},
        "explicit": {**none, "tenant": "acme", "job_id": 8},
        "bound": {**none, "tenant": "acme", "job_id": 7, "step": "upload"},
        "after.bound": {**none, "tenant": "acme", "job_id": 7},
        "unbound": {**none, "tenant": "acme"},
        "thread": none,
        "child": {**none, "tenant": "acme", "task": "child"},
        "parent": {**none, "tenant": "acme"},
        "cleared": none,
    }
    records = {r.body: r for r in pipe.exported(11, lambda r: r.body in picked)}
    assert records["with.ctx"].attributes["tenant"] == "acme"
    assert records["with.ctx"].attributes["job_id"] == 7
    assert records["clash"].attributes["tenant"] == "ours"
    assert "tenant" not in records["cleared"].attributes


def test_secrets_bound_the_structlog_way_are_scrubbed(make_pipeline):
    from structlog.contextvars import bound_contextvars

    pipe = make_pipeline()
    with bound_contextvars(api_key="sk-live-0123456789abcdefXYZ", note="Bearer abcdef123456"):
        get_logger("x").info("secret.ctx")
    (line,) = pipe.stdout_json()
    assert line["api_key"] == REDACTED
    assert line["note"] == f"Bearer {REDACTED}"
    (record,) = pipe.exported(1, lambda r: r.body == "secret.ctx")
    assert record.attributes["api_key"] == REDACTED
    assert "abcdef123456" not in str(record.attributes)


async def test_200_concurrent_requests_never_mix_their_request_ids_in_log_lines(make_pipeline):
    import asyncio
    import random

    pipe = make_pipeline()
    log = get_logger("concurrent")
    std = logging.getLogger("concurrent.std")

    async def request(number: int) -> None:
        with context.bound(request_id=f"req-{number}", user_id=number):
            for step in range(3):
                await asyncio.sleep(random.random() / 500)
                if step == 1:
                    std.info("step", extra={"task": number})
                else:
                    log.info("step", task=number)

    await asyncio.gather(*(request(n) for n in range(200)))
    lines = [line for line in pipe.stdout_json() if line["message"] == "step"]
    assert len(lines) == 600
    for line in lines:
        assert line["request_id"] == f"req-{line['task']}"
        assert line["user_id"] == line["task"]
    records = pipe.exported(600, lambda r: r.body == "step")
    for record in records:
        assert record.attributes["request_id"] == f"req-{record.attributes['task']}"
        assert record.attributes["user.id"] == record.attributes["task"]


def test_seed_call_styles_are_understood(make_pipeline):
    pipe = make_pipeline()
    logging.getLogger("seed").info("HTTP_REQUEST_START", extra={"extra_fields": {"method": "GET"}})
    get_logger("seed2").info("HTTP_REQUEST_COMPLETE", extra={"status_code": 200})
    get_logger("seed3").info("user %s logged in", "bob")
    first, second, third = pipe.stdout_json()
    assert first["method"] == "GET" and "extra_fields" not in first
    assert second["status_code"] == 200 and "extra" not in second
    assert third["message"] == "user bob logged in"


def test_otel_api_records_share_the_one_export_path(make_pipeline):
    pipe = make_pipeline()
    otel_logger = pipe.telemetry.logger_provider.get_logger("some.instrumentation", "1.2")
    otel_logger.emit(body="from the logs api", attributes={"x": 1}, event_name="gen_ai.choice")
    (record,) = pipe.exported(1, lambda r: r.scope == "some.instrumentation")
    assert record.body == "from the logs api"
    assert record.attributes == {"x": 1}
    assert record.event_name == "gen_ai.choice"


def test_otel_api_records_are_scrubbed_too(make_pipeline):
    """Records of the OTel Logs API skip our pipeline: the export processor scrubs them."""
    pipe = make_pipeline()
    otel_logger = pipe.telemetry.logger_provider.get_logger("other.library")
    otel_logger.emit(
        body="login failed password=hunter2pw Authorization: Bearer xyz123",
        attributes={
            "api_key": "k-123456",
            "exception.message": "cannot reach postgresql://app:s3cretpw@db/chat",
            "n": 1,
        },
    )
    otel_logger.emit(body={"user": "bob", "headers": {"cookie": "sid=c00kie"}})
    first, second = pipe.exported(2, lambda r: r.scope == "other.library")
    exported = repr([(r.body, r.attributes) for r in (first, second)])
    for secret in ("hunter2pw", "xyz123", "k-123456", "s3cretpw", "c00kie"):
        assert secret not in exported, secret
    assert first.body == f"login failed password={REDACTED} Authorization: {REDACTED}"
    assert first.attributes["api_key"] == REDACTED and first.attributes["n"] == 1
    assert second.body == {"user": "bob", "headers": {"cookie": REDACTED}}


# --- what is never exported ---------------------------------------------------------------


def test_opentelemetry_and_export_diagnostics_are_printed_on_stderr_never_exported(make_pipeline):
    pipe = make_pipeline()
    logging.getLogger("opentelemetry.sdk._shared_internal").warning("export failed: boom")
    logging.getLogger("chatai_otel.export").warning("queue full")
    get_logger("app").info("marker")
    pipe.exported(1, lambda r: r.body == "marker")
    assert not [r for r in pipe.all_exported() if r.body in ("export failed: boom", "queue full")]
    assert [line["message"] for line in pipe.stdout_json()] == ["marker"]
    stderr = [line["message"] for line in pipe.stderr_json()]
    assert "export failed: boom" in stderr and "queue full" in stderr


# --- robustness ----------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Order:
    id: int
    total: Decimal


class Profile(pydantic.BaseModel):
    name: str
    born: dt.date


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __str__(self) -> str:
        raise RuntimeError("no str either")


ROBUST_VALUES = [
    ("datetime", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), "2024-05-06T07:08:09+00:00"),
    ("date", dt.date(2024, 5, 6), "2024-05-06"),
    ("time", dt.time(7, 8), "07:08:00"),
    ("decimal", Decimal("12.345"), "12.345"),
    ("uuid", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("bytes", b"ab\x00\xff", "ab\x00\\xff"),
    ("set", {3}, [3]),
    ("frozenset", frozenset({"x"}), ["x"]),
    ("tuple", (1, "a"), [1, "a"]),
    ("enum", Colour.RED, "red"),
    ("path", PurePosixPath("/tmp/x"), "/tmp/x"),
    ("dataclass", Order(1, Decimal("9.90")), {"id": 1, "total": "9.90"}),
    (
        "pydantic",
        Profile(name="bob", born=dt.date(2000, 1, 2)),
        {"name": "bob", "born": "2000-01-02"},
    ),
    ("object", Opaque(), "<Opaque thing>"),
    ("hostile", Hostile(), "<unrepresentable Hostile>"),
    ("huge_int", 2**80, str(2**80)),
    ("non_str_keys", {1: "a", (2, 3): "b"}, {"1": "a", "(2, 3)": "b"}),
    ("exception", ValueError("bad"), "ValueError: bad"),
    ("nan", float("nan"), None),
]


@pytest.mark.parametrize(
    ("name", "value", "expected"), ROBUST_VALUES, ids=[v[0] for v in ROBUST_VALUES]
)
def test_values_json_cannot_encode_render_without_raising(make_pipeline, name, value, expected):
    pipe = make_pipeline()
    get_logger("robust").info("value", **{name: value})
    (line,) = pipe.stdout_json()
    assert line[name] == expected
    (record,) = pipe.exported(1, lambda r: r.scope == "robust")
    assert name in record.attributes


def test_values_over_the_size_limit_are_truncated_with_a_marker(make_pipeline):
    pipe = make_pipeline(CHATAI_OTEL_LOG_MAX_VALUE_SIZE="1024")
    big = "x" * 5000
    get_logger("size").info(big, blob=big, items=list(range(2000)), small="ok")
    (line,) = pipe.stdout_json()
    assert line["blob"].startswith("x" * 1024)
    assert line["blob"].endswith("…[truncated 3976 chars]")
    assert line["message"].endswith("…[truncated 3976 chars]")
    assert isinstance(line["items"], str) and "truncated" in line["items"]
    assert len(line["items"]) < 1100
    assert line["small"] == "ok"
    (record,) = pipe.exported(1, lambda r: r.scope == "size")
    assert len(record.attributes["blob"]) < 1100


def test_a_secret_cut_in_half_by_truncation_never_leaves_in_part(make_pipeline):
    """Scrubbing runs before the cut: a URL password straddling the size limit (of a message,
    a field, an exception message, the head and the tail of a long stack trace) is redacted
    whole, where scrubbing after the cut saw "postgresql://app:hu" and let "hu" through."""
    pipe = make_pipeline(CHATAI_OTEL_LOG_MAX_VALUE_SIZE="256")
    secret = "Qz7Kp2Vw9Xr4Jm8Ln3Bt"
    at_the_cut = "x" * 230 + " postgresql://app:" + secret + "@db/chat"  # 256 falls in it
    # the stack trace keeps its first and last 512 characters: put the secret on both cuts
    error = RuntimeError(
        f"{'z' * 420} postgresql://app:{secret}@db {'y' * 300} postgresql://app:{secret}@db "
        + "w" * 500
    )
    try:
        raise error
    except RuntimeError:
        get_logger("cut").exception(at_the_cut, blob=at_the_cut)
    (line,) = pipe.stdout_json()
    (record,) = pipe.exported(1, lambda r: r.scope == "cut")
    trace_text = line["exception"]["stacktrace"]
    assert "truncated" in trace_text and len(trace_text) < 1100
    assert "truncated" in line["message"] and "truncated" in line["blob"]
    outputs = (json.dumps(line), repr((record.body, record.attributes)))
    for output in outputs:
        for start in range(len(secret) - 3):  # not even four characters of it
            assert secret[start : start + 4] not in output, (secret[start : start + 4], output)


def test_long_stack_traces_keep_their_tail(make_pipeline):
    pipe = make_pipeline(CHATAI_OTEL_LOG_MAX_VALUE_SIZE="256")

    # two functions calling each other: identical consecutive frames would be collapsed
    def ping(depth: int) -> None:
        if depth == 0:
            raise RuntimeError("deep failure")
        pong(depth - 1)

    def pong(depth: int) -> None:
        ping(depth)

    try:
        ping(60)
    except RuntimeError:
        get_logger("deep").exception("failed")
    (line,) = pipe.stdout_json()
    stack = line["exception"]["stacktrace"]
    assert "truncated" in stack
    assert stack.rstrip().endswith("RuntimeError: deep failure")
    assert len(stack) < 256 * 4 + 100


FORGED = (
    'ok\n{"timestamp":"2020-01-01T00:00:00Z","level":"CRITICAL","message":"forged"}\r\x1b[2J\u2028'
)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_newlines_and_control_characters_cannot_forge_a_line(make_pipeline, log_format):
    pipe = make_pipeline(CHATAI_OTEL_LOG_FORMAT=log_format)
    get_logger("forge").info(FORGED, field=FORGED, **{FORGED: "key"})
    logging.getLogger("forge.std").warning("%s", FORGED, extra={"f": FORGED})
    lines = pipe.stdout_lines()
    assert len(lines) == 2
    for line in lines:
        assert "\r" not in line and "\x1b" not in line and "\u2028" not in line
        if log_format == "json":
            assert json.loads(line)["message"] == FORGED
        else:
            assert "\\n" in line and "\\x1b" in line


@pytest.mark.parametrize("tty", [True, False])
def test_auto_format_is_console_on_a_tty_and_json_otherwise(make_pipeline, monkeypatch, tty):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    pipe = make_pipeline(CHATAI_OTEL_LOG_FORMAT="auto")
    get_logger("auto").info("hello", n=1)
    (line,) = pipe.stdout_lines()
    if tty:
        assert not line.startswith("{") and "[auto]" in line and "hello" in line
        assert "\x1b[32m" in line and "n=1" in line  # INFO in green, fields as key=value
    else:
        assert json.loads(line)["message"] == "hello"


def test_console_format_is_readable_and_indents_the_traceback(make_pipeline):
    pipe = make_pipeline(CHATAI_OTEL_LOG_FORMAT="console")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        get_logger("console").exception("it failed", order=5)
    lines = pipe.stdout_lines()
    assert "ERROR" in lines[0] and "[console]" in lines[0] and "it failed" in lines[0]
    assert "order=5" in lines[0]
    assert all(line.startswith("    | ") for line in lines[1:])
    assert any("ValueError: bad" in line for line in lines[1:])


def test_a_logging_call_never_raises_into_its_caller(make_pipeline, monkeypatch):
    pipe = make_pipeline()
    log = get_logger("never")
    log.info(Hostile())  # message whose str() and repr() raise
    log.info("%s and %s", "only one")  # bad format arguments
    log.info("value", weird=Hostile())
    # stdlib records with bad arguments (given to the bridge directly: pytest's own capture
    # handler on the root logger would turn the formatting error into a test failure)
    bridge = StdlibBridge()
    bridge.handle(logging.LogRecord("never.std", logging.INFO, __file__, 1, "%d", ("x",), None))
    bridge.handle(logging.LogRecord("never.std", logging.INFO, __file__, 2, Hostile(), (), None))

    class BrokenStream(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("stdout is gone")

    monkeypatch.setattr(sys, "stdout", BrokenStream())
    log.info("into a broken stdout")
    monkeypatch.undo()
    log.info("after")
    messages = [line["message"] for line in pipe.stdout_json()]
    assert messages[0] == "<unrepresentable Hostile>"
    assert messages[1].startswith("%s and %s")
    assert messages[2] == "value"
    assert messages[3].startswith("'%d' % ('x',)")
    assert messages[4] == "<unrepresentable Hostile>"
    assert messages[-1] == "after"
    records = pipe.exported(1, lambda r: r.body == "into a broken stdout")
    assert records  # the export still happened


# --- redaction in the pipeline --------------------------------------------------------------


def test_secrets_in_fields_messages_and_exceptions_never_leave(make_pipeline):
    pipe = make_pipeline()
    log = get_logger("secrets")
    log.info(
        "calling postgresql://app:pw-in-message@db/x",
        password="pw-field",
        headers={"Authorization": "Bearer tok-in-header-123", "Accept": "*/*"},
        nested=[{"deep": {"api_key": "key-deep"}}],
        author="Alice",
    )
    try:
        raise ConnectionError("could not connect to redis://:pw-in-exception@cache:6379")
    except ConnectionError:
        log.exception("failed")
    logging.getLogger("secrets.std").info("token=pw-stdlib", extra={"session": "cookie-value"})
    printed = "\n".join(pipe.stdout_lines())
    records = pipe.exported(3, lambda r: r.scope.startswith("secrets"))
    exported = repr([(r.body, r.attributes) for r in records])
    for secret in (
        "pw-in-message",
        "pw-field",
        "tok-in-header-123",
        "key-deep",
        "pw-in-exception",
        "pw-stdlib",
        "cookie-value",
    ):
        assert secret not in printed
        assert secret not in exported
    assert "Alice" in printed and REDACTED in printed
    assert '"Accept":"*/*"' in printed


# --- audit, files, levels ---------------------------------------------------------------------


def test_audit_stream_is_marked_never_level_filtered_and_has_its_own_file(make_pipeline, tmp_path):
    pipe = make_pipeline(
        CHATAI_OTEL_LOG_LEVEL="error",
        CHATAI_OTEL_LOG_DIR=str(tmp_path / "logs"),
    )
    get_audit_logger().debug("AUDIT: user_login", user_id=1)
    logging.getLogger("audit").info("AUDIT: balance_topped_up", extra={"amount": 5})
    get_logger("app").info("filtered out")
    get_logger("app").error("kept")
    lines = pipe.stdout_json()
    assert [line["message"] for line in lines] == [
        "AUDIT: user_login",
        "AUDIT: balance_topped_up",
        "kept",
    ]
    assert lines[0]["log.type"] == "audit" and lines[1]["log.type"] == "audit"
    records = pipe.exported(2, lambda r: r.scope == "audit")
    assert all(r.attributes["log.type"] == "audit" for r in records)
    logs = tmp_path / "logs"
    audit_lines = [json.loads(x) for x in (logs / "audit.log").read_text().splitlines()]
    assert [x["message"] for x in audit_lines] == ["AUDIT: user_login", "AUDIT: balance_topped_up"]
    assert [json.loads(x)["message"] for x in (logs / "api.log").read_text().splitlines()] == [
        "kept"
    ]
    assert [json.loads(x)["message"] for x in (logs / "error.log").read_text().splitlines()] == [
        "kept"
    ]


def test_files_split_like_the_seed(make_pipeline, tmp_path):
    pipe = make_pipeline(
        CHATAI_OTEL_LOG_FILE=str(tmp_path / "app.log"),
        CHATAI_OTEL_LOG_ERROR_FILE=str(tmp_path / "err" / "error.log"),
        CHATAI_OTEL_LOG_STDOUT="false",
    )
    log = get_logger("files")
    log.info("one")
    log.warning("two")
    logging.getLogger("files.std").error("three")
    log.critical("four")
    assert pipe.stdout_lines() == []
    app = [json.loads(x)["message"] for x in (tmp_path / "app.log").read_text().splitlines()]
    errors = [
        json.loads(x)["message"] for x in (tmp_path / "err" / "error.log").read_text().splitlines()
    ]
    assert app == ["one", "two", "three", "four"]
    assert errors == ["three", "four"]


def test_an_unwritable_log_file_is_a_config_error(receiver, tmp_path):
    from chatai_otel.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = load_settings({"CHATAI_OTEL_LOG_FILE": str(blocker / "app.log")})
    with pytest.raises(ConfigError, match="CHATAI_OTEL_LOG_FILE"):
        configure_logging(settings, None)
    reset_logging()


def test_per_logger_levels_apply_to_structlog_and_stdlib(make_pipeline):
    pipe = make_pipeline(CHATAI_OTEL_LOG_LEVELS="noisy=error,chatty=debug")
    get_logger("noisy").warning("hidden")
    get_logger("noisy.child").warning("hidden")
    logging.getLogger("noisy.std").warning("hidden")
    get_logger("noisy").error("shown-1")
    get_logger("chatty").debug("shown-2")
    logging.getLogger("chatty.std").debug("shown-3")
    get_logger("other").debug("hidden")
    assert [line["message"] for line in pipe.stdout_json()] == ["shown-1", "shown-2", "shown-3"]
    assert get_logger("chatty").is_enabled_for(logging.DEBUG)
    assert not get_logger("noisy").is_enabled_for(logging.WARNING)


# --- frameworks' own console handlers ------------------------------------------------------------


def test_uvicorn_access_logger_is_quiet_by_default_even_after_its_dict_config(make_pipeline):
    """One access line per request (ours): uvicorn's logger has no handler and does not
    propagate, so uvicorn's ``hasHandlers()`` check skips formatting its line."""
    from uvicorn.config import LOGGING_CONFIG

    pipe = make_pipeline()
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does after we configured
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/", "1.1", 200)
    assert pipe.stdout_lines() == []
    reset_logging()
    assert access.propagate  # handed back as it was


def test_framework_console_handlers_are_captured_after_dict_config(make_pipeline):
    from uvicorn.config import LOGGING_CONFIG

    pipe = make_pipeline(CHATAI_OTEL_UVICORN_ACCESS_LOG="true")
    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does after we configured
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 123)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/", "1.1", 200
    )
    gunicorn = logging.getLogger("gunicorn.error")
    gunicorn.propagate = False
    gunicorn.addHandler(logging.StreamHandler(sys.stderr))
    from chatai_otel.logs.stdlib_bridge import capture_stdlib_logging

    capture_stdlib_logging()  # as after fork in a gunicorn worker
    gunicorn.info("Booting worker with pid: %s", 77)
    lines = pipe.stdout_json()
    assert [line["message"] for line in lines] == [
        "Started server process [123]",
        '127.0.0.1:5000 - "GET / HTTP/1.1" 200',
        "Booting worker with pid: 77",
    ]
    assert "color_message" not in lines[0]
    assert pipe.stderr_json() == []
    assert "Started server process" not in pipe.err
    records = pipe.exported(3, lambda r: r.scope.startswith(("uvicorn", "gunicorn")))
    assert len(records) == 3


def test_basic_config_force_cannot_remove_the_bridge(make_pipeline):
    pipe = make_pipeline()
    logging.basicConfig(force=True, level=logging.INFO)
    logging.getLogger("after.basic").info("still once")
    assert [line["message"] for line in pipe.stdout_json()] == ["still once"]
    assert "still once" not in pipe.err


def test_logging_before_configure_prints_json_without_exporting(capsys):
    reset_logging()
    get_logger("early").debug("below our default level (INFO)")
    get_logger("early").info("before configure", n=1)
    line = json.loads(capsys.readouterr().out)
    assert line["message"] == "before configure" and line["n"] == 1


def test_app_file_path_is_created(make_pipeline, tmp_path: Path):
    target = tmp_path / "a" / "b" / "app.log"
    make_pipeline(CHATAI_OTEL_LOG_FILE=str(target))
    get_logger("mk").info("x")
    assert json.loads(target.read_text())["message"] == "x"
