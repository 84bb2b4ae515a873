"""The GPU queue: requests that may wait for a GPU join it and start by themselves when GPUs free up.

Part of the allocation layer (:class:`~.allocating.AllocatingService`): a launch that asks for GPUs and is
willing to wait (it passes ``on_pending``: jobs, kernels) calls :meth:`GpuQueue.acquire`, which returns the
devices once :func:`~.gpuqueue.decide` grants them, telling the caller its place and why it waits on the
way (``on_pending(reason)``, each time that changes). A request that can never be met is refused at once
(ConfigError, 400). Callers that cannot wait (health checks, probes) keep the ledger's immediate answer
(GpuUnavailable, 409).

When does it look again? When the layer removes a container or drops a claim (:meth:`kick`), and every
``poll_interval`` while someone waits (a container removed by someone else, a job's container that ended).
Each look reads the holders from container labels (the ledger), so what it decides is never based on a
second source of truth. Owned by the server extension (one per process), which sets ``ledger.queue``.

The waiting requests themselves are in memory; what makes them durable is the caller's own record (a job's
row in the job store, re-queued by the job manager after a restart with its original time: the
``io.jupyter-ptcuda.queued-at`` label of the spec).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

from ..errors import ConfigError
from .gpuqueue import Holder, Rules, Usage, Waiting, decide, refusal
from .gpus import GpuRequest

if TYPE_CHECKING:
    from .ledger import GpuLedger

#: Upper bounds (seconds) of the wait-time histogram's buckets (Prometheus ``le``).
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


@dataclasses.dataclass
class _Entry:
    waiting: Waiting
    future: asyncio.Future[tuple[str, ...]]
    on_wait: Callable[[str], None] | None
    what: str = ""
    reason: str = ""
    ahead: int = 0


class WaitHistogram:
    """Seconds requests waited before their GPUs were granted (Prometheus histogram: cumulative buckets)."""

    def __init__(self, buckets: tuple[float, ...] = WAIT_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[i] += 1


def holder_words(h: dict[str, str]) -> str:
    """A ledger holder in words: "job train-lr0.1", "kernel Untitled.ipynb", "a health check"."""
    kind = h.get("kind", "")
    if kind == "starting":
        return "a request starting now"
    if kind == "health":
        return "a health check"
    name = h.get("name") or os.path.basename(h.get("notebook") or "") or h.get("id", "")[:8]
    return f"{kind} {name}".strip()


class GpuQueue(LoggingConfigurable):
    """Requests waiting for GPUs, in the allocation layer (see the module docstring)."""

    enabled = Bool(True, config=True, help="""Jobs and kernels that ask for GPUs which are held wait in line and
        start by themselves when GPUs free up (default True). False: they are refused at once (409), as before.
        Example: c.GpuQueue.enabled = False""")
    reserve_after = Float(600.0, config=True, help="""Seconds a request may wait before the GPUs that free up are
        reserved for it (no request behind it takes them), so a request for many GPUs on a busy host does
        start (default 600). Before that, smaller requests pass it (backfill).
        Example: c.GpuQueue.reserve_after = 1800""")
    half_life = Float(3600.0, config=True, help="""Fair share across users: the user with the least recent GPU
        time goes first; GPU time used this many seconds ago counts half (default 3600).
        Example: c.GpuQueue.half_life = 7200""")
    poll_interval = Float(2.0, config=True, help="""Seconds between looks at who holds the GPUs while requests
        wait (default 2); the queue also looks at once whenever one of its own containers is removed.""")

    def __init__(self, ledger: GpuLedger, clock: Callable[[], float] = time.time, max_gpus: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger
        self.clock = clock
        self.max_gpus = max_gpus
        self.usage = Usage(self.half_life)
        self.waited = WaitHistogram()
        self._entries: dict[str, _Entry] = {}
        self._seq = itertools.count()
        self._pass_lock = asyncio.Lock()
        self._kicked: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self._closed = False
        self._again = False

    @property
    def rules(self) -> Rules:
        return Rules(reserve_after=self.reserve_after, half_life=self.half_life, max_gpus=self.max_gpus,
                     hide_others=self.ledger.hide_others)

    def __len__(self) -> int:
        return len(self._entries)

    def view(self) -> dict[str, dict[str, Any]]:
        """claim → {owner, what, place (1 = next), reason, waited_s, gpus} of every waiting request (``GET jobs``,
        ``GET queue``)."""
        now = self.clock()
        return {claim: {"owner": e.waiting.owner, "what": e.what, "place": e.ahead + 1, "reason": e.reason,
                        "waited_s": round(max(0.0, now - e.waiting.submitted), 1),
                        "gpus": ",".join(e.waiting.ids) if e.waiting.ids else f"count:{e.waiting.count}"}
                for claim, e in self._entries.items() if not e.future.done()}

    def check(self, owner: str, request: GpuRequest) -> None:
        """ConfigError (400) now for a request that can never be met (a job's submit, before it is recorded).
        Nothing is said while the GPUs are not known yet (the sampler's first look): :meth:`acquire` says it."""
        if not self.enabled or request.mode not in ("count", "ids"):
            return
        if not self.ledger.gpu_count():
            if self.ledger.sampler is not None:
                self.ledger.sampler.ensure_started()  # returns at once; acquire waits for its first look
            return
        request = self.ledger.canonical(request)
        why = refusal(Waiting(claim="", owner=owner, count=request.count if request.mode == "count" else 0,
                              ids=request.ids if request.mode == "ids" else ()), self.ledger.indexes(), self.rules)
        if why:
            raise ConfigError(f"gpus: {why}")

    async def acquire(self, claim: str, owner: str, request: GpuRequest, *, on_wait: Callable[[str], None] | None,
                      submitted: float | None = None, what: str = "") -> GpuRequest:
        """The devices for ``claim`` (held for it until its container exists), once the queue grants them.

        Refused at once (ConfigError) when the request can never be met. While it waits, ``on_wait(reason)``
        hears each new reason; ``what`` names it for its user ("job train-lr0.1"). Cancelling the caller leaves
        the line (and gives back a grant not yet used)."""
        await self.ledger.ready()
        if request.mode not in ("count", "ids") or self.ledger.sharing == "shared" or not self.ledger.gpu_count():
            return await self.ledger.assign(claim, request, viewer=owner)
        request = self.ledger.canonical(request)
        gpus = self.ledger.indexes()
        waiting = Waiting(claim=claim, owner=owner, count=request.count if request.mode == "count" else 0,
                          ids=request.ids if request.mode == "ids" else (),
                          submitted=self.clock() if submitted is None else submitted, seq=next(self._seq))
        why = refusal(waiting, gpus, self.rules)
        if why:
            raise ConfigError(f"gpus: {why}")
        if claim in self._entries:
            raise ConfigError(f"{claim} is already waiting for GPUs.")
        entry = _Entry(waiting, asyncio.get_running_loop().create_future(), on_wait, what)
        self._entries[claim] = entry
        try:
            await self._pass()
            if not entry.future.done():
                self._ensure_poller()
            ids = await entry.future
        except BaseException:
            self._entries.pop(claim, None)
            if entry.future.done() and not entry.future.cancelled():
                self.ledger.release(claim)  # granted, but nobody will use it
                self.kick()
            else:
                entry.future.cancel()
                self.kick()  # the others move up
            raise
        self._entries.pop(claim, None)
        return GpuRequest("ids", ids=ids)

    def kick(self) -> None:
        """Look again soon (GPUs may have freed up). Safe to call from any code on the event loop."""
        if not self._entries or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._kicked is None or self._kicked.done():
            self._kicked = loop.create_task(self._kicked_passes())
        else:
            self._again = True  # a look is under way and may have read the holders already: one more after it

    async def _kicked_passes(self) -> None:
        self._again = True
        while self._again and self._entries:
            self._again = False
            await self._pass_quietly()

    async def _pass_quietly(self) -> None:
        try:
            await self._pass()
        except Exception:  # noqa: BLE001 - a background look: the next one retries
            self.log.warning("jupyter-ptcuda: the GPU queue could not look at the GPUs", exc_info=True)

    def _ensure_poller(self) -> None:
        if (self._poller is None or self._poller.done()) and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self._entries:
            await asyncio.sleep(self.poll_interval)
            await self._pass_quietly()

    async def _pass(self) -> None:
        """One look: who holds what, the decision, grants handed to their waiters, reasons to the others."""
        async with self._pass_lock:
            live = {c: e for c, e in self._entries.items() if not e.future.done()}
            if not live:
                return
            told: list[tuple[_Entry, str]] = []

            def choose(gpus: list[str], holders: dict[str, list[dict[str, str]]]) -> dict[str, tuple[str, ...]]:
                now = self.clock()
                held = {gpu: [Holder(h.get("owner", ""), holder_words(h)) for h in hs] for gpu, hs in holders.items() if hs}
                by_owner: dict[str, int] = {}
                for hs in held.values():
                    for o in {h.owner for h in hs}:
                        by_owner[o] = by_owner.get(o, 0) + 1
                self.usage.advance(now, by_owner)
                decision = decide([e.waiting for e in live.values()], gpus, held, self.usage.snapshot(), now, self.rules)
                for w in decision.waits:
                    e = live[w.claim]
                    e.ahead = w.ahead
                    if w.reason != e.reason:
                        e.reason = w.reason
                        told.append((e, w.reason))
                granted = {}
                for s in decision.starts:
                    e = live[s.claim]
                    e.future.set_result(s.ids)
                    self.waited.observe(max(0.0, now - e.waiting.submitted))
                    granted[s.claim] = s.ids
                return granted

            await self.ledger.dispatch(choose)
        for entry, reason in told:
            if entry.on_wait is not None and not entry.future.done():
                try:
                    entry.on_wait(reason)
                except Exception:  # noqa: BLE001 - a caller's callback must not stop the queue
                    self.log.warning("jupyter-ptcuda: telling %s its place failed", entry.waiting.claim, exc_info=True)

    async def close(self) -> None:
        """The server stops: stop looking (waiters are cancelled by their own callers)."""
        self._closed = True
        for task in (self._kicked, self._poller):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._kicked, self._poller) if t is not None), return_exceptions=True)
