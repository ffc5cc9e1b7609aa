"""Messages per user per minute: a fixed-window counter in Redis (shared by every backend process),
or in this process's memory when there is no Redis."""

from __future__ import annotations

import time
from typing import Any


class RateLimiter:
    def __init__(
        self, limit: int, redis_client: Any | None = None, prefix: str = "chatai:rl"
    ) -> None:
        self.limit = limit
        self.redis = redis_client
        self.prefix = prefix
        self._local: dict[tuple[int, int], int] = {}

    async def hit(self, user_id: int) -> bool:
        """Count one message; False when the user is over the limit for this minute."""
        window = int(time.time() // 60)
        if self.redis is not None:
            key = f"{self.prefix}:{user_id}:{window}"
            async with self.redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(key).expire(key, 120).execute()
            return int(count) <= self.limit
        for stale in [k for k in self._local if k[1] < window]:
            del self._local[stale]
        key_local = (user_id, window)
        self._local[key_local] = self._local.get(key_local, 0) + 1
        return self._local[key_local] <= self.limit
