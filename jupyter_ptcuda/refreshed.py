"""A value read from a slow source (Docker, the broker) at most once per ``ttl``, shared by all readers.

Used by the server's REST handlers (holders, engine state) and by the broker's GPU telemetry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


class Refreshed:
    """A value read from Docker at most once per ``ttl`` seconds, shared by every request.

    Readers never wait for Docker once a value exists: a stale value is returned at once while one
    background refresh runs (stale-while-revalidate), so 50 polling panels cost one Docker call per
    ``ttl`` and no request queues behind the engine. Only the very first readers wait, all on the
    same call (single flight); if it fails they all get its exception. A failed refresh keeps the
    last value and is tried again after ``ttl``. ``version`` changes with every new value.
    """

    _MISSING: Any = object()

    def __init__(self, ttl: float, produce: Callable[[], Awaitable[Any]], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self._produce, self._clock = ttl, produce, clock  # clock: tests move a fake one
        self._value, self._at, self.version = self._MISSING, 0.0, 0
        self._task: asyncio.Task | None = None

    async def get(self) -> Any:
        if self._task is None and (self._value is self._MISSING or self._clock() - self._at >= self.ttl):
            self._task = asyncio.ensure_future(self._refresh())
            self._task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, not lost
        if self._value is self._MISSING:
            assert self._task is not None
            return await asyncio.shield(self._task)
        return self._value

    async def _refresh(self) -> Any:
        try:
            value = await self._produce()
            self.version += 1
            self._value = value
            return value
        finally:  # a failure keeps the last value and is retried after ``ttl``, not on every read
            self._at, self._task = self._clock(), None
