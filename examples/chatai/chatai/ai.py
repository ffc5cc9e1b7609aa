"""The AI model — a LOCAL STAND-IN. No model is called and nothing leaves the machine.

``LocalModel.complete()`` answers deterministically from the prompt, counts
tokens the way a tokenizer roughly would (4 characters a token) and sleeps for
a latency that grows with the reply, like a real model. It exists so that the
example runs anywhere, offline and free. To use a real model, replace the body
of :func:`reply` with your client call; keep the ``genai.ai_call`` block and its
``call.record(...)``, which is where the gen_ai.* spans and metrics come from::

    async with genai.ai_call("gpt-4o-mini", provider="openai") as call:
        response = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=...)
        call.record(input_tokens=response.usage.prompt_tokens,
                    output_tokens=response.usage.completion_tokens,
                    response_model=response.model, response_id=response.id)
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass

from chatai_otel import BusinessEvent, EventType, track
from chatai_otel.tracking import events, genai

PROVIDER = "chatai.local"  # gen_ai.provider.name of the stand-in (not a real provider)


@dataclass(frozen=True)
class ModelSpec:
    """Latency and price of one stand-in model."""

    base_latency: float  # seconds before the first token
    per_token: float  # seconds per output token
    input_price: float  # USD per 1M input tokens
    output_price: float  # USD per 1M output tokens
    reply_words: int  # how long its replies are


MODELS: dict[str, ModelSpec] = {
    # fast and cheap: most messages
    "chatai-local-small": ModelSpec(0.02, 0.0006, 0.15, 0.60, 40),
    # slow and dear: the "deep answer" a user asks for now and then
    "chatai-local-large": ModelSpec(0.40, 0.0090, 2.50, 10.00, 90),
    # embeddings for the document worker
    "chatai-local-embed": ModelSpec(0.01, 0.0, 0.02, 0.0, 0),
}
DEFAULT_MODEL = "chatai-local-small"
CHAT_MODELS = tuple(name for name, spec in MODELS.items() if spec.reply_words)

_WORDS = (  # noqa: SIM905 - one sentence reads better than a list of words
    "sure here is what I found about your question the short answer is that it depends on "
    "the details you gave so let me walk through the options one by one and point out the "
    "trade offs of each before suggesting what I would do in your place"
).split()


class UnknownModelError(ValueError):
    """The request named a model the stand-in does not have."""


def count_tokens(text: str) -> int:
    """~4 characters a token, at least one: close enough to a BPE tokenizer for telemetry."""
    return max(1, math.ceil(len(text) / 4))


def _price(spec: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * spec.input_price + output_tokens * spec.output_price) / 1_000_000


@dataclass(frozen=True)
class Reply:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float  # USD
    seconds: float


@track("ai_message_processing")
async def reply(prompt: str, history: list[str], model: str = DEFAULT_MODEL) -> Reply:
    """Generate the assistant's answer (stand-in), inside a GenAI client span with tokens and cost."""
    spec = MODELS.get(model)
    if spec is None or spec.reply_words == 0:
        raise UnknownModelError(model)
    async with genai.ai_call(model, provider=PROVIDER) as call:
        # ---- stand-in for the model call: deterministic text from the prompt's hash ----
        digest = hashlib.sha256(prompt.encode()).digest()
        words = [
            _WORDS[(digest[i % len(digest)] + i) % len(_WORDS)] for i in range(spec.reply_words)
        ]
        text = " ".join(words).capitalize() + "."
        input_tokens = count_tokens(prompt) + sum(count_tokens(item) for item in history)
        output_tokens = count_tokens(text)
        seconds = spec.base_latency + spec.per_token * output_tokens
        await asyncio.sleep(seconds)
        # ---- end of stand-in -------------------------------------------------------------
        cost = _price(spec, input_tokens, output_tokens)
        call.record(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            response_model=model,
            cost=cost,
            finish_reasons=["stop"],
            response_id=f"local-{digest.hex()[:16]}",
        )
        # The seed's event, unchanged: inside the ai_call block it lands on the call's span.
        await events.log_event(
            BusinessEvent(
                event_type=EventType.AI_RESPONSE_GENERATED,
                data={
                    "model_used": model,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cost": cost,
                    "response_time_seconds": seconds,
                },
            )
        )
    return Reply(text, model, input_tokens, output_tokens, cost, seconds)


async def embed(chunks: list[str], model: str = "chatai-local-embed") -> tuple[int, float]:
    """Embed document chunks (stand-in: only the token count and the latency are real)."""
    spec = MODELS[model]
    async with genai.ai_call(model, provider=PROVIDER, operation="embeddings") as call:
        tokens = sum(count_tokens(chunk) for chunk in chunks)
        await asyncio.sleep(spec.base_latency + 0.00002 * tokens)  # stand-in for the call
        cost = _price(spec, tokens, 0)
        call.record(input_tokens=tokens, response_model=model, cost=cost)
    return tokens, cost
