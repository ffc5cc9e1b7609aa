"""The OTLP log export path: the wire encoder, the bounded queue, both transports, fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from chatai_otel.export.logs import (
    LogExportProcessor,
    OtlpLogEncoder,
    grpc_log_exporter,
    http_log_exporter,
)
from chatai_otel.testing.receiver import any_value, attributes_of
from conftest import telemetry_env

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

# --- the encoder against the official protobuf classes ------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
records = st.tuples(
    st.integers(min_value=0, max_value=2**64 - 1),  # time
    st.integers(min_value=0, max_value=24),  # severity number
    st.sampled_from(["INFO", "ERROR", "WARNING", ""]),
    values,  # body
    st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=6)),
    st.integers(min_value=0, max_value=2**128 - 1),
    st.integers(min_value=1, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=255),
    st.sampled_from(["app", "uvicorn.error", InstrumentationScope("lib", "1.0", None, {"a": 1})]),
    st.one_of(
        st.none(), st.tuples(st.text(max_size=10), st.text(max_size=10), st.integers(0, 9999))
    ),
    st.one_of(st.none(), st.text(min_size=1, max_size=10)),
)


def expected_value(value):
    if isinstance(value, tuple):
        return [expected_value(v) for v in value]
    if isinstance(value, list):
        return [expected_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): expected_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    return value


@settings(max_examples=300, deadline=None)
@given(st.lists(records, min_size=1, max_size=6))
def test_encoder_output_parses_as_the_official_message(batch):
    encoder = OtlpLogEncoder()
    resource = Resource({"service.name": "svc", "n": 1})
    for _ in range(2):  # the second time through, everything comes from the caches
        request = ExportLogsServiceRequest.FromString(encoder.encode(batch, resource))
        (resource_logs,) = request.resource_logs
        assert attributes_of(resource_logs.resource.attributes) == {"service.name": "svc", "n": 1}
        decoded = [
            (scope_logs.scope, record)
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        assert len(decoded) == len(batch)
        by_scope: dict[str, list] = {}
        for item in batch:
            name = item[8].name if isinstance(item[8], InstrumentationScope) else item[8]
            by_scope.setdefault(name, []).append(item)
        expected_in_order = [item for items in by_scope.values() for item in items]
        for (scope, record), item in zip(decoded, expected_in_order, strict=True):
            (time_ns, number, text, body, attributes, trace_id, span_id, flags, scope_key, code,
             event_name) = item  # fmt: skip
            assert scope.name == (scope_key.name if hasattr(scope_key, "name") else scope_key)
            assert record.time_unix_nano == time_ns == record.observed_time_unix_nano
            assert record.severity_number == number
            assert record.severity_text == text
            assert any_value(record.body) == expected_value(body)
            got = attributes_of(record.attributes)
            want = {k: expected_value(v) for k, v in (attributes or {}).items() if v is not None}
            if code is not None:
                want.update(
                    {
                        "code.file.path": code[0],
                        "code.function.name": code[1],
                        "code.line.number": code[2],
                    }
                )
            assert got == want
            assert record.flags == flags
            assert record.trace_id == (trace_id.to_bytes(16, "big") if trace_id else b"")
            assert record.span_id == (span_id.to_bytes(8, "big") if trace_id else b"")
            assert record.event_name == (event_name or "")


def test_integers_beyond_int64_become_strings():
    encoder = OtlpLogEncoder()
    record = (1, 9, "INFO", 2**70, {"big": -(2**64)}, 0, 0, 0, "app", None, None)
    request = ExportLogsServiceRequest.FromString(encoder.encode([record], None))
    (log,) = request.resource_logs[0].scope_logs[0].log_records
    assert any_value(log.body) == str(2**70)
    assert attributes_of(log.attributes) == {"big": str(-(2**64))}


# --- the processor ---------------------------------------------------------------------------


def _record(n: int):
    return (time.time_ns(), 9, "INFO", "queued", {"n": n}, 0, 0, 0, "queue", None, None)


def test_full_queue_drops_and_counts_without_ever_blocking(receiver):
    receiver.delay = 2.0  # the collector hangs on every export
    exporter = grpc_log_exporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
    processor = LogExportProcessor(
        exporter, schedule_delay=0.05, max_queue_size=100, max_export_batch_size=50
    )
    try:
        started = time.perf_counter()
        for n in range(5000):
            processor.submit(_record(n))
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0  # nothing on the calling thread waited for the network
        assert processor.dropped >= 5000 - 100 - 50 * 2
        assert processor.queued <= 100
    finally:
        receiver.delay = 0.0
        processor.shutdown()


def test_flush_and_shutdown_deliver_everything_queued(receiver):
    for factory, endpoint in (
        (grpc_log_exporter, receiver.grpc_endpoint),
        (http_log_exporter, receiver.http_endpoint + "/v1/logs"),
    ):
        receiver.clear()
        kwargs = {"insecure": True} if factory is grpc_log_exporter else {}
        processor = LogExportProcessor(
            factory(endpoint=endpoint, **kwargs), schedule_delay=60, max_export_batch_size=64
        )
        for n in range(100):
            processor.submit(_record(n))
        assert processor.force_flush(10_000)
        receiver.wait_for_logs(100, timeout=5)
        for n in range(100, 130):
            processor.submit(_record(n))
        processor.shutdown()
        logs = receiver.wait_for_logs(130, timeout=5)
        assert sorted(r.attributes["n"] for r in logs) == list(range(130))
        assert processor.exported == 130 and processor.dropped == 0
        processor.submit(_record(999))  # after shutdown: dropped, counted, no error
        assert processor.dropped == 1


def test_http_protobuf_protocol_end_to_end(receiver):
    script = textwrap.dedent(
        """
        import chatai_otel.setup
        from chatai_otel import get_logger
        for n in range(20):
            get_logger("http.app").info("over.http", n=n)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=telemetry_env(receiver, protocol="http/protobuf"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    logs = receiver.wait_for_logs(20, lambda r: r.body == "over.http", timeout=10)
    assert sorted(r.attributes["n"] for r in logs) == list(range(20))
    assert receiver.counts()["logs_requests"] >= 1


def test_forked_child_exports_its_own_records_once(receiver):
    script = textwrap.dedent(
        """
        import os
        import chatai_otel.setup
        from chatai_otel import current, get_logger
        log = get_logger("fork.app")
        log.info("before.fork")
        pid = os.fork()
        if pid == 0:
            log.info("in.child")
            current().shutdown(5)
            os._exit(0)
        os.waitpid(pid, 0)
        log.info("in.parent")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=telemetry_env(receiver),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    receiver.wait_for_logs(3, lambda r: r.scope == "fork.app", timeout=10)
    time.sleep(0.5)
    bodies = sorted(r.body for r in receiver.logs() if r.scope == "fork.app")
    assert bodies == ["before.fork", "in.child", "in.parent"]
    printed = [line for line in done.stdout.splitlines() if '"logger":"fork.app"' in line]
    assert len(printed) == 3


def test_a_partial_batch_leaves_on_the_schedule_and_full_ones_at_once(receiver):
    exporter = grpc_log_exporter(endpoint=receiver.grpc_endpoint, insecure=True)
    processor = LogExportProcessor(exporter, schedule_delay=0.2, max_export_batch_size=100)
    try:
        for n in range(250):  # two full batches and a partial one, no flush
            processor.submit(_record(n))
        logs = receiver.wait_for_logs(250, timeout=5)
        assert sorted(r.attributes["n"] for r in logs) == list(range(250))
        assert receiver.counts()["logs_requests"] <= 4
    finally:
        processor.shutdown()
