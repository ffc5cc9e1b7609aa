"""AI responses in the GenAI semantic conventions: a client span, token and duration histograms, spend.

Two ways in:

* ``events.emit(EventType.AI_RESPONSE_GENERATED, data={...})`` with the seed's
  data keys (``model_used``, ``input_tokens``/``output_tokens``, ``cost``,
  ``response_time_seconds``): the event becomes a CLIENT span named
  ``"{operation} {model}"`` that ends now and starts ``response_time_seconds``
  earlier, so the trace shows the AI call where and as long as it happened.
* around any LLM call::

      with genai.ai_call("gpt-4o-mini", provider="openai") as call:
          reply = await client.chat.completions.create(...)
          call.record(input_tokens=reply.usage.prompt_tokens,
                      output_tokens=reply.usage.completion_tokens,
                      response_model=reply.model)

  measures the call itself. An AI_RESPONSE_GENERATED event emitted *inside*
  the block lands on that span and is not counted twice.

Spend goes to ``chatai.ai.cost`` (USD): the reported cost when the event has
one, otherwise computed from tokens and model with the ``genai-prices`` package
(optional extra ``genai``) when both token counts are known.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chatai_otel import metric_names as names
from chatai_otel.bootstrap import when_configured
from chatai_otel.export.cheap_spans import FastTracer
from chatai_otel.spans import error_type, record_exception

__all__ = [
    "AICall",
    "AIUsage",
    "ai_call",
    "compute_cost",
    "current_call",
    "provider_name",
]

# --- attribute keys (GenAI semantic conventions; gen_ai.system is deprecated) -------------

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
COST = "chatai.ai.cost"  # span attribute, USD
COST_SOURCE = "chatai.ai.cost.source"  # "reported" | "computed"

UNKNOWN_PROVIDER = "unknown"

# semconv gen_ai.provider.name -> genai-prices provider id, and back for inference
_PRICES_ID = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
}
_SEMCONV_NAME = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gen_ai",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral": "mistral_ai",
    "perplexity": "perplexity",
    "x-ai": "x_ai",
}

_tracer = FastTracer("chatai_otel.genai")  # plain SDK spans whenever other processors listen
_meter = metrics.get_meter("chatai_otel.genai")
_token_usage = _meter.create_histogram(
    names.GEN_AI_TOKEN_USAGE,
    unit=names.GEN_AI_TOKEN_USAGE_UNIT,
    description="Number of input and output tokens used.",
    explicit_bucket_boundaries_advisory=names.GEN_AI_TOKEN_USAGE_BUCKETS,
)
_duration = _meter.create_histogram(
    names.GEN_AI_OPERATION_DURATION,
    unit=names.GEN_AI_OPERATION_DURATION_UNIT,
    description="GenAI operation duration.",
    explicit_bucket_boundaries_advisory=names.GEN_AI_OPERATION_DURATION_BUCKETS,
)
_cost = _meter.create_counter(
    names.AI_COST, unit=names.AI_COST_UNIT, description="Spend on AI calls, in US dollars."
)


@dataclass(slots=True)
class AIUsage:
    """What is known about one AI call; unknown fields stay None."""

    request_model: str | None = None
    response_model: str | None = None
    provider: str | None = None  # gen_ai.provider.name; inferred from the model when None
    operation: str = "chat"
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration: float | None = None  # seconds
    cost: float | None = None  # USD as reported; computed from tokens when None
    response_id: str | None = None
    finish_reasons: Sequence[str] | None = None
    server_address: str | None = None
    server_port: int | None = None
    error_type: str | None = None
    cost_source: str | None = field(default=None, repr=False)

    @classmethod
    def from_event_data(cls, data: Mapping[str, Any]) -> AIUsage:
        """Read the seed's keys (and the semconv names) from an AI_RESPONSE_GENERATED event."""

        def first(*keys: str) -> Any:
            for key in keys:
                value = data.get(key)
                if value is not None:
                    return value
            return None

        return cls(
            request_model=_str(first("model_used", "model", REQUEST_MODEL, "request_model")),
            response_model=_str(first("response_model", RESPONSE_MODEL)),
            provider=_str(first("provider", PROVIDER_NAME)),
            operation=_str(first("operation", OPERATION_NAME)) or "chat",
            input_tokens=_int(first("input_tokens", "prompt_tokens", USAGE_INPUT_TOKENS)),
            output_tokens=_int(first("output_tokens", "completion_tokens", USAGE_OUTPUT_TOKENS)),
            duration=_float(first("response_time_seconds", "duration_seconds", "duration")),
            cost=_float(first("cost", "cost_usd")),
            response_id=_str(first("response_id", RESPONSE_ID)),
        )

    def fill_from(self, other: AIUsage) -> None:
        """Take ``other``'s known values where ours are unknown."""
        for item in fields(self):
            if getattr(self, item.name) is None:
                value = getattr(other, item.name)
                if value is not None:
                    setattr(self, item.name, value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


# --- provider and price lookups (genai-prices), cached: the package takes ~0.2 ms a lookup --

_cache_lock = threading.Lock()
_provider_cache: dict[str, str] = {}
_unpriced: set[tuple[str, str]] = set()
_CACHE_LIMIT = 512


def provider_name(provider: str | None, model: str | None) -> str:
    """``gen_ai.provider.name``: as given, else inferred from the model, else ``unknown``."""
    if provider:
        return provider.lower()
    if not model:
        return UNKNOWN_PROVIDER
    cached = _provider_cache.get(model)
    if cached is not None:
        return cached
    name = UNKNOWN_PROVIDER
    try:
        from genai_prices import data_snapshot

        found = data_snapshot.get_snapshot().find_provider(model, None, None)
        name = _SEMCONV_NAME.get(found.id, found.id)
    except Exception:
        pass
    with _cache_lock:
        if len(_provider_cache) < _CACHE_LIMIT:
            _provider_cache[model] = name
    return name


def compute_cost(
    model: str | None, provider: str | None, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """USD for the tokens with genai-prices, or None (unknown model, no package, tokens missing)."""
    if not model or input_tokens is None or output_tokens is None:
        return None
    prices_id = _PRICES_ID.get(provider or "", provider) if provider != UNKNOWN_PROVIDER else None
    key = (model, prices_id or "")
    if key in _unpriced:
        return None
    try:
        from genai_prices import Usage, calc_price

        price = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model,
            provider_id=prices_id,
        )
        total: Decimal = price.total_price
        return float(total)
    except Exception:
        with _cache_lock:
            if len(_unpriced) < _CACHE_LIMIT:
                _unpriced.add(key)
        return None


# --- spans and metrics --------------------------------------------------------------------


def _resolve(usage: AIUsage) -> None:
    """Provider and cost, filled in once per call."""
    usage.provider = provider_name(usage.provider, usage.request_model or usage.response_model)
    if usage.cost is not None:
        usage.cost_source = usage.cost_source or "reported"
    else:
        usage.cost = compute_cost(
            usage.response_model or usage.request_model,
            usage.provider,
            usage.input_tokens,
            usage.output_tokens,
        )
        if usage.cost is not None:
            usage.cost_source = "computed"


def span_name(usage: AIUsage) -> str:
    """``"{gen_ai.operation.name} {gen_ai.request.model}"`` as the conventions name client spans."""
    model = usage.request_model or usage.response_model
    return f"{usage.operation} {model}" if model else usage.operation


def span_attributes(usage: AIUsage) -> dict[str, Any]:
    """The span attributes of one AI call (after provider and cost are resolved)."""
    attributes: dict[str, Any] = {
        OPERATION_NAME: usage.operation,
        PROVIDER_NAME: usage.provider or UNKNOWN_PROVIDER,
    }
    optional: dict[str, Any] = {
        REQUEST_MODEL: usage.request_model,
        RESPONSE_MODEL: usage.response_model,
        RESPONSE_ID: usage.response_id,
        USAGE_INPUT_TOKENS: usage.input_tokens,
        USAGE_OUTPUT_TOKENS: usage.output_tokens,
        SERVER_ADDRESS: usage.server_address,
        SERVER_PORT: usage.server_port,
        ERROR_TYPE: usage.error_type,
        COST: usage.cost,
        COST_SOURCE: usage.cost_source,
    }
    attributes.update({key: value for key, value in optional.items() if value is not None})
    if usage.finish_reasons:
        attributes[RESPONSE_FINISH_REASONS] = [str(reason) for reason in usage.finish_reasons]
    return attributes


def record_metrics(usage: AIUsage) -> None:
    """Token usage, duration and spend of one AI call (provider and cost already resolved)."""
    common: dict[str, Any] = {
        OPERATION_NAME: usage.operation,
        PROVIDER_NAME: usage.provider or UNKNOWN_PROVIDER,
    }
    if usage.request_model:
        common[REQUEST_MODEL] = usage.request_model
    if usage.response_model:
        common[RESPONSE_MODEL] = usage.response_model
    if usage.server_address:
        common[SERVER_ADDRESS] = usage.server_address
    if usage.server_port is not None:
        common[SERVER_PORT] = usage.server_port
    if usage.input_tokens is not None and usage.input_tokens >= 0:
        _token_usage.record(usage.input_tokens, {**common, TOKEN_TYPE: "input"})
    if usage.output_tokens is not None and usage.output_tokens >= 0:
        _token_usage.record(usage.output_tokens, {**common, TOKEN_TYPE: "output"})
    if usage.duration is not None and usage.duration >= 0:
        duration_attributes = common
        if usage.error_type:
            duration_attributes = {**common, ERROR_TYPE: usage.error_type}
        _duration.record(usage.duration, duration_attributes)
    if usage.cost is not None and usage.cost > 0:
        cost_attributes = {PROVIDER_NAME: common[PROVIDER_NAME]}
        model = usage.request_model or usage.response_model
        if model:
            cost_attributes[REQUEST_MODEL] = model
        _cost.add(usage.cost, cost_attributes)


def start_span(usage: AIUsage, *, start_time: int | None = None) -> Span:
    """A CLIENT span for one AI call, child of the active span."""
    return _tracer.start_span(span_name(usage), kind=SpanKind.CLIENT, start_time=start_time)


def finish(span: Span, usage: AIUsage, *, end_time: int | None = None) -> None:
    """Resolve provider and cost, set the attributes, record the metrics, end the span."""
    _resolve(usage)
    if span.is_recording():
        span.update_name(span_name(usage))
        span.set_attributes(span_attributes(usage))
    record_metrics(usage)
    span.end(end_time=end_time)


def record_response(usage: AIUsage) -> tuple[Span, int]:
    """An AI response known only after the fact: a span backdated by its duration, not yet ended.

    Returns the span and its end time (now); the caller adds its event to the
    span, then calls :func:`finish` with that end time.
    """
    now = time.time_ns()
    start = now - int(usage.duration * 1e9) if usage.duration and usage.duration > 0 else now
    return start_span(usage, start_time=start), now


# --- ai_call: measure a call as it happens -----------------------------------------------

_current: contextvars.ContextVar[AICall | None] = contextvars.ContextVar(
    "chatai_otel_ai_call", default=None
)


def current_call() -> AICall | None:
    """The :class:`AICall` whose block we are in, if any."""
    return _current.get()


class AICall:
    """One AI call measured by ``with ai_call(...)`` (or ``async with``)."""

    def __init__(
        self,
        model: str | None,
        *,
        provider: str | None = None,
        operation: str = "chat",
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> None:
        self.usage = AIUsage(
            request_model=model,
            provider=provider,
            operation=operation,
            server_address=server_address,
            server_port=server_port,
        )
        self.span: Span = trace.INVALID_SPAN
        self._started = 0.0
        self._tokens: list[Any] = []

    def record(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
        cost: float | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """What the response said; call it any number of times, later values win."""
        updates = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "response_model": response_model,
            "cost": _float(cost),
            "response_id": response_id,
            "finish_reasons": finish_reasons,
        }
        for name, value in updates.items():
            if value is not None:
                setattr(self.usage, name, value)

    def absorb(self, usage: AIUsage) -> None:
        """Take what an AI_RESPONSE_GENERATED event inside this block knows and we do not."""
        duration = self.usage.duration
        self.usage.fill_from(usage)
        self.usage.duration = duration  # our own clock measures the call

    def __enter__(self) -> AICall:
        try:
            self.span = start_span(self.usage)
            self._tokens = [
                otel_context.attach(trace.set_span_in_context(self.span)),
                _current.set(self),
            ]
        except Exception:
            self._tokens = []
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = time.perf_counter() - self._started
        try:
            if self._tokens:
                _current.reset(self._tokens[1])
                otel_context.detach(self._tokens[0])
            if self.usage.duration is None:
                self.usage.duration = duration
            if exc is not None:
                self.usage.error_type = error_type(exc)
                record_exception(self.span, exc)
                self.span.set_status(Status(StatusCode.ERROR, self.usage.error_type))
            finish(self.span, self.usage)
        except Exception:
            pass  # telemetry never breaks the call it measures

    async def __aenter__(self) -> AICall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def ai_call(
    model: str | None,
    *,
    provider: str | None = None,
    operation: str = "chat",
    server_address: str | None = None,
    server_port: int | None = None,
) -> AICall:
    """Measure one AI call: ``with ai_call("gpt-4o-mini", provider="openai") as call: ...``."""
    return AICall(
        model,
        provider=provider,
        operation=operation,
        server_address=server_address,
        server_port=server_port,
    )


def _load_prices() -> None:
    """genai-prices reads its price data on first use (~0.2 s): do that now, off any request."""
    try:
        from genai_prices import data_snapshot

        data_snapshot.get_snapshot()
    except Exception:
        pass


def _start_loading_prices() -> None:
    # Not a daemon: a short-lived process waits the fraction of a second for the import to
    # finish; a daemon thread still importing while the interpreter finalized was seen to
    # crash it (SIGSEGV at exit).
    threading.Thread(target=_load_prices, name="chatai-otel-genai-prices", daemon=False).start()


# Only a configured process loads them: importing the package starts no thread.
when_configured(_start_loading_prices)
