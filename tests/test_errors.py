"""track_error: the exception on the span, a counter point, a log line and a store record."""

from __future__ import annotations

from typing import Any

import pytest

from chatai_otel import ErrorCategory, ErrorSeverity, track_error
from chatai_otel import metric_names as names
from chatai_otel.tracking.errors import ErrorReport, error_tracker, fingerprint
from support.events import last_points, run_scenario, stdout_lines

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

ERROR = 2  # StatusCode.ERROR in OTLP


def test_seed_values():
    assert [s.value for s in ErrorSeverity] == ["low", "medium", "high", "critical"]
    assert [c.value for c in ErrorCategory] == [
        "authentication",
        "authorization",
        "validation",
        "business_logic",
        "external_service",
        "database",
        "system",
    ]


def test_errors_arrive_on_the_span_counter_and_log(receiver):
    result, stdout = run_scenario(receiver, "errors")
    request = receiver.wait_for_spans(1, lambda s: s.name == "request errors")[0]
    exceptions = [e for e in request.events if e["name"] == "exception"]
    assert [e["attributes"]["error.severity"] for e in exceptions] == [
        "low",
        "medium",
        "high",
        "critical",
    ]
    for event in exceptions:
        attributes = event["attributes"]
        assert attributes["exception.type"] == "ConnectionError"
        assert attributes["error.category"] == "database"
        assert "s3cret" not in attributes["exception.message"]
        assert "app:[REDACTED]@db" in attributes["exception.message"]
        assert "s3cret" not in attributes["exception.stacktrace"]
        assert attributes["chatai.event.id"] in result.values()
    # MEDIUM and up fail the span; the message on the status is scrubbed too
    assert request.status_code == ERROR
    assert "s3cret" not in request.status_message
    assert request.attributes["error.type"] == "ConnectionError"

    # outside any span: a span of its own, LOW leaves its status alone
    own = receiver.wait_for_spans(1, lambda s: s.name == "error validation")[0]
    assert (
        own.status_code != ERROR and own.events[0]["attributes"]["exception.type"] == "ValueError"
    )

    # on_span=False: the span is the caller's business, the rest happens
    handled = receiver.wait_for_spans(1, lambda s: s.name == "request handled")[0]
    assert handled.events == [] and handled.status_code != ERROR

    receiver.wait_for_metrics(1, lambda p: p.name == names.ERRORS)
    latest = last_points(receiver, names.ERRORS)
    counts = {
        (a["error.category"], a["error.severity"], a["error.type"]): p.value
        for a, p in ((dict(key), point) for key, point in latest.items())
    }
    assert counts == {
        ("database", "low", "ConnectionError"): 1,
        ("database", "medium", "ConnectionError"): 1,
        ("database", "high", "ConnectionError"): 1,
        ("database", "critical", "ConnectionError"): 1,
        ("validation", "low", "ValueError"): 1,
        ("business_logic", "high", "LookupError"): 1,
    }
    assert next(iter(latest.values())).unit == "{error}"

    lines = [line for line in stdout_lines(stdout) if line.get("message") == "application_error"]
    levels = [line["level"] for line in lines]
    assert levels == ["ERROR", "ERROR", "ERROR", "CRITICAL", "ERROR", "ERROR"]
    first = lines[0]
    assert first["context"] == {"endpoint": "/dialogs", "api_key": "[REDACTED]"}
    assert first["request_id"] == "req-err" and first["user_id"] == 77
    assert first["exception.type"] == "ConnectionError"
    assert "s3cret" not in str(first)
    assert first["trace_id"] == request.trace_id
    otlp = receiver.wait_for_logs(6, lambda r: r.body == "application_error")
    assert {r.severity_text for r in otlp} == {"ERROR", "CRITICAL"}


async def test_error_record_goes_to_the_store_and_await_works():
    from chatai_otel import context
    from chatai_otel.store.records import ErrorRecord, set_sink

    class ListSink:
        def __init__(self) -> None:
            self.queued: list[ErrorRecord] = []

        async def put(self, record: Any) -> None:
            raise AssertionError("track_error never waits for the store")

        def put_nowait(self, record: Any) -> bool:
            self.queued.append(record)
            return True

    sink = ListSink()
    previous = set_sink(sink)
    try:
        with context.bound(request_id="req-7", user_id=5):
            try:
                raise PermissionError("no access for Bearer abcdefghijklmnop")
            except PermissionError as exc:
                report = await error_tracker.track_error(
                    error=exc,
                    category=ErrorCategory.AUTHORIZATION,
                    severity=ErrorSeverity.HIGH,
                    context={"endpoint": "/admin", "session": "s-1"},
                )
        plain = track_error(ValueError("x"))
    finally:
        set_sink(previous)
    assert isinstance(report, ErrorReport) and report.event_id
    assert isinstance(plain, ErrorReport) and (await plain) is plain
    record = sink.queued[0]
    assert record.event_id == report.event_id and record.fingerprint == report.fingerprint
    assert (record.category, record.severity, record.error_type) == (
        "authorization",
        "high",
        "PermissionError",
    )
    assert record.request_id == "req-7" and record.user_id == 5
    assert record.message == "no access for Bearer [REDACTED]"
    assert record.context == {"endpoint": "/admin", "session": "[REDACTED]"}
    assert record.stacktrace and "test_error_record_goes_to_the_store" in record.stacktrace
    assert sink.queued[1].category == "system" and sink.queued[1].severity == "medium"


def test_fingerprint_groups_by_type_category_and_raising_line():
    def fail(value: int) -> BaseException:
        try:
            raise KeyError(f"user {value}")
        except KeyError as exc:
            return exc

    first, second = fail(1), fail(2)
    assert fingerprint(first, "database") == fingerprint(second, "database")
    assert fingerprint(first, "database") != fingerprint(first, "system")
    try:
        raise KeyError("user 1")
    except KeyError as other_line:
        assert fingerprint(other_line, "database") != fingerprint(first, "database")
    # never raised: the message stands in for the line, digits folded
    assert fingerprint(ValueError("order 17 failed"), "x") == fingerprint(
        ValueError("order 18 failed"), "x"
    )


def test_track_error_never_raises_into_the_app():
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot print me")

    report = track_error(Unprintable(), "nonsense-category", "nonsense-severity")
    assert report == ErrorReport(None, None)
