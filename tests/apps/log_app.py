"""Logs through structlog and stdlib inside spans, then exits (everything is flushed at exit).

python log_app.py COUNT
"""

import logging
import sys

from opentelemetry import trace

import chatai_otel.setup  # noqa: F401
from chatai_otel import context, get_logger

count = int(sys.argv[1])
log = get_logger("log_app")
std = logging.getLogger("log_app.std")
tracer = trace.get_tracer("log_app")
for number in range(count):
    with tracer.start_as_current_span("unit"), context.bound(request_id=f"req-{number}"):
        if number % 2:
            log.info("unit.done", n=number, kind="structlog")
        else:
            std.info("unit.done", extra={"n": number, "kind": "stdlib"})
logging.getLogger("opentelemetry.test").warning("internal diagnostic")
print("LOG-APP-DONE", flush=True)
