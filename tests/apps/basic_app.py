"""A tiny FastAPI app for end-to-end tests: it knows nothing of telemetry but get_logger."""

from fastapi import FastAPI

from chatai_otel import get_logger

app = FastAPI()
log = get_logger("basic_app")


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/work/{item}")
async def work(item: int) -> dict[str, int]:
    log.info("work.done", item=item)
    return {"item": item}
