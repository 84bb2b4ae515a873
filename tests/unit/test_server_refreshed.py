"""The shared, background-refreshed values behind GET gpus (ledger holders, engine state): many polling
panels cost one Docker call per TTL, and no request waits for Docker once a value exists. The TTL runs on a
fake clock the test moves; a background refresh is waited for (its call, its new version) with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from jupyter_ptcuda.server.handlers import Refreshed
from tests.fakes.backend import FakeClock


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


async def until(what: str, check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {within:.0f} s"
        await asyncio.sleep(0.001)


async def test_first_readers_share_one_call():
    src = Source()
    src.open.clear()
    value = Refreshed(60, src)
    readers = [asyncio.ensure_future(value.get()) for _ in range(50)]
    await until("the first call made", lambda: src.calls == 1)
    src.open.set()
    assert await asyncio.gather(*readers) == [1] * 50
    assert src.calls == 1 and value.version == 1


async def test_a_stale_value_is_served_at_once_while_one_refresh_runs():
    src, clock = Source(), FakeClock()
    value = Refreshed(60, src, clock=clock.monotonic)
    assert await value.get() == 1
    clock.advance(59)
    assert await value.get() == 1 and src.calls == 1  # fresh: no call
    clock.advance(1)
    src.open.clear()  # the engine is slow now
    stale = await asyncio.wait_for(asyncio.gather(*(value.get() for _ in range(50))), 0.5)
    assert stale == [1] * 50 and src.calls == 2  # nobody waited; one refresh in flight
    src.open.set()
    await until("the refresh done", lambda: value.version == 2)
    assert await value.get() == 2


async def test_a_failed_first_call_reaches_its_readers_and_the_next_read_retries():
    src = Source()
    src.fail = RuntimeError("daemon gone")
    value = Refreshed(60, src)
    with pytest.raises(RuntimeError, match="daemon gone"):
        await value.get()
    src.fail = None
    assert await value.get() == 2


async def test_a_failed_refresh_keeps_the_last_value_and_retries_after_the_ttl():
    src, clock = Source(), FakeClock()
    value = Refreshed(60, src, clock=clock.monotonic)
    assert await value.get() == 1
    src.fail = RuntimeError("daemon gone")
    clock.advance(60)
    assert await value.get() == 1  # stale, while the refresh fails in the background
    await until("the refresh tried", lambda: src.calls == 2)
    assert [await value.get() for _ in range(20)] == [1] * 20 and src.calls == 2  # no retry storm
    clock.advance(59)
    assert await value.get() == 1 and src.calls == 2  # not before the ttl
    src.fail = None
    clock.advance(1)
    assert await value.get() == 1  # starts call 3
    await until("the refresh done", lambda: value.version == 2)
    assert await value.get() == 3
