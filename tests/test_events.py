"""Business events end to end: a real worker process exporting to the real OTLP receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatai_otel import metric_names as names
from chatai_otel._sdk_compat import metric_cardinality_limits
from chatai_otel.tracking.events import BusinessEvent, EventType, is_audit
from support.events import last_points, run_scenario, stdout_lines

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


class RecordList:
    """An in-process stand-in for the durable store: every record it is handed, in order."""

    def __init__(self) -> None:
        self.queued: list[Any] = []

    async def put(self, record: Any) -> None:
        self.queued.append(record)

    def put_nowait(self, record: Any) -> bool:
        self.queued.append(record)
        return True


def test_event_type_has_the_seeds_seventeen_types():
    assert [member.value for member in EventType] == [
        "user_registered",
        "user_login",
        "user_logout",
        "user_profile_updated",
        "dialog_created",
        "message_sent",
        "ai_response_generated",
        "handoff_requested",
        "handoff_accepted",
        "handoff_completed",
        "balance_topped_up",
        "balance_charged",
        "document_uploaded",
        "document_processed",
        "api_error",
        "rate_limit_exceeded",
        "security_violation",
    ]
    assert {t for t in EventType if is_audit(t)} == {
        EventType.USER_REGISTERED,
        EventType.USER_LOGIN,
        EventType.BALANCE_TOPPED_UP,
        EventType.HANDOFF_REQUESTED,
        EventType.SECURITY_VIOLATION,
    }


def test_business_event_fills_timestamp_and_request_id_from_context():
    from chatai_otel import context

    with context.bound(request_id="req-42"):
        event = BusinessEvent(EventType.USER_LOGIN, user_id=1)
    assert event.request_id == "req-42"
    assert event.timestamp is not None and event.timestamp.tzinfo is not None
    assert event.data == {}


def test_every_event_type_arrives_as_span_event_counter_point_and_log(receiver):
    ids, stdout = run_scenario(receiver, "all_types")
    spans = receiver.wait_for_spans(
        len(EventType), lambda s: s.name.startswith("request ") or s.name == "chat gpt"
    )
    all_spans = receiver.wait_for_spans(len(EventType) + 5)
    by_event_id = {}
    for span in all_spans:
        for event in span.events:
            if "chatai.event.id" in event["attributes"]:
                by_event_id[event["attributes"]["chatai.event.id"]] = (span, event)

    for event_type in EventType:
        event_id = ids[event_type.value]
        assert event_id, event_type
        span, event = by_event_id[event_id]
        assert event["name"] == event_type.value
        attributes = event["attributes"]
        assert attributes["event.type"] == event_type.value
        assert attributes["user.id"] == "7"
        assert attributes["chatai.entity.type"] == "dialog"
        assert attributes["chatai.data.password"] == "[REDACTED]"
        assert attributes["chatai.data.nested"] == '{"a":[1,2]}'
        if event_type is EventType.AI_RESPONSE_GENERATED:
            # an AI response gets a GenAI client span, child of the request span
            assert span.kind == 3  # CLIENT
            parent = next(s for s in spans if s.span_id == span.parent_span_id)
            assert parent.name == f"request {event_type.value}"
        else:
            assert span.name == f"request {event_type.value}"
    assert len(spans) >= len(EventType)

    # outside any span: a short INTERNAL span of its own
    span, event = by_event_id[ids["no_span"]]
    assert span.name == "event user_logout" and span.kind == 1 and not span.parent_span_id

    # counter points: one per type, bounded names for host types
    points = receiver.wait_for_metrics(
        1, lambda p: p.name == names.BUSINESS_EVENTS and p.attributes.get("event.type") == "other"
    )
    assert points[0].unit == "{event}" and points[0].kind == "sum"
    latest = last_points(receiver, names.BUSINESS_EVENTS)
    counts = {dict(key)["event.type"]: point.value for key, point in latest.items()}
    expected = {t.value: 1.0 for t in EventType}
    expected["user_logout"] = 2.0
    expected["balance_charged"] = 2.0
    expected.update({"invoice_sent": 1.0, "bot_started": 1.0, "other": 1.0})
    assert counts == expected

    # balance amount by service type, never by user
    balance = last_points(receiver, names.BALANCE_AMOUNT)
    charged = {
        dict(key)[names.ATTR_SERVICE_TYPE]: point.value
        for key, point in balance.items()
        if dict(key)[names.ATTR_BALANCE_OPERATION] == "charged"
    }
    assert charged == {"ai_message": 12.5}
    for point in receiver.metrics():
        assert "user.id" not in point.attributes and "user_id" not in point.attributes

    # one log line per event on stdout and over OTLP; audit types also on the audit stream
    lines = [line for line in stdout_lines(stdout) if line.get("message") == "business_event"]
    business = [line for line in lines if line.get("logger") == "business_events"]
    audit = [line for line in lines if line.get("log.type") == "audit"]
    assert len(business) == len(EventType) + 5
    assert sorted(line["event_type"] for line in audit) == sorted(
        t.value for t in EventType if is_audit(t)
    )
    login = next(line for line in business if line["event_type"] == "user_login")
    assert login["data"]["password"] == "[REDACTED]"
    assert login["request_id"] == "req-1"
    assert login["trace_id"] == by_event_id[ids["user_login"]][0].trace_id
    otlp = receiver.wait_for_logs(len(EventType) + 5, lambda r: r.body == "business_event")
    assert {r.trace_id for r in otlp} >= {by_event_id[ids[t.value]][0].trace_id for t in EventType}


@pytest.mark.skipif(
    not metric_cardinality_limits(),
    reason="this opentelemetry-sdk has no metric cardinality limits (1.45 has): nothing to test",
)
def test_a_million_distinct_values_never_make_more_series_than_the_limit(receiver):
    """1 000 000 events with distinct user ids: 900 000 balance charges with distinct service
    types, 100 000 distinct free-form event types. The event counter keeps its bounded types;
    the balance counter folds what does not fit under the limit into otel.metric.overflow."""
    limit = 1000
    result, _stdout = run_scenario(
        receiver,
        "cardinality",
        "1000000",
        timeout=900,
        OTEL_TRACES_SAMPLER="always_off",  # spans are not what this test is about
        OTEL_LOGS_EXPORTER="none",
        CHATAI_OTEL_LOG_LEVEL="warning",
        OTEL_METRIC_EXPORT_INTERVAL="5000",
        CHATAI_OTEL_METRIC_CARDINALITY_LIMIT=str(limit),
    )
    receiver.wait_for_metrics(1, lambda p: p.name == names.BALANCE_AMOUNT)
    events_series = last_points(receiver, names.BUSINESS_EVENTS)
    counts = {dict(key)["event.type"]: p.value for key, p in events_series.items()}
    assert counts == {"balance_charged": 900_000, "other": 100_000}

    balance = last_points(receiver, names.BALANCE_AMOUNT)
    overflow = [p for p in balance.values() if p.attributes.get("otel.metric.overflow") is True]
    assert len(overflow) == 1
    # never more series than the limit, the overflow series included (the metrics SDK spec)
    assert len(balance) == limit
    # nothing is lost: what did not get a series of its own is summed in the overflow point
    assert sum(p.value for p in balance.values()) == result["total_amount"] == 900_000
    assert overflow[0].value == 900_000 - (limit - 1)
    for point in receiver.metrics():
        assert not {"user.id", "user_id"} & set(point.attributes)


@pytest.mark.parametrize("with_store", [False, True])
async def test_log_event_awaits_the_store_and_emit_only_enqueues(with_store, tmp_path: Path):
    """An in-process sink (a stand-in for issue 6's store) sees each record exactly once."""
    from chatai_otel.store.records import EventRecord, set_sink
    from chatai_otel.tracking import events

    class ListSink:
        def __init__(self) -> None:
            self.awaited: list[EventRecord] = []
            self.queued: list[EventRecord] = []

        async def put(self, record: Any) -> None:
            self.awaited.append(record)

        def put_nowait(self, record: Any) -> bool:
            self.queued.append(record)
            return True

    sink = ListSink()
    previous = set_sink(sink if with_store else None)
    try:
        first = await events.log_event(
            BusinessEvent(
                event_type=EventType.USER_LOGIN,
                user_id=7,
                data={"password": "p", "ip": "10.0.0.1"},
            )
        )
        second = events.emit(EventType.MESSAGE_SENT, user_id=7, entity_id=3, entity_type="dialog")
    finally:
        set_sink(previous)
    assert first and second and first != second
    if not with_store:
        assert sink.awaited == sink.queued == []
        return
    assert [r.event_id for r in sink.awaited] == [first]
    assert [r.event_id for r in sink.queued] == [second]
    login = sink.awaited[0]
    assert login.audit is True and login.data == {"password": "[REDACTED]", "ip": "10.0.0.1"}
    assert sink.queued[0].audit is False and sink.queued[0].entity_id == 3
    assert json.loads(json.dumps(login.as_dict()))["event_type"] == "user_login"


async def test_a_failing_store_never_reaches_the_caller():
    from chatai_otel.store.records import set_sink
    from chatai_otel.tracking import events

    class BrokenSink:
        async def put(self, record: Any) -> None:
            raise OSError("disk full")

        def put_nowait(self, record: Any) -> bool:
            raise OSError("disk full")

    previous = set_sink(BrokenSink())
    try:
        assert await events.log_event(BusinessEvent(EventType.USER_LOGIN, user_id=1))
        assert events.emit(EventType.USER_LOGIN, user_id=1) is None
    finally:
        set_sink(previous)


def test_set_sink_rejects_what_is_not_a_sink():
    from chatai_otel.store.records import set_sink

    with pytest.raises(TypeError):
        set_sink(object())  # type: ignore[arg-type]


def test_event_ids_are_uuid7_unique_and_time_ordered():
    import uuid

    from chatai_otel.store.records import new_event_id

    ids = [new_event_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(value) for value in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)


def test_naive_timestamps_and_non_mapping_data_are_kept():
    from datetime import UTC, datetime

    from chatai_otel.store.records import set_sink
    from chatai_otel.tracking import events

    sink = RecordList()
    previous = set_sink(sink)
    try:
        naive = datetime(2026, 1, 2, 3, 4, 5)  # the seed's datetime.utcnow()
        events.emit(BusinessEvent(EventType.DOCUMENT_UPLOADED, data=["a.pdf"], timestamp=naive))
    finally:
        set_sink(previous)
    record = sink.queued[0]
    assert record.timestamp == naive.replace(tzinfo=UTC)
    assert record.data == {"value": ["a.pdf"]}


def test_a_forked_worker_counts_its_own_events_only(receiver):
    """gunicorn --preload forks workers from a master that may have emitted already."""
    result, _stdout = run_scenario(receiver, "fork")
    assert result["child_status"] == 0
    points = receiver.wait_for_metrics(
        2,
        lambda p: p.name == names.BUSINESS_EVENTS and p.attributes["event.type"] == "message_sent",
    )
    latest: dict[int, float] = {}
    for point in sorted(points, key=lambda p: p.time_ns):
        latest[point.resource["process.pid"]] = point.value or 0.0
    assert latest == {result["parent_pid"]: 3.0, result["child_pid"]: 1.0}


def test_data_too_long_for_a_log_line_stays_whole_and_scrubbed_on_span_and_record():
    """Event data whose log field is cut (over CHATAI_OTEL_LOG_MAX_VALUE_SIZE) is kept whole
    for the span and the store record, and scrubbed there too: an object's repr included."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from chatai_otel.store.records import set_sink
    from chatai_otel.tracking import events

    class Client:
        def __repr__(self) -> str:
            return "Client(api_key=sk-abcdefghijklmnopqrstuvwx password=hunter2pass)"

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sink = RecordList()
    previous = set_sink(sink)
    try:
        with provider.get_tracer("test").start_as_current_span("request"):
            events.emit(
                EventType.DOCUMENT_UPLOADED,
                user_id=1,
                data={"obj": Client(), "blob": "x" * 20_000, "token": "t0ken-value"},
            )
    finally:
        set_sink(previous)
    (record,) = sink.queued
    assert record.data["obj"] == "Client(api_key=[REDACTED] password=[REDACTED])"
    assert record.data["token"] == "[REDACTED]"
    assert isinstance(record.data["blob"], str) and record.data["blob"].startswith("xxx")
    (span,) = memory.get_finished_spans()
    attributes = span.events[0].attributes
    assert attributes["chatai.data.obj"] == "Client(api_key=[REDACTED] password=[REDACTED])"
    assert attributes["chatai.data.token"] == "[REDACTED]"
    everything = json.dumps([dict(attributes), record.as_dict()], default=str)
    assert "hunter2pass" not in everything and "abcdefghijklmnopqrstuvwx" not in everything
