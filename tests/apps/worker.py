"""A plain worker script: one import configures everything; it logs inside spans and exits."""

import sys

from opentelemetry import metrics, trace

import chatai_otel.setup  # noqa: F401
from chatai_otel import get_logger

log = get_logger("worker")
tracer = trace.get_tracer("worker")
jobs = metrics.get_meter("worker").create_counter("worker.jobs", unit="{job}")

count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for number in range(count):
    with tracer.start_as_current_span("job") as span:
        span.set_attribute("job.number", number)
        log.info("job.done", job=number)
        jobs.add(1)
print("WORKER-DONE", flush=True)
