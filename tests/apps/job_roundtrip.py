"""Producer and consumer of jobs on a real Redis list, each its own process with its own telemetry.

``produce KEY N``: one "request" span with a bound request id, N jobs enqueued inside it
with ``propagation.producing``; a job ``fail`` raises in the consumer.
``consume KEY N``: takes N jobs with BRPOP and handles each inside ``propagation.consuming``.
"""

import chatai_otel.setup  # noqa: F401, I001

import json
import sys

import redis
from opentelemetry import trace

from chatai_otel import context, get_logger
from chatai_otel.integrations.jobs import consuming, producing

log = get_logger("job_roundtrip")
tracer = trace.get_tracer("job_roundtrip")


def produce(client: redis.Redis, key: str, count: int) -> None:
    with tracer.start_as_current_span("request", kind=trace.SpanKind.SERVER) as span:
        context.bind(request_id="req-42", user_id=7)
        for number in range(count):
            job = {"id": f"job-{number}", "type": "fail" if number == count - 1 else "work"}
            with producing(job, queue=key):
                client.lpush(key, json.dumps(job))
        try:
            with producing({"id": "job-lost", "type": "work"}, queue=key):
                raise ConnectionError("redis://:hunter2secretpw@127.0.0.1:6379 refused")
        except ConnectionError:
            print("ENQUEUE-FAILED", flush=True)
        ids = span.get_span_context()
        print(f"PRODUCED {ids.trace_id:032x}", flush=True)


def consume(client: redis.Redis, key: str, count: int) -> None:
    for _ in range(count):
        _key, raw = client.brpop([key], timeout=20)
        job = json.loads(raw)
        try:
            with consuming(job, queue=key):
                log.info("job.handled", job_id=job["id"])
                if job["type"] == "fail":
                    raise ValueError("job failed calling the API with Bearer hunter2hunter2secret")
        except ValueError as exc:
            print(f"RERAISED {type(exc).__name__}", flush=True)
    print("CONSUMED", flush=True)


if __name__ == "__main__":
    mode, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = redis.Redis(host="127.0.0.1", port=6379)
    produce(client, key, count) if mode == "produce" else consume(client, key, count)
