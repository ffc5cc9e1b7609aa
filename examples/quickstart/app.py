"""The smallest backend under chatai-otel: launch it with `opentelemetry-instrument uvicorn app:app`."""

from fastapi import FastAPI

from chatai_otel import get_logger

app = FastAPI(title="chatai-otel quickstart")
log = get_logger("quickstart")


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/dialogs/{dialog_id}")
async def dialog(dialog_id: int) -> dict[str, int]:
    log.info("dialog.opened", dialog_id=dialog_id)
    return {"dialog_id": dialog_id}
