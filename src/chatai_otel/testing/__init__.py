"""A real OTLP receiver for tests, benchmarks and the demo (:mod:`~chatai_otel.testing.receiver`).
Never imported by the runtime."""
