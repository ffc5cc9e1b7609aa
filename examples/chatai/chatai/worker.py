"""The job worker: ``python -m chatai.worker`` (needs REDIS_URL; without Redis the backend runs the
jobs itself). Configured the worker way: the first import configures traces, metrics and logs."""

import chatai_otel.setup  # noqa: F401, I001  (first: SQLAlchemy and Redis are instrumented from here on)

import asyncio
import os
import pathlib
import signal
import sys

from chatai import jobs
from chatai.config import config
from chatai.db import create_tables, engine
from chatai_otel import get_logger

log = get_logger("chatai.worker")


async def main() -> int:
    if not config.redis_url:
        print("chatai.worker: set REDIS_URL (without Redis the backend runs the jobs itself)")
        return 2
    heartbeat_path = os.environ.get("WORKER_HEARTBEAT")
    heartbeat = pathlib.Path(heartbeat_path) if heartbeat_path else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)  # finish the job in hand, then exit and flush
    await create_tables()
    queue = jobs.RedisQueue(config.redis_url, config.queue)
    log.info("worker.started", queue=queue.name)
    print(f"WORKER-READY {queue.name}", flush=True)
    try:
        handled = await jobs.run(queue, stop, heartbeat)
    finally:
        await queue.close()
        await engine.dispose()
    log.info("worker.stopped", handled=handled)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
