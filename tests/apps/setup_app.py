"""The same app, configured by `import chatai_otel.setup` instead of opentelemetry-instrument."""

from basic_app import app
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

import chatai_otel.setup  # noqa: F401  (configures telemetry, must come first)

FastAPIInstrumentor.instrument_app(app, exclude_spans=["send", "receive"])
