"""The fast export paths: cheap spans, the span and log queues with their hand-written OTLP
encoders, the request histogram, and sending ready-made OTLP requests.

Everything here runs off the request thread or costs a few microseconds on it; what leans
on OpenTelemetry SDK internals does so only through :mod:`chatai_otel._sdk_compat`.
"""
