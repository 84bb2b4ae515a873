"""Which kernels hold GPUs and do nothing with them: the measure behind idle reclamation.

A kernel container that holds GPUs (devices the ledger gave it, not ``all``) is *active* at a check when
its processes used more than ``cpu_threshold`` of a core since the previous check (a cell running:
Python, a DataLoader, a CUDA launch loop) or one of its GPUs is busier than ``util_threshold`` percent
(NVML, from the sampler's snapshot). Both are measured here, from the engine and NVML, never taken from
the user's server: a user cannot make someone else's GPU look busy, only keep their own kernel alive
by using it. A container first seen counts as active then (a broker restart never reclaims early).

Callers: the broker's reclaimer (:mod:`jupyter_ptcuda.broker.idle`) each ``idle_check_interval``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from . import labels as L
from .base import ContainerService
from .gpus import devices
from .types import ContainerState


@dataclasses.dataclass(frozen=True)
class IdleKernel:
    """A GPU-holding kernel and how long it has been idle."""

    state: ContainerState
    gpus: tuple[str, ...]
    idle_s: float


class IdleWatch:
    def __init__(self, service: ContainerService, snapshot: Callable[[], dict[str, Any]], *,
                 cpu_threshold: float = 0.02, util_threshold: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.snapshot = snapshot
        self.cpu_threshold = cpu_threshold
        self.util_threshold = util_threshold
        self.clock = clock
        self._seen: dict[str, tuple[float, float, float]] = {}  # cid -> (cpu s, at, last active)

    async def check(self) -> list[IdleKernel]:
        """Every running kernel that holds GPUs, with its idle time (0 when active at this check)."""
        snap = self.snapshot() or {}
        gpus = [g for g in snap.get("gpus", []) if g.get("state") == "ok"] if snap.get("state") == "ok" else []
        util = {str(g["index"]): g.get("utilization_gpu") or 0 for g in gpus}
        out = []
        running = set()
        for c in await self.service.list(L.KERNEL, running=True):
            held = tuple(devices(c.tag.gpus, gpus, all_devices=False))
            if not held:
                continue
            running.add(c.id)
            cpu = await self.service.cpu_seconds(c.id)
            if cpu is None:
                continue
            now = self.clock()
            seen = self._seen.get(c.id)
            if seen is None:
                last_active = now
            else:
                before, at, last_active = seen
                used = (cpu - before) / max(now - at, 1e-3)
                if used > self.cpu_threshold or any(util.get(g, 0) > self.util_threshold for g in held):
                    last_active = now
            self._seen[c.id] = (cpu, now, last_active)
            out.append(IdleKernel(c, held, now - last_active))
        for gone in set(self._seen) - running:
            del self._seen[gone]
        return out
