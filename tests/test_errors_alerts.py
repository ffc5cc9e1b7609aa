"""The critical-error notifier against a real local HTTP server.

The server stands in for the third-party webhook (Slack, a pager service), which cannot
run here: it is a real HTTP server on loopback that records what it is sent, and can
answer 500 or hang without answering.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chatai_otel.tracking.alerts import AlertNotifier
from conftest import APPS, telemetry_env
from support.events import last_points, run_scenario, stdout_lines

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)


class Webhook:
    """A loopback HTTP server recording POSTed JSON; ``mode`` is ok, fail (500) or hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = threading.Condition()
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.arrived:
                    owner.received.append(json.loads(body))
                    owner.headers.append(dict(self.headers))
                    owner.arrived.notify_all()
                if owner.mode == "hang":
                    owner.release.wait(60)
                    return
                status = 500 if owner.mode == "fail" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook got {len(self.received)} of {count} alerts")
                self.arrived.wait(left)
            return list(self.received)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def alert(fingerprint: str = "fp") -> dict[str, Any]:
    return {"text": "critical", "alert": {"fingerprint": fingerprint}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- end to end: a worker process, the webhook, the OTLP receiver -------------------------


def test_critical_errors_alert_once_per_fingerprint_window(receiver, webhook):
    result, stdout = run_scenario(
        receiver,
        "critical",
        "5",
        CHATAI_OTEL_ALERT_WEBHOOK_URL=webhook.url,
        CHATAI_OTEL_ALERT_WEBHOOK_HEADERS="X-Alert-Token=t0k3n",
    )
    # five from one line: one alert; two more errors: one each
    assert result["outcomes"] == ["queued", *["deduplicated"] * 4, "queued", "queued"]
    alerts = webhook.wait_for(3)
    time.sleep(0.3)
    assert len(webhook.received) == 3
    first = alerts[0]["alert"]
    assert first["error_type"] == "RuntimeError"
    assert first["message"] == "payment provider said 401 to Bearer [REDACTED]"
    assert "abcdefghijklmnop" not in json.dumps(alerts)
    assert first["category"] == "external_service" and first["severity"] == "critical"
    assert first["request_id"] == "req-crit" and first["user_id"] == 99
    span = receiver.wait_for_spans(1, lambda s: s.name == "request critical")[0]
    assert first["trace_id"] == span.trace_id
    assert first["service.name"] == "test-app"
    assert "RuntimeError" in alerts[0]["text"] and "req-crit" in alerts[0]["text"]
    assert {a["alert"]["error_type"] for a in alerts[1:]} == {"OSError"}
    assert len({a["alert"]["fingerprint"] for a in alerts}) == 3
    assert webhook.headers[0]["X-Alert-Token"] == "t0k3n"
    assert webhook.url.split("/hooks/")[1] not in stdout  # the webhook URL is a secret

    receiver.wait_for_metrics(1, lambda p: p.name == "chatai.alert.notifications")
    outcomes = {
        dict(key)["chatai.alert.outcome"]: p.value
        for key, p in last_points(receiver, "chatai.alert.notifications").items()
    }
    assert outcomes == {"sent": 3, "deduplicated": 4}


def test_a_hanging_webhook_never_blocks_the_caller_or_the_shutdown(receiver, webhook):
    webhook.mode = "hang"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(APPS / "events_app.py"), "critical", "50"],
        env=telemetry_env(
            receiver,
            CHATAI_OTEL_ALERT_WEBHOOK_URL=webhook.url,
            CHATAI_OTEL_ALERT_TIMEOUT="30",
            CHATAI_OTEL_SHUTDOWN_TIMEOUT="2",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(APPS),
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(
        next(line for line in done.stderr.splitlines() if line.startswith('{"result"'))
    )["result"]
    webhook.wait_for(1)
    # the webhook holds its first request for 60 s and the sender's timeout is 30 s:
    # the 52 calls and the whole process (shutdown deadline 2 s) finished long before either
    assert result["slowest_call_s"] < 1.0
    assert elapsed < 20
    assert result["outcomes"].count("queued") == 3
    lines = [
        line for line in stdout_lines(done.stdout) if line.get("message", "").startswith("alert.")
    ]
    assert [line["message"] for line in lines] == ["alert.abandoned_at_shutdown"]
    assert lines[0]["alerts"] == 3


# --- the notifier's rules, in process with a fake clock -----------------------------------


def test_dedup_window_expires_and_reports_what_it_suppressed(webhook):
    clock = FakeClock()
    notifier = AlertNotifier(webhook.url, dedup_window=60, clock=clock)
    try:
        assert notifier.notify(alert("a"), "a") == "queued"
        assert notifier.notify(alert("a"), "a") == "deduplicated"
        clock.now += 30
        assert notifier.notify(alert("a"), "a") == "deduplicated"
        assert notifier.notify(alert("b"), "b") == "queued"
        clock.now += 31  # 61 s after the first
        assert notifier.notify(alert("a"), "a") == "queued"
        received = webhook.wait_for(3)
        assert [a["alert"]["fingerprint"] for a in received] == ["a", "b", "a"]
        assert [a["alert"]["suppressed_since_last"] for a in received] == [0, 0, 2]
        assert notifier.close(5.0)
        assert notifier.stats["sent"] == 3 and notifier.stats["deduplicated"] == 2
    finally:
        notifier.close(0)


def test_rate_limit_spans_all_fingerprints_and_refills(webhook):
    clock = FakeClock()
    notifier = AlertNotifier(webhook.url, rate_limit=2, clock=clock)
    try:
        outcomes = [notifier.notify(alert(str(n)), str(n)) for n in range(5)]
        assert outcomes == ["queued", "queued", "rate_limited", "rate_limited", "rate_limited"]
        clock.now += 30  # one token back (2 a minute)
        assert notifier.notify(alert("x"), "x") == "queued"
        assert notifier.notify(alert("y"), "y") == "rate_limited"
        # a rate-limited fingerprint was not marked as sent: it may go out later
        clock.now += 30
        assert notifier.notify(alert("2"), "2") == "queued"
        webhook.wait_for(4)
    finally:
        notifier.close(5.0)


def test_full_queue_drops_and_counts(webhook):
    webhook.mode = "hang"
    notifier = AlertNotifier(webhook.url, queue_size=1, timeout=30)
    try:
        assert notifier.notify(alert("1"), "1") == "queued"
        webhook.wait_for(1)  # the sender is now stuck on the first one
        assert notifier.notify(alert("2"), "2") == "queued"
        assert notifier.notify(alert("3"), "3") == "dropped"
        assert notifier.stats["dropped"] == 1
    finally:
        assert notifier.close(0.4) is False
        assert notifier.stats["abandoned"] == 2
        assert notifier.notify(alert("4"), "4") == "dropped"


def test_webhook_failures_are_retried_logged_and_counted(webhook, capsys):
    webhook.mode = "fail"
    notifier = AlertNotifier(webhook.url, retries=1, timeout=2)
    try:
        assert notifier.notify(alert("f"), "f") == "queued"
        webhook.wait_for(2)  # first attempt and one retry
        assert notifier.close(10.0)
        assert notifier.stats["failed"] == 1 and notifier.stats["sent"] == 0
    finally:
        notifier.close(0)
    output = capsys.readouterr().out
    failures = [line for line in output.splitlines() if '"fingerprint":"f"' in line]
    assert len(failures) == 2 and all("alert.webhook_failed" in line for line in failures)
    assert '"status":500' in failures[0]
    assert "/hooks/" not in output


def test_unreachable_webhook_is_a_logged_failure(capsys):
    from conftest import free_port

    notifier = AlertNotifier(f"http://127.0.0.1:{free_port()}/hook", retries=0, timeout=2)
    assert notifier.notify(alert("u"), "u") == "queued"
    assert notifier.close(10.0)
    assert notifier.stats["failed"] == 1
    assert "alert.webhook_failed" in capsys.readouterr().out


def test_bad_webhook_url_is_a_config_error_that_hides_the_value():
    from chatai_otel.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings({"CHATAI_OTEL_ALERT_WEBHOOK_URL": "hooks.slack.com/services/T/B/secret"})
    assert "secret" not in str(caught.value)
    assert "CHATAI_OTEL_ALERT_WEBHOOK_URL" in str(caught.value)
    settings = load_settings(
        {
            "CHATAI_OTEL_ALERT_WEBHOOK_URL": "https://hooks.example/x",
            "CHATAI_OTEL_AUDIT_EVENTS": "user_login, Invoice_Sent",
        }
    )
    assert settings.alerts.webhook_url == "https://hooks.example/x"
    assert "hooks.example" not in repr(settings)
    assert settings.audit_events == ("user_login", "invoice_sent")
    with pytest.raises(ConfigError, match="CHATAI_OTEL_ALERT_RATE_LIMIT"):
        load_settings({"CHATAI_OTEL_ALERT_RATE_LIMIT": "0"})
