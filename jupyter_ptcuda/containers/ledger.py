"""The GPU ledger: which kernel or job of ours holds which GPU, rebuilt from container labels.

A request for ``gpus: <count>`` is turned into that many device indexes that no other kernel or job of
ours holds, least loaded first (NVML utilisation, then memory used). Explicit device ids are checked
against holders. ``gpus: all`` is a request to *share* every GPU, so it never claims or conflicts.
In ``exclusive`` mode (default) a held GPU is not given to anyone else; ``shared`` mode only orders by
load. A request that cannot be met raises GpuUnavailable naming who holds what.

The truth is the ``io.jupyter-ptcuda.gpus`` label of running containers; assignments still being
started are kept in memory until their container exists (so two concurrent starts cannot race).

A health check asks for ``all`` to test every GPU it may use: for it (``free_all``) ``all`` means every
GPU nobody holds exclusively, so a check never runs its GEMM on a GPU a kernel or job holds; with
none free it is refused, naming the holders.

Callers: the allocation layer :class:`~.allocating.AllocatingService` (installed around the backend by the
server extension) for every kind that asks for GPUs, and the broker's operations; ``holders()`` feeds
``GET gpus``/``GET kernels``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, GpuUnavailable
from . import labels as L
from .gpus import GpuRequest, devices

if TYPE_CHECKING:
    from .types import ContainerState


class Listing(Protocol):
    """What the ledger needs of a backend: its running containers (their labels are the truth)."""

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> list[ContainerState]: ...

class WaitingLine(Protocol):
    """What the allocation layer asks of the GPU queue (:class:`~.dispatch.GpuQueue`, which uses the ledger)."""

    enabled: bool

    def check(self, owner: str, request: GpuRequest) -> None: ...

    async def acquire(self, claim: str, owner: str, request: GpuRequest, *, on_wait: Callable[[str], None] | None,
                      submitted: float | None = None, what: str = "") -> GpuRequest: ...

    def kick(self) -> None: ...


class GpuLedger:
    def __init__(self, service: Listing, snapshot: Any, sharing: str = "exclusive", sampler: Any = None) -> None:
        """``snapshot``: a callable returning the sampler's snapshot (GPUs, load); ``sampler``: the
        sampler to start (and wait for, in a worker thread) before the first assignment."""
        self.service = service
        self.snapshot = snapshot
        self.sampler = sampler
        self.sharing = sharing
        self._pending: dict[str, tuple[str, ...]] = {}
        #: Under the broker (many users): a refusal names the holder only when it is the asker's own.
        self.hide_others = False
        #: The GPU queue (:class:`~.dispatch.GpuQueue`) that requests willing to wait join; set by whoever owns
        #: the ledger (the server extension), read by the allocation layer. None: a held GPU is refused (409).
        self.queue: WaitingLine | None = None
        self._lock = asyncio.Lock()

    async def holders(self) -> dict[str, list[dict[str, str]]]:
        """GPU index → holders [{kind, id, container, notebook}] from running containers' labels."""
        out: dict[str, list[dict[str, str]]] = {}
        seen: set[str] = set()
        for c in await self.service.list(running=True):
            if c.tag.kind not in L.GPU_KINDS:
                continue
            seen.add(f"{c.tag.owner}/{c.tag.id}" if self.hide_others else c.tag.id)
            for gpu in self._indexes(c.tag.gpus):
                out.setdefault(gpu, []).append({"kind": c.tag.kind, "id": c.tag.id, "container": c.id[:12],
                                                "notebook": c.tag.notebook, "owner": c.tag.owner, "name": c.tag.name})
        for owner, gpus in list(self._pending.items()):
            if owner in seen:
                continue
            for gpu in gpus:
                out.setdefault(gpu, []).append({"kind": "starting", "id": owner, "container": "", "notebook": "", "owner": ""})
        return out

    def _claim(self, holder: dict[str, str]) -> str:
        """The claim a holder was assigned under: its id, or under the broker ``<user name>/<id>`` (ids are
        the users' own choice: two users' kernels may share one, and never each other's GPUs)."""
        if self.hide_others and holder["kind"] != "starting":
            return f"{holder['owner']}/{holder['id']}"
        return holder["id"]

    def gpu_count(self) -> int:
        """How many GPUs the sampler sees working (0 without an NVML view)."""
        return len(self._gpus())

    def indexes(self) -> list[str]:
        """The working GPUs' device indexes, in index order."""
        return sorted((str(g["index"]) for g in self._gpus()), key=lambda i: (len(i), i))

    def held_by(self, states: Iterable[ContainerState]) -> set[str]:
        """The device indexes these containers hold by their labels ('all': every GPU seen)."""
        gpus = self._gpus()
        held: set[str] = set()
        for s in states:
            if s.tag.gpus == "all":
                held.update(str(g["index"]) for g in gpus)
            elif s.tag.gpus != "none":
                held.update(devices(s.tag.gpus, gpus, all_devices=False))
        return held

    def canonical(self, request: GpuRequest) -> GpuRequest:
        """``request`` in canonical device indexes of the GPUs NVML sees (UUIDs mapped to indexes), or a 400
        naming what does not exist: a device id that is not one of them, or a count above how many there
        are. What the broker hands the engine is only ever this (never a spelling the runtime reads its own way)."""
        gpus = self._gpus()
        if request.mode == "count":
            if request.count > len(gpus):
                raise ConfigError(f"gpus: {request.count} GPU(s) asked for, but this host has {len(gpus)}: ask for at "
                                  f"most {len(gpus)}.")
            return request
        if request.mode != "ids":
            return request
        by_id = {str(g["index"]): str(g["index"]) for g in gpus}
        by_id.update({str(g["uuid"]): str(g["index"]) for g in gpus if g.get("uuid")})
        unknown = [i for i in request.ids if i not in by_id]
        if unknown:
            raise ConfigError(f"gpus: no GPU {', '.join(u[:40] for u in unknown[:4])} on this host: give device indexes "
                              f"({', '.join(sorted(by_id.values(), key=int)) or 'none'}) or their UUIDs (`nvidia-smi -L`).")
        ids = [by_id[i] for i in request.ids]
        if len(set(ids)) != len(ids):
            raise ConfigError("gpus: the same device is listed twice (an index and its UUID?): list each device once.")
        return GpuRequest("ids", ids=tuple(ids))

    def _gpus(self) -> list[dict[str, Any]]:
        snap = self.snapshot() or {}
        return [g for g in snap.get("gpus", []) if g.get("state", "ok") == "ok"] if snap.get("state") == "ok" else []

    def _indexes(self, label: str) -> list[str]:
        """Label value → device indexes held ('all' shares and 'count:n' is unresolved: none)."""
        return devices(label, self._gpus(), all_devices=False)

    async def assign(self, owner: str, request: GpuRequest, *, free_all: bool = False, viewer: str = "") -> GpuRequest:
        """Turn a request into concrete devices for ``owner`` (a kernel, job or check id), or raise.

        ``free_all``: ``all`` means every GPU not held by another (health checks). ``viewer``: the asking
        user's name (with :attr:`hide_others`, others' holders are "another user")."""
        if request.mode == "none" or (request.mode == "all" and not free_all):
            return request
        await self.ready()
        async with self._lock:
            holders = await self.holders()
            taken = {gpu: hs for gpu, hs in holders.items() if any(self._claim(h) != owner for h in hs)}
            gpus = self._gpus()
            if request.mode == "ids":
                wanted = self._indexes(",".join(request.ids))
                busy = [g for g in wanted if g in taken]
                if busy and self.sharing == "exclusive":
                    raise GpuUnavailable(f"GPU {', '.join(busy)} requested, but {self._describe(taken, busy, viewer)}. "
                                         "Choose another device, a count, or ask an operator for sharing.")
                self._pending[owner] = tuple(wanted)
                return request
            if not gpus:  # no NVML view (no driver here): let the engine decide
                return request
            if request.mode == "all":  # free_all
                if self.sharing == "shared":
                    return request
                free_ids = tuple(str(g["index"]) for g in gpus if str(g["index"]) not in taken)
                if not free_ids:
                    raise GpuUnavailable(f"no GPU is free for a health check: {self._describe(taken, sorted(taken), viewer)}. "
                                         "Run it when one is free, or check the kernel itself (health --kernel).")
                self._pending[owner] = free_ids
                return GpuRequest("ids", ids=free_ids)
            free = [g for g in gpus if str(g["index"]) not in taken or self.sharing == "shared"]
            free.sort(key=lambda g: (str(g["index"]) in taken, g.get("utilization_gpu") or 0,
                                     g.get("memory_used") or 0, g["index"]))
            if len(free) < request.count:
                raise GpuUnavailable(
                    f"{request.count} GPU(s) requested but only {len(free)} of {len(gpus)} are free: "
                    f"{self._describe(taken, sorted(taken), viewer)}. Stop one of those, or ask for fewer GPUs.")
            chosen = tuple(str(g["index"]) for g in free[: request.count])
            self._pending[owner] = chosen
            return GpuRequest("ids", ids=chosen)

    async def dispatch(self, choose: Callable[[list[str], dict[str, list[dict[str, str]]]], dict[str, tuple[str, ...]]]
                       ) -> None:
        """The GPU queue's turn, under the assignment lock (so no assignment races it): ``choose(gpus, holders)``
        gets the working GPUs' indexes, least loaded first, and who holds which (:meth:`holders`); what it
        returns (claim → device indexes) is held for those claims until their containers exist."""
        await self.ready()
        async with self._lock:
            gpus = sorted(self._gpus(), key=lambda g: (g.get("utilization_gpu") or 0, g.get("memory_used") or 0, g["index"]))
            granted = choose([str(g["index"]) for g in gpus], await self.holders())
            for claim, ids in granted.items():
                self._pending[claim] = ids

    async def ready(self) -> None:
        """Start the sampler (and wait for its first look, up to 5 s) before GPUs are counted or assigned."""
        if self.sampler is not None and self.sampler.state == "starting":
            self.sampler.ensure_started()
            await asyncio.get_running_loop().run_in_executor(None, self.sampler.wait_ready, 5.0)

    def release(self, owner: str) -> None:
        """Forget an assignment still in memory (the container label goes away with the container)."""
        self._pending.pop(owner, None)

    def _describe(self, taken: dict[str, list[dict[str, str]]], which: list[str], viewer: str = "") -> str:
        parts = []
        hide = self.hide_others
        for gpu in which:
            who = ", ".join("another user" if hide and h.get("owner") != viewer else
                            f"{h['kind']} {h['id'][:8]}" + (f" ({h['notebook']})" if h.get("notebook") else "")
                            for h in taken.get(gpu, []))
            parts.append(f"GPU {gpu} is held by {who}")
        return "; ".join(parts) or "all GPUs are held"
