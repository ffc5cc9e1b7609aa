"""Health checks: concurrent, bounded by timeouts, cached, exported as metrics, and the
FastAPI router that serves them (:mod:`chatai_otel.health.checks`)."""
