"""Dataset details (governed schema, row count, version) for anyone who may browse, computed
within bounds: each answer is reused for `ttl` seconds, callers asking for the same dataset at
the same time share one computation, and at most `concurrency` run at once, so browsing (a
source query per dataset page) never takes the worker threads that reads and decisions need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class DetailsCache:
    def __init__(self, ttl: float, concurrency: int,
                 run: Callable[..., Awaitable[Any]]):
        self.ttl, self._run = ttl, run
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._done: dict[str, tuple[float, Any, Any]] = {}  # id -> (when, dataset, info)
        self._running: dict[str, asyncio.Future] = {}

    async def get(self, ds: Any, compute: Callable[[Any], Any]) -> Any:
        """compute(ds) run in a worker thread, or its recent answer for this very dataset
        definition (a reloaded catalogue entry is computed afresh). Errors are not kept."""
        hit = self._done.get(ds.id)
        if hit and hit[1] is ds and time.monotonic() - hit[0] < self.ttl:
            return hit[2]
        running = self._running.get(ds.id)
        if running is not None:
            return await asyncio.shield(running)
        future = asyncio.get_running_loop().create_future()
        self._running[ds.id] = future
        try:
            async with self._slots:
                info = await self._run(compute, ds)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when no one waits
            raise
        finally:
            del self._running[ds.id]
        if len(self._done) > 10_000:
            self._done.clear()
        self._done[ds.id] = (time.monotonic(), ds, info)
        future.set_result(info)
        return info
