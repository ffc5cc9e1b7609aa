"""Health checks: concurrent, bounded by timeouts, cached, and exported as metrics.

The seed checked the database, Redis, external services and the host one after
another and blocked the event loop for a whole second in
``psutil.cpu_percent(interval=1)``. Here:

* every check runs concurrently with the others and has its own timeout, so
  ``/health/detailed`` answers within the slowest timeout, never their sum;
* synchronous clients (a sync SQLAlchemy engine, ``redis.Redis``, psutil) run
  on a thread, at most one per check: a hung client is joined by the next run
  instead of piling up threads, and the event loop never waits on it;
* each result is cached for ``CHATAI_OTEL_HEALTH_CACHE_TTL`` seconds and
  concurrent callers share one in-flight run, so a probe storm costs one
  ``SELECT 1``;
* the latest results are metrics (``chatai.health.status``,
  ``chatai.health.check.duration`` and the host gauges of the system check);
  the observable callbacks only read the cached results, they never do I/O;
* the checks themselves create no spans (instrumentation is suppressed inside
  them), and an HTTP dependency's URL and headers never appear in a response
  or a log line: only its scheme, host and port do.

Use::

    checker = HealthChecker()
    checker.add_database(engine)             # sync or async SQLAlchemy engine
    checker.add_redis(redis_client)          # redis.Redis or redis.asyncio.Redis
    checker.add_http("openai", "https://api.openai.com/v1/models",
                     headers={"Authorization": f"Bearer {key}"})
    checker.add_system()
    app.include_router(health_router(checker))

This package sits on top (with the integrations and ``cli``): it imports config,
redaction, logs and bootstrap, and FastAPI, httpx, SQLAlchemy, redis and psutil
only when the check or router that needs them is created. Modules: :mod:`~chatai_otel.health.report` (statuses and results), :mod:`~chatai_otel.health.off_loop`,
:mod:`~chatai_otel.health.builtin_checks`, :mod:`~chatai_otel.health.checker` (``HealthChecker``),
:mod:`~chatai_otel.health.metrics` and :mod:`~chatai_otel.health.router` (``health_router``).
"""
