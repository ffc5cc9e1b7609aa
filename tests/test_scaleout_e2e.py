"""Scale-out for real: agents load-balance spans by trace id to tail-sampling gateways.

Real processes on loopback: two app processes (tests/apps/trace_generator.py: one sends each
trace's root and child span, the other its worker span, so every trace reaches the agents
from two processes), two agents running ``collector/agent-scaleout.yaml`` and three gateways
running ``collector/gateway.yaml``, all ``otelcol-chatai``. The agents find the gateways as
the bundled config does, with the ``dns`` resolver: the test gives a hostname three loopback
addresses in /etc/hosts (and takes one away when it kills that gateway, as a headless
service's DNS does). Each gateway's Jaeger exporter points at its own counting receiver, so
the test knows which gateway kept which trace; the configs are the bundled ones, with only
addresses, the resolver's port and its 1 s re-resolution interval set from outside.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from tools.scaleout import (
    GATEWAY_ADDRESSES,
    Collector,
    gateway_port,
    hosts_entries,
    remove_hosts_entry,
    start_agent,
    start_gateway,
)
from tools.stack import Ports, Stack

from chatai_otel.testing.receiver import OTLPReceiver
from conftest import APPS, free_port, telemetry_env, wait_until
from support.example import example_apps, run_workload

sys.path.insert(0, str(APPS))
import trace_generator

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

TRACES = 10_000
SPANS_PER_TRACE = 3
BASELINE_SHARE = 0.10  # gateway.yaml's probabilistic policy


@dataclass
class Tier:
    gateways: list[Collector]
    receivers: list[OTLPReceiver]
    agents: list[Collector]
    agent_endpoints: list[str]
    hostname: str
    tmp: Path
    jaeger: Stack
    failed_agent_sends_before: float = 0.0
    sent: dict[str, Any] = field(default_factory=dict)

    def generate(
        self, first: int, count: int, per_second: float = 0.0, all_errors: bool = False
    ) -> list[subprocess.Popen[str]]:
        """Both halves of traces ``first`` ..: the api half to agent 0, the worker's to 1."""
        processes = []
        for role, endpoint in (
            ("api", self.agent_endpoints[0]),
            ("worker", self.agent_endpoints[1]),
        ):
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env["AGENT_ENDPOINT"] = endpoint
            env["GENERATOR_ALL_ERRORS"] = "1" if all_errors else "0"
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(APPS / "trace_generator.py"),
                        role,
                        str(first),
                        str(count),
                        str(per_second),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        return processes

    def spans_by_gateway(self) -> list[list[Any]]:
        return [receiver.spans() for receiver in self.receivers]

    def settled(self, quiet: float = 6.0, timeout: float = 90.0) -> None:
        """Wait until no gateway has exported anything new for ``quiet`` seconds (the
        decision wait is 10 s, the batches 2 s)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(len(r.spans()) for r in self.receivers)
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet and total:
                return
            time.sleep(0.5)
        raise AssertionError(f"the gateways kept exporting for {timeout} s")


def finish(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.fixture(scope="module")
def tier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    tmp = tmp_path_factory.mktemp("scaleout")
    hostname = f"chatai-otel-gateways-{uuid.uuid4().hex[:8]}.test"
    port = gateway_port(GATEWAY_ADDRESSES)
    with contextlib.ExitStack() as stack:
        stack.enter_context(hosts_entries(hostname, GATEWAY_ADDRESSES))
        jaeger = Stack(Ports.free(), tmp / "jaeger")
        jaeger.start_jaeger()
        stack.callback(jaeger.stop)
        channel = grpc.insecure_channel(f"127.0.0.1:{jaeger.ports.jaeger_otlp_grpc}")
        stack.callback(channel.close)
        to_jaeger = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]

        def tap(signal_name: str, request: Any) -> None:
            """Each gateway's own receiver, in front of Jaeger: counts, then passes on."""
            if signal_name == "traces":
                to_jaeger.Export(request, timeout=10)

        receivers = [stack.enter_context(OTLPReceiver(on_request=tap)) for _ in GATEWAY_ADDRESSES]
        gateways = [
            start_gateway(f"gateway-{n}", address, port, f"127.0.0.1:{receivers[n].grpc_port}", tmp)
            for n, address in enumerate(GATEWAY_ADDRESSES)
        ]
        agents, endpoints = [], []
        for n in range(2):
            grpc_port = free_port()
            agents.append(start_agent(f"agent-{n}", grpc_port, hostname, port, tmp))
            endpoints.append(f"http://127.0.0.1:{grpc_port}")
        everyone = gateways + agents
        try:
            wait_until(lambda: all(c.healthy() for c in everyone), timeout=60)
            wait_until(lambda: jaeger.readiness()["jaeger"], timeout=60)
            yield Tier(gateways, receivers, agents, endpoints, hostname, tmp, jaeger)
        finally:
            for collector in everyone[::-1]:
                collector.stop()


def _traces(spans_by_gateway: list[list[Any]]) -> dict[str, dict[int, int]]:
    """trace id -> {gateway index: spans of that trace it exported}."""
    traces: dict[str, dict[int, int]] = collections.defaultdict(collections.Counter)
    for gateway, spans in enumerate(spans_by_gateway):
        for span in spans:
            traces[span.trace_id][gateway] += 1
    return traces


# trace id (hex, as the receiver reports it) -> trace number, for every trace the tests send
NUMBERS = {f"{trace_generator.trace_id_of(n):032x}": n for n in range(TRACES + 5_000)}


def test_every_trace_is_whole_at_one_gateway_and_the_policies_keep_what_they_promise(
    tier: Tier,
) -> None:
    reports = finish(tier.generate(0, TRACES))
    assert [r["failed"] for r in reports] == [0, 0]
    assert sum(r["sent"] for r in reports) == TRACES * SPANS_PER_TRACE
    tier.settled()
    traces = _traces(tier.spans_by_gateway())
    kept = {NUMBERS[t]: by for t, by in traces.items() if NUMBERS.get(t, TRACES) < TRACES}
    # whole at exactly one gateway: no trace split, none short of a span
    split = {n: dict(by) for n, by in kept.items() if len(by) != 1}
    assert not split, f"{len(split)} traces split across gateways, e.g. {list(split.items())[:3]}"
    short = {n: dict(by) for n, by in kept.items() if sum(by.values()) != SPANS_PER_TRACE}
    assert not short, f"{len(short)} traces incomplete, e.g. {list(short.items())[:3]}"
    # every gateway took a share of the trace ids
    per_gateway = collections.Counter(next(iter(by)) for by in kept.values())
    assert len(per_gateway) == len(GATEWAY_ADDRESSES), per_gateway
    # the policies: every error and every slow trace, about 10 % of the rest
    kinds = collections.Counter(trace_generator.kind_of(n) for n in range(TRACES))
    kept_kinds = collections.Counter(trace_generator.kind_of(n) for n in kept)
    assert kept_kinds["error"] == kinds["error"]
    assert kept_kinds["slow"] == kinds["slow"]
    share = kept_kinds["normal"] / kinds["normal"]
    # binomial standard deviation over 9 000 traces: 0.32 percentage points; allow 4
    tolerance = 4 * (BASELINE_SHARE * (1 - BASELINE_SHARE) / kinds["normal"]) ** 0.5
    assert abs(share - BASELINE_SHARE) <= tolerance, share
    print(
        f"{TRACES} traces: kept {kept_kinds['error']} error, {kept_kinds['slow']} slow and "
        f"{kept_kinds['normal']} of {kinds['normal']} normal ({share:.2%}); per gateway "
        f"{dict(sorted(per_gateway.items()))}"
    )


UPLOADS = 100  # P(no upload trace kept by the 10 % baseline) = 0.9^100, about 3e-5


def test_the_example_backend_and_worker_traces_cross_the_tier_into_jaeger(
    tier: Tier, tmp_path: Path
) -> None:
    """The backend sends through one agent, its worker through the other: an upload's trace
    (request, queue, job) is kept or dropped whole at one gateway and is whole in Jaeger."""
    before = [len(r.spans()) for r in tier.receivers]

    def env(agent: int) -> dict[str, str]:
        return {
            **telemetry_env(None),
            "OTEL_EXPORTER_OTLP_ENDPOINT": tier.agent_endpoints[agent],
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }

    with example_apps(tmp_path, env(0), env(1)) as backend:
        session = run_workload(backend.url)
        for _ in range(UPLOADS):
            session.upload()
            session.wait_for_document()
    tier.settled()
    spans = [r.spans()[b:] for r, b in zip(tier.receivers, before, strict=True)]
    by_trace: dict[str, set[int]] = collections.defaultdict(set)
    services: dict[str, set[str]] = collections.defaultdict(set)
    uploads = set()
    for gateway, gateway_spans in enumerate(spans):
        for span in gateway_spans:
            by_trace[span.trace_id].add(gateway)
            services[span.trace_id].add(span.resource.get("service.name"))
            if span.attributes.get("http.route") == "/documents":
                uploads.add(span.trace_id)
    assert all(len(gateways) == 1 for gateways in by_trace.values())  # never split
    crossing = [t for t in uploads if services[t] == {"chatai-backend", "chatai-worker"}]
    assert crossing, f"no upload trace of {UPLOADS + 1} was kept with both services' spans"
    span_ids: dict[str, set[str]] = collections.defaultdict(set)
    for gateway_spans in spans:
        for span in gateway_spans:
            span_ids[span.trace_id].add(span.span_id)
    for trace_id in crossing[:5]:
        # Jaeger stores what it is sent asynchronously, one resourceSpans entry per batch
        found = wait_until(lambda t=trace_id: jaeger_spans(tier, t, span_ids[t]), timeout=30)
        assert {"chatai-backend", "chatai-worker"} <= set(found)
        ids = {s["spanId"] for group in found.values() for s in group}
        for consumer in (s for s in found["chatai-worker"] if s.get("kind") == 5):
            assert consumer["parentSpanId"] in ids  # the job's span hangs under the request's
    print(f"{len(crossing)} upload traces kept, each whole at one gateway and in Jaeger")


def jaeger_spans(tier: Tier, trace_id: str, expected: set[str]) -> dict[str, list[Any]] | None:
    """The trace's spans in Jaeger by service, once all of ``expected`` span ids are there."""
    answer = httpx.get(f"{tier.jaeger.jaeger_url}/api/v3/traces/{trace_id}", timeout=10)
    if answer.status_code != 200:
        return None
    found: dict[str, list[Any]] = collections.defaultdict(list)
    for resource_spans in answer.json()["result"]["resourceSpans"]:
        service = next(
            a["value"]["stringValue"]
            for a in resource_spans["resource"]["attributes"]
            if a["key"] == "service.name"
        )
        found[service] += [s for ss in resource_spans["scopeSpans"] for s in ss["spans"]]
    ids = {s["spanId"] for group in found.values() for s in group}
    return dict(found) if ids >= expected else None


def test_a_gateway_killed_mid_run_loses_only_its_window_and_the_agents_move_on(
    tier: Tier,
) -> None:
    first, count, rate = TRACES, 3_000, 200.0
    before = [len(r.spans()) for r in tier.receivers]
    victim = tier.gateways[2]
    accepted_before = victim.telemetry().get("otelcol_receiver_accepted_spans_total", 0.0)
    launched_ns = time.time_ns()
    processes = tier.generate(first, count, per_second=rate, all_errors=True)
    time.sleep(5)
    accepted = victim.telemetry().get("otelcol_receiver_accepted_spans_total", 0.0)
    accepted -= accepted_before  # this run's spans, up to just before the kill
    remove_hosts_entry(tier.hostname, GATEWAY_ADDRESSES[2])  # the headless service drops it
    victim.stop(signal.SIGKILL)
    killed_ns = time.time_ns()
    reports = finish(processes)
    assert [r["failed"] for r in reports] == [0, 0], reports  # the apps never noticed
    tier.settled()
    spans = [r.spans()[b:] for r, b in zip(tier.receivers, before, strict=True)]
    traces = _traces(spans)
    whole = {
        NUMBERS[t]
        for t, by in traces.items()
        if len(by) == 1 and sum(by.values()) == SPANS_PER_TRACE
    }
    lost = [n for n in range(first, first + count) if n not in whole]
    # A trace begun once the agents had re-resolved (1 s interval, up to 5 s of resolver
    # caching, 2 s of batching) reached a live gateway whole. Trace n began no earlier than
    # launched + (n - first) / rate.
    settle_s = 8.0
    after_kill_s = (killed_ns - launched_ns) / 1e9
    late_lost = [n for n in lost if (n - first) / rate >= after_kill_s + settle_s]
    assert not late_lost, f"{len(late_lost)} traces begun 8 s after the kill were lost"
    window = 12 + 8  # decision wait + batch before the kill, re-resolution after, seconds
    assert len(lost) <= window * rate, (len(lost), window * rate)
    failed = sum(
        a.telemetry().get("otelcol_exporter_send_failed_spans_total", 0.0) for a in tier.agents
    )
    held = accepted - len(spans[2])  # accepted by the victim, never exported
    print(
        f"gateway killed: {len(lost)} of {count} traces lost ({len(lost) / rate:.1f} s of "
        f"traffic at {rate:.0f}/s); the victim had accepted {accepted:.0f} of its spans and "
        f"exported {len(spans[2])} (at least {held:.0f} held in its decision wait died with "
        f"it); the agents counted {failed:.0f} spans they could not send"
    )
    assert tier.gateways[0].healthy() and tier.gateways[1].healthy()
