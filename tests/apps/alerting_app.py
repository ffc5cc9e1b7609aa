"""An app whose answers drive the alert rules: fine, failing (5xx, optionally after a wait, as a
dependency that times out), slow, a critical error.

Run under ``opentelemetry-instrument uvicorn alerting_app:app``; which answers it gives is the
caller's choice, so the same code is the healthy and the faulty service of the stack tests.
"""

import asyncio
import os

from fastapi import FastAPI, HTTPException

from chatai_otel import ErrorCategory, ErrorSeverity, get_logger, track_error

app = FastAPI()
log = get_logger("alerting_app")
SLOW = float(os.environ.get("ALERTING_APP_SLOW_SECONDS", "5.5"))


@app.get("/ok")
async def ok() -> dict[str, str]:
    log.info("answered.ok")
    return {"status": "ok"}


@app.get("/fail")
async def fail(after: float = 0.0) -> None:
    await asyncio.sleep(after)
    raise HTTPException(503, "dependency unavailable")


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(SLOW)
    return {"status": "slow"}


@app.get("/critical")
async def critical() -> dict[str, str]:
    try:
        raise ConnectionError("payment provider timed out")
    except ConnectionError as error:
        track_error(error, ErrorCategory.EXTERNAL_SERVICE, ErrorSeverity.CRITICAL)
    return {"status": "recorded"}
