"""Every metric chatai-otel emits itself: name, unit, attribute keys and bucket boundaries.

One place, so that dashboards, alert rules and tests read the same constants,
and so that an upstream rename (the GenAI token metric is about to be renamed
in the GenAI semantic conventions) is a one-line change here. This module
imports nothing.

Prometheus names (as the collector's prometheus exporter writes them) are in
the comments: dots become underscores, counters get ``_total``, a unit in
braces is dropped and ``s`` becomes ``_seconds``.
"""

from __future__ import annotations

from typing import Final

# --- HTTP server requests (asgi.py; the HTTP semantic conventions) ------------------------

HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
# http_server_request_duration_seconds; the stable conventions' advisory buckets (seconds)
HTTP_SERVER_REQUEST_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

# --- business events (events.py) ---------------------------------------------------------

BUSINESS_EVENTS: Final = "chatai.business.events"  # chatai_business_events_total
BUSINESS_EVENTS_UNIT: Final = "{event}"
ATTR_EVENT_TYPE: Final = "event.type"  # a bounded set: EventType values, registered ones, "other"

BALANCE_AMOUNT: Final = "chatai.balance.amount"  # chatai_balance_amount_total
BALANCE_AMOUNT_UNIT: Final = "{credit}"  # in the platform's balance unit, whatever it is
ATTR_BALANCE_OPERATION: Final = "chatai.balance.operation"  # "topped_up" | "charged"
ATTR_SERVICE_TYPE: Final = "chatai.balance.service_type"  # the seed's transaction type

# --- errors (errors.py, alerts.py) -------------------------------------------------------

ERRORS: Final = "chatai.errors"  # chatai_errors_total
ERRORS_UNIT: Final = "{error}"
ATTR_ERROR_CATEGORY: Final = "error.category"
ATTR_ERROR_SEVERITY: Final = "error.severity"
ATTR_ERROR_TYPE: Final = "error.type"  # semconv: the exception's class name

ALERT_NOTIFICATIONS: Final = "chatai.alert.notifications"  # chatai_alert_notifications_total
ALERT_NOTIFICATIONS_UNIT: Final = "{notification}"
ATTR_ALERT_OUTCOME: Final = "chatai.alert.outcome"
ALERT_OUTCOMES: Final = ("sent", "failed", "deduplicated", "rate_limited", "dropped", "abandoned")

# --- @track (perf.py) --------------------------------------------------------------------

OPERATION_DURATION: Final = "chatai.operation.duration"  # chatai_operation_duration_seconds
OPERATION_DURATION_UNIT: Final = "s"
ATTR_OPERATION: Final = "operation"
ATTR_STATUS: Final = "status"  # "ok" | "error" | "cancelled"
# Sub-second work needs sub-second buckets: with the SDK default (0, 5, 10, 25, ...) every
# call under 5 s lands in one bucket and a "p95 > 0.5 s" alert could never fire.
OPERATION_DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# --- GenAI client metrics (genai.py), as the GenAI semantic conventions define them ------

GEN_AI_TOKEN_USAGE: Final = "gen_ai.client.token.usage"  # gen_ai_client_token_usage
GEN_AI_TOKEN_USAGE_UNIT: Final = "{token}"
GEN_AI_TOKEN_USAGE_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
GEN_AI_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
GEN_AI_OPERATION_DURATION_UNIT: Final = "s"  # gen_ai_client_operation_duration_seconds
GEN_AI_OPERATION_DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

AI_COST: Final = "chatai.ai.cost"  # chatai_ai_cost_USD_total
AI_COST_UNIT: Final = "USD"

# --- the durable event store (store.py) ---------------------------------------------------

STORE_QUEUE_SIZE: Final = "chatai.store.queue.size"  # chatai_store_queue_size (gauge)
STORE_QUEUE_SIZE_UNIT: Final = "{record}"  # accepted, not yet committed to the database
STORE_JOURNAL_SIZE: Final = "chatai.store.journal.size"  # chatai_store_journal_size_bytes (gauge)
STORE_JOURNAL_SIZE_UNIT: Final = "By"  # journal files on disk (the disk budget bounds it)
STORE_ROWS_WRITTEN: Final = "chatai.store.rows.written"  # chatai_store_rows_written_total
STORE_ROWS_WRITTEN_UNIT: Final = "{row}"
ATTR_STORE_TABLE: Final = "chatai.store.table"  # business_event_log | error_log
STORE_WRITE_FAILURES: Final = "chatai.store.write.failures"  # chatai_store_write_failures_total
STORE_WRITE_FAILURES_UNIT: Final = "{failure}"  # failed batch transactions, each retried
# and error.type (ATTR_ERROR_TYPE): the exception class, e.g. OperationalError
STORE_RECORDS_DROPPED: Final = "chatai.store.records.dropped"  # chatai_store_records_dropped_total
STORE_RECORDS_DROPPED_UNIT: Final = "{record}"
ATTR_STORE_DROP_REASON: Final = "chatai.store.drop.reason"
# drop reasons: queue_full, over_budget, closed, journal_error, rejected
ATTR_STORE_RECORD_KIND: Final = "chatai.store.record.kind"  # event | error
STORE_WRITE_DURATION: Final = "chatai.store.write.duration"  # chatai_store_write_duration_seconds
STORE_WRITE_DURATION_UNIT: Final = "s"  # one batch transaction

# --- the Telegram bot (bot.py) -----------------------------------------------------------

BOT_UPDATE_DURATION: Final = "chatai.bot.update.duration"  # chatai_bot_update_duration_seconds
BOT_UPDATE_DURATION_UNIT: Final = "s"
ATTR_UPDATE_TYPE: Final = "chatai.telegram.update_type"  # Telegram's fixed set: message, ...
# ATTR_STATUS: "ok" | "error" | "unhandled" (no handler matched)

# --- health checks (health.py; the alert rules in collector/ depend on them) ---------------

# gauge: 1 healthy / 0.5 degraded / 0 unhealthy; chatai_health_status_ratio
HEALTH_STATUS: Final = "chatai.health.status"
HEALTH_STATUS_UNIT: Final = "1"
HEALTH_CHECK_DURATION: Final = "chatai.health.check.duration"  # histogram, unit s
HEALTH_CHECK_DURATION_UNIT: Final = "s"
HEALTH_CHECK_DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ATTR_HEALTH_CHECK_NAME: Final = "chatai.health.check.name"
ATTR_HEALTH_CHECK_REQUIRED: Final = "chatai.health.check.required"
ATTR_HEALTH_CHECK_STATUS: Final = "chatai.health.check.status"
# the host, as the system health check sees it (system semantic conventions, unit "1")
SYSTEM_CPU_UTILIZATION: Final = "system.cpu.utilization"  # system_cpu_utilization_ratio
SYSTEM_MEMORY_UTILIZATION: Final = "system.memory.utilization"
SYSTEM_FILESYSTEM_UTILIZATION: Final = "system.filesystem.utilization"
SYSTEM_CPU_LOAD_AVERAGE: Final = "system.cpu.load_average.{window}"  # 1m, 5m, 15m; {thread}
ATTR_SYSTEM_MEMORY_STATE: Final = "system.memory.state"

# --- the browser telemetry tunnel (browser_tunnel.py) ------------------------------------

BROWSER_TUNNEL_REQUESTS: Final = "chatai.browser.tunnel.requests"
# chatai_browser_tunnel_requests_total
BROWSER_TUNNEL_REQUESTS_UNIT: Final = "{request}"
ATTR_TUNNEL_SIGNAL: Final = "chatai.tunnel.signal"  # traces | metrics | logs | unknown
ATTR_TUNNEL_OUTCOME: Final = "chatai.tunnel.outcome"
TUNNEL_OUTCOMES: Final = (
    "accepted",
    "too_large",
    "rate_limited",
    "unsupported_media_type",
    "invalid",
    "queue_full",
)
