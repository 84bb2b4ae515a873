"""The shared-namespace holder's lock works on whichever event loop asks (provisioner methods may run on
different loops: a module-level asyncio.Lock belongs to the first loop that waited on it)."""

from __future__ import annotations

import asyncio
import types

from jupyter_ptcuda.containers.docker import netns


class HolderService:
    """Just what ensure_holder calls: inspect (slow enough that two callers contend), remove, engine.run."""

    def __init__(self) -> None:
        self.created = 0
        self.running: str | None = None
        self.engine = types.SimpleNamespace(run=self._run)

    async def inspect(self, name: str):
        await asyncio.sleep(0)  # a turn of the loop, as an engine call takes: the second caller waits on the lock
        return types.SimpleNamespace(id=self.running, running=True) if self.running else None

    async def remove(self, name: str) -> None:
        self.running = None

    async def _run(self, spec) -> str:
        self.created += 1
        self.running = f"holder-{self.created}"
        return self.running


def test_two_loops_each_make_or_find_the_holder_without_a_lock_error():
    svc = HolderService()

    async def two_at_once() -> list[str]:
        return list(await asyncio.gather(netns.ensure_holder(svc, "img"), netns.ensure_holder(svc, "img")))

    first = asyncio.run(two_at_once())
    svc.running = None  # the holder went away: the next loop makes a new one
    second = asyncio.run(two_at_once())
    assert first == ["holder-1", "holder-1"] and second == ["holder-2", "holder-2"]
    assert svc.created == 2
