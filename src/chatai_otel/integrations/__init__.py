"""Where chatai-otel meets libraries: the ASGI middleware and FastAPI setup, SQLAlchemy,
the jobs' trace propagation, the aiogram bot, the browser tunnel, and the list of stock
instrumentors the distro loads. A new integration goes here (docs/architecture.md)."""
