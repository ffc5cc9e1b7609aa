"""The seed's ``StructuredFormatter`` (logging-and-observability.md), as written there, for the
benchmarks' seed arms: one copy, so every arm measures the same seed."""

from __future__ import annotations

import json
import logging
from datetime import datetime


class StructuredFormatter(logging.Formatter):
    """JSON structured log formatter (the seed's, including its ``datetime.utcnow()``)."""

    def format(self, record: logging.LogRecord) -> str:
        log_data = {
            "timestamp": datetime.utcnow().isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
        }
        if record.exc_info:
            log_data["exception"] = self.formatException(record.exc_info)
        if hasattr(record, "extra_fields"):
            log_data.update(record.extra_fields)
        if hasattr(record, "request_id"):
            log_data["request_id"] = record.request_id
        if hasattr(record, "user_id"):
            log_data["user_id"] = record.user_id
        if hasattr(record, "session_id"):
            log_data["session_id"] = record.session_id
        return json.dumps(log_data, ensure_ascii=False)
