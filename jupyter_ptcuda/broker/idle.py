"""Idle reclamation: a kernel that holds GPUs and has done nothing for ``c.PtcudaBroker.idle_gpu_timeout``
seconds is shut down, and its user is told.

Each ``idle_check_interval`` the broker measures every GPU-holding kernel (:class:`~jupyter_ptcuda.
containers.idle.IdleWatch`: the container's CPU time and its GPUs' utilisation, from the engine and the
broker's NVML sampler). Past the timeout it posts a notice for the kernel's Hub user (state
``requested``): that user's server reads its notices (op ``notices``), shuts the kernel down through its
own kernel manager (so JupyterLab shows the kernel as shut down, with no automatic restart) and shows
the notice's sentence in JupyterLab. A server that has not done so ``idle_grace`` seconds later (stopped,
or without the extension) gets its container removed by the broker (state ``enforced``); once the
container is gone either way the notice says ``done``.

Notices live in the broker's memory (the last ``KEEP`` per user): a broker restart forgets them, and the
idle clocks start again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..containers.idle import IdleKernel, IdleWatch
from ..errors import PtcudaError

if TYPE_CHECKING:
    from ..containers.types import ContainerState

log = logging.getLogger("jupyter_ptcuda.broker")
KEEP = 50


class Reclaimer:
    def __init__(self, remove: Callable[[ContainerState], Awaitable[None]], watch: IdleWatch, timeout: float,
                 grace: float, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        """``clock``: seconds for the grace (monotonic); ``wall``: epoch seconds the notices carry (tests give
        a fake clock's)."""
        self.clock, self.wall = clock, wall
        self.remove = remove  # how a container is removed (the broker's op remove: with its kernel folder)
        self.watch = watch
        self.timeout = timeout
        self.grace = grace
        self.notices: dict[str, deque[dict[str, Any]]] = {}
        self._asked: dict[str, tuple[float, dict[str, Any]]] = {}  # cid -> (monotonic when asked, notice)

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.step()
            except PtcudaError as exc:
                log.warning("broker: idle check skipped: %s", exc.message.splitlines()[0])
            await asyncio.sleep(interval)

    async def step(self) -> None:
        """One check: ask for the idle ones, enforce past the grace, mark the gone ones done."""
        kernels = await self.watch.check()
        now = self.clock()
        present = {k.state.id for k in kernels}
        for k in kernels:
            asked = self._asked.get(k.state.id)
            if asked is None and k.idle_s >= self.timeout:
                self._asked[k.state.id] = (now, self._post(k))
            elif asked is not None and now - asked[0] >= self.grace:
                await self._enforce(k, asked[1])
        for cid in set(self._asked) - present:
            notice = self._asked.pop(cid)[1]
            if notice["state"] == "requested":
                notice["state"] = "done"
            notice["updated"] = self.wall()

    def _post(self, k: IdleKernel) -> dict[str, Any]:
        tag = k.state.tag
        minutes = k.idle_s / 60
        idle = f"{minutes:.0f} min" if minutes >= 1 else f"{k.idle_s:.0f} s"
        where = f" ({tag.notebook})" if tag.notebook else ""
        notice = {
            "at": self.wall(), "updated": self.wall(), "kind": "idle_gpu_kernel", "state": "requested",
            "kernel_id": tag.id, "notebook": tag.notebook, "gpus": list(k.gpus), "idle_s": round(k.idle_s),
            "message": (f"Kernel {tag.id[:8]}{where} held GPU {', '.join(k.gpus)} without using it for {idle}, so it "
                        f"was shut down for others to use (the Hub operator's c.PtcudaBroker.idle_gpu_timeout = "
                        f"{self.timeout:.0f} s). Its variables are gone: start the kernel again to continue."),
        }
        self.notices.setdefault(tag.owner, deque(maxlen=KEEP)).append(notice)
        log.info("broker: kernel %s of %s idle for %.0f s holding GPU %s: asking its server to shut it down",
                 tag.id[:8], tag.owner, k.idle_s, ",".join(k.gpus))
        return notice

    async def _enforce(self, k: IdleKernel, notice: dict[str, Any]) -> None:
        if notice["state"] == "enforced":
            return
        log.warning("broker: kernel %s of %s still running %.0f s after the idle notice: removing its container",
                    k.state.tag.id[:8], k.state.tag.owner, self.grace)
        notice["state"], notice["updated"] = "enforced", self.wall()
        await self.remove(k.state)

    def since(self, user: str, since: float) -> list[dict[str, Any]]:
        """The user's notices posted or changed after ``since`` (epoch seconds)."""
        return [dict(n) for n in self.notices.get(user, ()) if n["updated"] > since]

