"""ChatAI, the example backend of chatai-otel: a small but real app that uses the package as documented.

* ``chatai.main``: the FastAPI backend, run under the standard wrapper
  ``opentelemetry-instrument uvicorn chatai.main:app``;
* ``chatai.worker``: the job worker (``python -m chatai.worker``), configured by
  ``import chatai_otel.setup``;
* ``chatai.bot``: a Telegram bot handler (aiogram) with the chatai-otel middleware;
* ``chatai.workload``: a scripted user session against a running backend.

The AI model and the payment provider are **local stand-ins** (``chatai.ai``,
``chatai.payments``): deterministic, no network, clearly marked. Replace them
with the real clients; the telemetry calls around them stay as they are.
"""
