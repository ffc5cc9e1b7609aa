"""AI responses in the GenAI semantic conventions, as they arrive at the real OTLP receiver."""

from __future__ import annotations

import pytest
from genai_prices import Usage, calc_price

from chatai_otel import metric_names as names
from chatai_otel.tracking import genai
from support.events import last_points, run_scenario

pytestmark = pytest.mark.e2e  # starts other processes (see conftest: unit vs e2e)

CLIENT = 3  # SpanKind.CLIENT in OTLP
ERROR = 2


def test_metric_names_units_and_buckets_are_the_specs():
    # https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/
    assert names.GEN_AI_TOKEN_USAGE == "gen_ai.client.token.usage"
    assert names.GEN_AI_TOKEN_USAGE_UNIT == "{token}"
    spec_token_buckets = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576]
    spec_token_buckets += [4194304, 16777216, 67108864]
    assert list(names.GEN_AI_TOKEN_USAGE_BUCKETS) == spec_token_buckets
    assert names.GEN_AI_OPERATION_DURATION == "gen_ai.client.operation.duration"
    assert names.GEN_AI_OPERATION_DURATION_UNIT == "s"
    spec_duration_buckets = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12]
    spec_duration_buckets += [10.24, 20.48, 40.96, 81.92]
    assert list(names.GEN_AI_OPERATION_DURATION_BUCKETS) == spec_duration_buckets


def test_seed_event_data_maps_onto_usage():
    usage = genai.AIUsage.from_event_data(
        {
            "assistant_id": 3,
            "model_used": "gpt-4o-mini",
            "tokens_used": 812,
            "input_tokens": "500",
            "output_tokens": 312,
            "response_time_seconds": 1.25,
            "cost": "0.0012",
        }
    )
    assert usage.request_model == "gpt-4o-mini" and usage.operation == "chat"
    assert (usage.input_tokens, usage.output_tokens) == (500, 312)
    assert usage.duration == 1.25 and usage.cost == 0.0012
    only_total = genai.AIUsage.from_event_data({"model_used": "m", "tokens_used": 10})
    assert only_total.input_tokens is None and only_total.output_tokens is None


def test_provider_is_inferred_from_the_model_with_genai_prices():
    assert genai.provider_name(None, "gpt-4o-mini") == "openai"
    assert genai.provider_name(None, "claude-3-5-haiku-latest") == "anthropic"
    assert genai.provider_name("OpenAI", "anything") == "openai"
    assert genai.provider_name(None, "no-such-model-xyz") == "unknown"
    assert genai.provider_name(None, None) == "unknown"


def test_cost_is_computed_from_tokens_or_left_unknown():
    expected = float(
        calc_price(Usage(input_tokens=1000, output_tokens=100), "gpt-4o-mini").total_price
    )
    assert genai.compute_cost("gpt-4o-mini", "openai", 1000, 100) == pytest.approx(expected)
    assert genai.compute_cost("gpt-4o-mini", "openai", 1000, None) is None
    assert genai.compute_cost("no-such-model-xyz", None, 10, 10) is None
    assert ("no-such-model-xyz", "") in genai._unpriced  # not looked up again


def test_ai_responses_arrive_in_the_genai_conventions(receiver):
    result, _stdout = run_scenario(receiver, "ai")
    assert result["failed"] is True
    spans = receiver.wait_for_spans(4, lambda s: s.kind == CLIENT)
    with_event = {}
    for span in spans:
        for event in span.events:
            event_id = event["attributes"].get("chatai.event.id")
            if event_id:
                with_event[event_id] = span
    for span in spans:
        assert "gen_ai.system" not in span.attributes  # deprecated: gen_ai.provider.name

    # the seed's event: a backdated client span with the reported cost
    reported = with_event[result["reported"]]
    assert reported.name == "chat gpt-4o-mini"
    assert reported.attributes["gen_ai.operation.name"] == "chat"
    assert reported.attributes["gen_ai.provider.name"] == "openai"
    assert reported.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert reported.attributes["gen_ai.usage.input_tokens"] == 500
    assert reported.attributes["gen_ai.usage.output_tokens"] == 312
    assert reported.attributes["chatai.ai.cost"] == pytest.approx(0.0012)
    assert reported.attributes["chatai.ai.cost.source"] == "reported"
    assert reported.end_ns - reported.start_ns == pytest.approx(1.5e9, rel=0.01)

    computed = with_event[result["computed"]]
    assert computed.attributes["gen_ai.provider.name"] == "anthropic"
    assert computed.attributes["chatai.ai.cost.source"] == "computed"
    expected_cost = float(
        calc_price(
            Usage(input_tokens=1000, output_tokens=100),
            "claude-3-5-haiku-latest",
            provider_id="anthropic",
        ).total_price
    )
    assert computed.attributes["chatai.ai.cost"] == pytest.approx(expected_cost)

    # ai_call around a call: the event inside lands on its span, counted once
    inside = with_event[result["inside"]]
    assert inside.name == "chat gpt-4o"
    assert inside.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert inside.attributes["gen_ai.usage.input_tokens"] == 20
    assert inside.attributes["chatai.ai.cost"] == pytest.approx(0.5)
    assert inside.end_ns - inside.start_ns >= 40_000_000
    parent = next(s for s in receiver.spans() if s.span_id == inside.parent_span_id)
    assert parent.name == "request ai"

    failed = next(s for s in spans if s.status_code == ERROR)
    assert failed.name == "chat gpt-4o-mini"
    assert failed.attributes["error.type"] == "TimeoutError"

    # metrics: names, units, buckets and attributes as the spec has them
    receiver.wait_for_metrics(1, lambda p: p.name == names.AI_COST)
    tokens = last_points(receiver, names.GEN_AI_TOKEN_USAGE)
    assert all(p.unit == "{token}" and p.kind == "histogram" for p in tokens.values())
    assert all(p.explicit_bounds == names.GEN_AI_TOKEN_USAGE_BUCKETS for p in tokens.values())
    sums: dict[tuple[str, str], float] = {}
    for key, point in tokens.items():
        attributes = dict(key)
        assert {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.token.type"} <= set(
            attributes
        )
        model = attributes["gen_ai.request.model"]
        sums[(model, attributes["gen_ai.token.type"])] = point.sum
    assert sums == {
        ("gpt-4o-mini", "input"): 500,
        ("gpt-4o-mini", "output"): 312,
        ("claude-3-5-haiku-latest", "input"): 1000,
        ("claude-3-5-haiku-latest", "output"): 100,
        ("gpt-4o", "input"): 20,
        ("gpt-4o", "output"): 10,
    }

    durations = last_points(receiver, names.GEN_AI_OPERATION_DURATION)
    assert all(p.unit == "s" for p in durations.values())
    assert all(
        p.explicit_bounds == names.GEN_AI_OPERATION_DURATION_BUCKETS for p in durations.values()
    )
    errors = [dict(key) for key in durations if "error.type" in dict(key)]
    assert errors == [
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "error.type": "TimeoutError",
        }
    ]

    cost = last_points(receiver, names.AI_COST)
    assert all(p.unit == "USD" and p.kind == "sum" for p in cost.values())
    by_model = {dict(key)["gen_ai.request.model"]: p.value for key, p in cost.items()}
    assert by_model == {
        "gpt-4o-mini": pytest.approx(0.0012),
        "claude-3-5-haiku-latest": pytest.approx(expected_cost),
        "gpt-4o": pytest.approx(0.5),
    }


def test_prices_load_in_a_configured_process_only():
    """Importing the GenAI helpers starts no thread; configure() starts the price-data loader,
    and so does the first import of them in a process configured already."""
    import subprocess
    import sys

    from conftest import telemetry_env

    names = "names = lambda: sorted(t.name for t in threading.enumerate())\n"
    before = (
        "import threading, chatai_otel, chatai_otel.tracking.genai\n" + names
        + "print('IMPORTED', names())\n"
        "chatai_otel.configure()\n"
        "print('CONFIGURED', names())\n"
    )  # fmt: skip
    after = (
        "import threading, chatai_otel\n" + names
        + "chatai_otel.configure()\n"
        "print('CONFIGURED', names())\n"
        "import chatai_otel.tracking.genai\n"
        "print('IMPORTED', names())\n"
    )  # fmt: skip
    for script in (before, after):
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=telemetry_env(None),
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
        if script is before:
            assert lines["IMPORTED"] == "IMPORTED ['MainThread']", done.stdout + done.stderr
            assert "chatai-otel-genai-prices" in lines["CONFIGURED"]
        else:
            assert "chatai-otel-genai-prices" not in lines["CONFIGURED"], done.stdout
            assert "chatai-otel-genai-prices" in lines["IMPORTED"], done.stdout + done.stderr
