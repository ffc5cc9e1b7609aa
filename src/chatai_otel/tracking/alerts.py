"""The critical-error notifier: a JSON POST to a webhook (Slack, a pager, anything), off the request path.

``track_error(..., severity=CRITICAL)`` calls :meth:`AlertNotifier.notify`,
which decides on the calling thread, in microseconds and without I/O, whether
this alert goes out:

* **deduplicated**: one alert per error fingerprint per window
  (``CHATAI_OTEL_ALERT_DEDUP_WINDOW``, 300 s); the next one that goes out says
  how many were suppressed in between;
* **rate-limited**: at most ``CHATAI_OTEL_ALERT_RATE_LIMIT`` alerts a minute
  over all fingerprints (a token bucket), so an incident sends a handful, not a flood;
* **queued** for one background sender thread, in a bounded queue
  (``CHATAI_OTEL_ALERT_QUEUE_SIZE``); when it is full the alert is dropped.

Every outcome is counted in ``chatai.alert.notifications`` {chatai.alert.outcome}.
The sender's own failures (timeouts, refused connections, non-2xx answers) are
logged, never raised. At shutdown the queue gets what is left of the shutdown
deadline; what is still queued then is abandoned and counted. The webhook URL
is never logged: webhook URLs are often secrets themselves.

The payload carries ``text`` (what Slack-compatible webhooks display) and an
``alert`` object with the structured fields.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics

from chatai_otel import metric_names as names
from chatai_otel import process_hooks, process_settings
from chatai_otel.logs.structlog_bridge import get_logger

__all__ = ["AlertNotifier", "get_notifier", "set_notifier"]

_STOP = object()
_SEEN_LIMIT = 10_000  # fingerprints remembered; older ones are pruned first
SHUTDOWN_SHARE = 0.5  # of the shutdown deadline, for alerts still queued

_meter = metrics.get_meter("chatai_otel.alerts")
_outcomes = _meter.create_counter(
    names.ALERT_NOTIFICATIONS,
    unit=names.ALERT_NOTIFICATIONS_UNIT,
    description="Critical-error alerts, by what became of them.",
)
_OUTCOME_ATTRIBUTES = {
    outcome: {names.ATTR_ALERT_OUTCOME: outcome} for outcome in names.ALERT_OUTCOMES
}
_loggers = process_settings.PerConfigure(lambda: get_logger("chatai_otel.alerts"))


class AlertNotifier:
    """Sends alerts to one webhook from a background thread; ``notify`` never blocks."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        dedup_window: float = 300.0,
        rate_limit: int = 20,
        timeout: float = 5.0,
        queue_size: int = 100,
        retries: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._window = dedup_window
        self._rate = max(1, rate_limit)
        self._timeout = timeout
        self._queue_size = queue_size
        self._retries = retries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, list[float]] = {}  # fingerprint -> [last sent at, suppressed since]
        self._tokens = float(self._rate)
        self._refilled = clock()
        self._closed = False
        self._abandoned = False
        self.stats: dict[str, int] = dict.fromkeys(names.ALERT_OUTCOMES, 0)
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue[object] = queue.Queue(self._queue_size)
        self._thread: threading.Thread | None = None

    # --- the calling side: decide and enqueue, nothing else ------------------------------

    def notify(self, alert: dict[str, Any], fingerprint: str) -> str:
        """Queue one alert unless deduplicated, rate-limited or the queue is full; returns the outcome."""
        try:
            if self._pid != os.getpid():  # forked: the sender thread stayed in the parent
                with self._lock:
                    if self._pid != os.getpid():
                        self._start_fresh()
            now = self._clock()
            with self._lock:
                if self._closed:
                    return self._count("dropped")
                entry = self._seen.get(fingerprint)
                if entry is not None and now - entry[0] < self._window:
                    entry[1] += 1
                    return self._count("deduplicated")
                self._tokens = min(
                    float(self._rate), self._tokens + (now - self._refilled) * self._rate / 60.0
                )
                self._refilled = now
                if self._tokens < 1.0:
                    return self._count("rate_limited")
                self._tokens -= 1.0
                suppressed = int(entry[1]) if entry is not None else 0
                self._seen[fingerprint] = [now, 0]
                if len(self._seen) > _SEEN_LIMIT:
                    self._prune(now)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, daemon=True, name="chatai-otel-alerts"
                    )
                    self._thread.start()
            alert["alert"]["suppressed_since_last"] = suppressed
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                return self._count("dropped")
            return "queued"
        except Exception:
            return self._count("dropped")

    def _prune(self, now: float) -> None:
        stale = [fp for fp, (sent, _n) in self._seen.items() if now - sent >= self._window]
        for fingerprint in stale:
            del self._seen[fingerprint]
        if len(self._seen) > _SEEN_LIMIT:  # all recent: forget the oldest half
            for fingerprint, _entry in sorted(self._seen.items(), key=lambda kv: kv[1][0])[
                : len(self._seen) // 2
            ]:
                del self._seen[fingerprint]

    def _count(self, outcome: str, amount: int = 1) -> str:
        self.stats[outcome] += amount
        try:
            _outcomes.add(amount, _OUTCOME_ATTRIBUTES[outcome])
        except Exception:
            pass
        return outcome

    # --- the sender thread ---------------------------------------------------------------

    def _run(self) -> None:
        work = self._queue
        while True:
            item = work.get()
            try:
                if item is _STOP:
                    return
                if self._abandoned:  # counted by close(); a process past its deadline sends nothing
                    continue
                assert isinstance(item, dict)
                sent = self._send(item)
                if not self._abandoned:  # else close() counted it as abandoned already
                    self._count("sent" if sent else "failed")
            except Exception:
                pass
            finally:
                work.task_done()

    def _send(self, alert: dict[str, Any]) -> bool:
        body = json.dumps(alert, default=str).encode()
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(min(1.0, self._timeout))
            problem: dict[str, Any]
            try:
                request = urllib.request.Request(
                    self._url, data=body, headers=self._headers, method="POST"
                )
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    response.read()
                    if 200 <= response.status < 300:
                        return True
                    problem = {"status": response.status}
            except urllib.error.HTTPError as exc:
                problem = {"status": exc.code}
            except Exception as exc:
                # the URL itself may carry the webhook's token (Slack, Teams): never in a log
                detail = str(exc).replace(self._url, "<webhook url>")[:200]
                problem = {"error": type(exc).__name__, "detail": detail}
            if self._abandoned:
                return False
            try:
                _loggers.get().warning(
                    "alert.webhook_failed",
                    attempt=attempt + 1,
                    fingerprint=alert.get("alert", {}).get("fingerprint"),
                    **problem,
                )
            except Exception:
                pass
        return False

    # --- shutdown ------------------------------------------------------------------------

    def close(self, seconds_left: float) -> bool:
        """Give the queue half of ``seconds_left`` to drain; abandon (and count) the rest.

        Half: the shutdown deadline is shared, and the spans and logs of the
        very incident are flushed after this callback returns.
        """
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        deadline = time.monotonic() + max(0.0, seconds_left) * SHUTDOWN_SHARE
        work = self._queue
        with work.all_tasks_done:
            while work.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                work.all_tasks_done.wait(left)
            pending = work.unfinished_tasks
        if pending:
            self._abandoned = True
            self._count("abandoned", pending)
            try:
                _loggers.get().warning("alert.abandoned_at_shutdown", alerts=pending)
            except Exception:
                pass
            return False
        try:
            work.put_nowait(_STOP)
        except queue.Full:
            pass
        return True


# --- the process-wide notifier ------------------------------------------------------------

_lock = threading.Lock()
_notifier: AlertNotifier | None = None
_notifier_for: object = None  # the Telemetry (or the string "unconfigured") it was built for
_UNCONFIGURED = "unconfigured"
_PINNED = "pinned"  # set_notifier() was called: the settings no longer decide
UNCONFIGURED_SHUTDOWN_SECONDS = 2.0


def get_notifier() -> AlertNotifier | None:
    """The notifier of this process, built from the settings on first use; None without a webhook."""
    global _notifier, _notifier_for
    telemetry = process_settings.telemetry()
    key: object = telemetry if telemetry is not None else _UNCONFIGURED
    if _notifier_for is key or _notifier_for is _PINNED:
        return _notifier
    with _lock:
        if _notifier_for is key or _notifier_for is _PINNED:
            return _notifier
        settings = process_settings.settings()
        notifier = None
        if settings.alerts.webhook_url:
            notifier = AlertNotifier(
                settings.alerts.webhook_url,
                headers=settings.alerts.webhook_headers,
                dedup_window=settings.alerts.dedup_window,
                rate_limit=settings.alerts.rate_limit,
                timeout=settings.alerts.timeout,
                queue_size=settings.alerts.queue_size,
            )
            if telemetry is not None:
                telemetry.add_shutdown_callback(notifier.close)
            else:
                process_hooks.at_exit(lambda: notifier.close(UNCONFIGURED_SHUTDOWN_SECONDS))
        _notifier, _notifier_for = notifier, key
        return notifier


def set_notifier(notifier: AlertNotifier | None) -> AlertNotifier | None:
    """Use this notifier for the rest of the process (None: no alerts); returns the previous one.

    The caller owns its shutdown (``notifier.close(seconds)``).
    """
    global _notifier, _notifier_for
    with _lock:
        previous = _notifier
        _notifier, _notifier_for = notifier, _PINNED
    return previous
