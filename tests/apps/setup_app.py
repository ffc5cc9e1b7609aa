"""The same app, configured by `import chatai_otel.setup` instead of opentelemetry-instrument."""

from basic_app import app

import chatai_otel.setup  # noqa: F401  (configures telemetry, must come first)
from chatai_otel import instrument_app

instrument_app(app)
