"""The app of ``bench_tunnel``: a ``/ping`` route and the browser telemetry tunnel, whose rate
limit is lifted so that the poster's load reaches it."""

from __future__ import annotations

from fastapi import FastAPI

from chatai_otel.integrations.browser_tunnel import mount_browser_tunnel

app = FastAPI()
mount_browser_tunnel(app, rate_limit=1e9, burst=10**9)


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
