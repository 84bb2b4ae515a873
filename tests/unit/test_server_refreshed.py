"""The shared, background-refreshed values behind GET gpus (ledger holders, engine state): many polling
panels cost one Docker call per TTL, and no request waits for Docker once a value exists."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_ptcuda.server.handlers import Refreshed


class Source:
    """A Docker-like call: counts calls, can be held open, can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.open = asyncio.Event()
        self.open.set()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        await self.open.wait()
        if self.fail is not None:
            raise self.fail
        return self.calls


async def test_first_readers_share_one_call():
    src = Source()
    src.open.clear()
    value = Refreshed(60, src)
    readers = [asyncio.ensure_future(value.get()) for _ in range(50)]
    await asyncio.sleep(0.01)
    src.open.set()
    assert await asyncio.gather(*readers) == [1] * 50
    assert src.calls == 1 and value.version == 1


async def test_a_stale_value_is_served_at_once_while_one_refresh_runs():
    src = Source()
    value = Refreshed(0.05, src)
    assert await value.get() == 1
    await asyncio.sleep(0.06)
    src.open.clear()  # the engine is slow now
    stale = await asyncio.wait_for(asyncio.gather(*(value.get() for _ in range(50))), 0.5)
    assert stale == [1] * 50 and src.calls == 2  # nobody waited; one refresh in flight
    src.open.set()
    await asyncio.sleep(0.01)
    assert await value.get() == 2 and value.version == 2


async def test_a_failed_first_call_reaches_its_readers_and_the_next_read_retries():
    src = Source()
    src.fail = RuntimeError("daemon gone")
    value = Refreshed(60, src)
    with pytest.raises(RuntimeError, match="daemon gone"):
        await value.get()
    src.fail = None
    assert await value.get() == 2


async def test_a_failed_refresh_keeps_the_last_value_and_retries_after_the_ttl():
    src = Source()
    value = Refreshed(0.05, src)
    assert await value.get() == 1
    src.fail = RuntimeError("daemon gone")
    await asyncio.sleep(0.06)
    assert await value.get() == 1  # stale, while the refresh fails in the background
    await asyncio.sleep(0.01)
    assert [await value.get() for _ in range(20)] == [1] * 20 and src.calls == 2  # no retry storm
    src.fail = None
    await asyncio.sleep(0.06)
    assert await value.get() == 1  # starts call 3
    await asyncio.sleep(0.01)
    assert await value.get() == 3 and value.version == 2
