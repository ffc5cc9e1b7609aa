"""The aiogram middleware: a span, a log line and a metric point per update fed to the dispatcher.

The example bot (examples/chatai/chatai/bot.py) runs for real with aiogram's
dispatcher and HTTP session; Telegram's Bot API cannot run here, so a local
HTTP server stands in for it (tests/apps/bot_feed.py) and records what the bot
sent. Telemetry goes to the real OTLP receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatai_otel.testing.receiver import OTLPReceiver
from conftest import APPS, telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "chatai"
SERVER, INTERNAL, CLIENT = 2, 1, 3


@pytest.fixture(scope="module")
def bot_receiver():
    with OTLPReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def fed(bot_receiver):
    receiver = bot_receiver
    done = subprocess.run(
        [sys.executable, str(APPS / "bot_feed.py")],
        env=telemetry_env(
            receiver, OTEL_SERVICE_NAME="chatai-bot", PYTHONPATH=f"{APPS}{os.pathsep}{EXAMPLE}"
        ),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "BOT-DONE" in done.stdout, done.stdout[-3000:]
    results = {}
    calls = []
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            item = json.loads(line[7:])
            results[item["update_id"]] = item
        elif line.startswith("CALL "):
            calls.append(json.loads(line[5:]))
    spans = receiver.wait_for_spans(5, lambda s: s.name.startswith("telegram "))
    by_update = {s.attributes["chatai.telegram.update_id"]: s for s in spans}
    return results, calls, by_update, done.stdout


def test_each_update_gets_a_server_span_with_user_and_chat(fed):
    results, calls, spans, _out = fed
    assert sorted(spans) == [1, 2, 3, 4, 5]
    start = spans[1]
    assert start.name == "telegram message" and start.kind == SERVER
    assert start.attributes["user.id"] == "111"
    assert start.attributes["chatai.telegram.chat_id"] == 111
    assert start.attributes["chatai.telegram.chat_type"] == "private"
    assert start.attributes["chatai.telegram.command"] == "/start"
    assert start.attributes["chatai.telegram.handled"] is True
    group = spans[5]
    assert group.attributes["chatai.telegram.chat_id"] == -100123
    assert group.attributes["chatai.telegram.chat_type"] == "group"
    assert group.attributes["user.id"] == "222"
    assert group.attributes["chatai.telegram.command"] == "/help"  # without @bot_username
    # the text of a message is never on the span
    assert not any(
        "What is ChatAI" in str(v) for s in spans.values() for v in s.attributes.values()
    )
    # each update is its own trace
    assert len({s.trace_id for s in spans.values()}) == 5
    # the handlers really answered through aiogram's HTTP session
    sent = [c for c in calls if c["method"] == "sendMessage"]
    assert [c["chat_id"] for c in sent] == ["111", "111", "-100123"]
    assert all(c["path_has_token"] for c in calls)
    assert results[4]["result"] == "sentinel.UNHANDLED"


def test_the_ai_reply_is_a_child_of_the_update_span(fed, bot_receiver):
    receiver = bot_receiver
    _results, _calls, spans, _out = fed
    question = spans[2]
    ai = receiver.wait_for_spans(
        1, lambda s: s.name == "chat chatai-local-small" and s.trace_id == question.trace_id
    )[0]
    assert ai.kind == CLIENT
    assert ai.attributes["gen_ai.usage.output_tokens"] > 0
    tracked = next(
        s for s in receiver.spans() if s.span_id == ai.parent_span_id
    )  # @track("ai_message_processing") sits between them
    assert tracked.name == "ai_message_processing"
    assert tracked.parent_span_id == question.span_id


def test_a_failing_handler_is_recorded_and_reraised(fed, bot_receiver):
    receiver = bot_receiver
    results, _calls, spans, _out = fed
    assert results[3]["raised"] == "RuntimeError"
    failed = spans[3]
    assert failed.status_code == 2
    assert failed.attributes["error.type"] == "RuntimeError"
    exceptions = [e for e in failed.events if e["name"] == "exception"]
    assert len(exceptions) == 1
    message = exceptions[0]["attributes"]["exception.message"]
    assert "abcdefghijklmnop1234" not in message and "[REDACTED]" in message
    errors = receiver.wait_for_metrics(
        1, lambda p: p.name == "chatai.errors" and p.attributes.get("error.type") == "RuntimeError"
    )
    assert errors[-1].attributes["error.category"] == "system"


def test_unhandled_updates_are_marked(fed):
    _results, _calls, spans, _out = fed
    edited = spans[4]
    assert edited.name == "telegram edited_message"
    assert edited.attributes["chatai.telegram.handled"] is False
    assert edited.status_code != 2


def test_log_lines_carry_user_chat_and_trace(fed, bot_receiver):
    receiver = bot_receiver
    _results, _calls, spans, _out = fed
    access = receiver.wait_for_logs(5, lambda r: r.body == "TELEGRAM_UPDATE")
    by_update = {r.attributes["update_id"]: r for r in access}
    for update_id, span in spans.items():
        record = by_update[update_id]
        assert record.trace_id == span.trace_id and record.span_id == span.span_id
        assert record.attributes["request_id"] == f"tg-{update_id}"
    assert by_update[3].severity_text == "ERROR"
    assert by_update[3].attributes["status"] == "error"
    assert by_update[4].attributes["status"] == "unhandled"
    assert by_update[5].attributes["chat_id"] == -100123
    # a business event inside the handler carries the Telegram user from the bound context
    event = receiver.wait_for_logs(
        1,
        lambda r: (
            r.body == "business_event"
            and r.attributes.get("event_type") == "message_sent"
            and r.trace_id == spans[2].trace_id
        ),
    )[0]
    assert str(event.attributes["user.id"]) == "111"  # user_id on the line, user.id in OTLP
    assert event.attributes["request_id"] == "tg-2"


def test_update_duration_metric_by_type_and_status(fed, bot_receiver):
    receiver = bot_receiver
    points = receiver.wait_for_metrics(
        3, lambda p: p.name == "chatai.bot.update.duration", timeout=20
    )
    seen = {(p.attributes["chatai.telegram.update_type"], p.attributes["status"]) for p in points}
    assert {("message", "ok"), ("message", "error"), ("edited_message", "unhandled")} <= seen
    assert all(p.unit == "s" for p in points)
    assert all(set(p.attributes) == {"chatai.telegram.update_type", "status"} for p in points)
