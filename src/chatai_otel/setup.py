"""``import chatai_otel.setup`` configures everything, once (workers, the bot, scripts).

Everything includes the client libraries: SQLAlchemy, Redis and httpx are
instrumented here, so engines and clients created after this import get spans
(see :func:`chatai_otel.integrations.instrumentors.instrument_libraries`).

Importing it from many modules is safe: Python imports a module once, and
:func:`chatai_otel.bootstrap.configure` is idempotent besides. A bad
configuration value stops the process with one clear line and exit code 2.
"""

from __future__ import annotations

from chatai_otel.bootstrap import ConfigError, configure, exit_on_config_error

try:
    telemetry = configure()
except ConfigError as _error:
    exit_on_config_error(_error)
    raise SystemExit(2) from None

if telemetry.enabled:
    from chatai_otel.integrations.instrumentors import instrument_libraries

    instrument_libraries()
