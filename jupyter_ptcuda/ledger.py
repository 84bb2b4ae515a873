"""The GPU ledger: which kernel or job of ours holds which GPU, rebuilt from container labels.

A request for ``gpus: <count>`` is turned into that many device indexes that no other kernel or job of
ours holds, least loaded first (NVML utilisation, then memory used). Explicit device ids are checked
against holders. ``gpus: all`` is a request to *share* every GPU, so it never claims or conflicts.
In ``exclusive`` mode (default) a held GPU is not given to anyone else; ``shared`` mode only orders by
load. A request that cannot be met raises GpuUnavailable naming who holds what.

The truth is the ``io.jupyter-ptcuda.gpus`` label of running containers; assignments still being
started are kept in memory until their container exists (so two concurrent starts cannot race).

Callers: the provisioner (``_resolve_gpus``) and jobs, through :func:`active_ledger`, which the server
extension sets; ``holders()`` feeds ``GET gpus``/``GET kernels``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .engine import Engine
from .errors import GpuUnavailable
from .spec import LABEL_GPUS, LABEL_JOB_ID, LABEL_KERNEL_ID, LABEL_KIND, LABEL_NOTEBOOK, GpuRequest

_active: GpuLedger | None = None


def active_ledger() -> GpuLedger | None:
    """The ledger of the running server extension, or None (plain jupyter_client use)."""
    return _active


def set_active_ledger(ledger: GpuLedger | None) -> None:
    global _active
    _active = ledger


class GpuLedger:
    def __init__(self, engine: Engine, snapshot: Any, sharing: str = "exclusive", sampler: Any = None) -> None:
        """``snapshot``: a callable returning the sampler's snapshot (GPUs, load); ``sampler``: the
        sampler to start (and wait for, in a worker thread) before the first assignment."""
        self.engine = engine
        self.snapshot = snapshot
        self.sampler = sampler
        self.sharing = sharing
        self._pending: dict[str, tuple[str, ...]] = {}
        self._lock = asyncio.Lock()

    async def holders(self) -> dict[str, list[dict[str, str]]]:
        """GPU index → holders [{kind, id, container, notebook}] from running containers' labels."""
        out: dict[str, list[dict[str, str]]] = {}
        seen: set[str] = set()
        for c in await self.engine.containers(all=False):
            labels = c.get("Labels") or {}
            kind = labels.get(LABEL_KIND)
            if kind not in ("kernel", "job"):
                continue
            owner = labels.get(LABEL_JOB_ID) if kind == "job" else labels.get(LABEL_KERNEL_ID)
            seen.add(owner or "")
            for gpu in self._indexes(labels.get(LABEL_GPUS, "none")):
                out.setdefault(gpu, []).append({"kind": kind, "id": owner or "", "container": c["Id"][:12],
                                                "notebook": labels.get(LABEL_NOTEBOOK, "")})
        for owner, gpus in list(self._pending.items()):
            if owner in seen:
                continue
            for gpu in gpus:
                out.setdefault(gpu, []).append({"kind": "starting", "id": owner, "container": "", "notebook": ""})
        return out

    def _gpus(self) -> list[dict[str, Any]]:
        snap = self.snapshot() or {}
        return [g for g in snap.get("gpus", []) if g.get("state", "ok") == "ok"] if snap.get("state") == "ok" else []

    def _indexes(self, label: str) -> list[str]:
        """Label value → device indexes (UUIDs mapped through the snapshot; 'all'/'count:n' → none)."""
        if label in ("", "none", "all") or label.startswith("count:"):
            return []
        by_uuid = {g.get("uuid"): str(g.get("index")) for g in self._gpus()}
        return [by_uuid.get(x, x) for x in label.split(",")]

    async def assign(self, owner: str, request: GpuRequest) -> GpuRequest:
        """Turn a request into concrete devices for ``owner`` (a kernel or job id), or raise."""
        if request.mode in ("none", "all"):
            return request
        if self.sampler is not None and self.sampler.state == "starting":
            self.sampler.ensure_started()
            await asyncio.get_running_loop().run_in_executor(None, self.sampler.wait_ready, 5.0)
        async with self._lock:
            holders = await self.holders()
            taken = {gpu: hs for gpu, hs in holders.items() if any(h["id"] != owner for h in hs)}
            gpus = self._gpus()
            if request.mode == "ids":
                wanted = self._indexes(",".join(request.ids))
                busy = [g for g in wanted if g in taken]
                if busy and self.sharing == "exclusive":
                    raise GpuUnavailable(f"GPU {', '.join(busy)} requested, but {self._describe(taken, busy)}. "
                                         "Choose another device, a count, or ask an operator for sharing.")
                self._pending[owner] = tuple(wanted)
                return request
            if not gpus:  # no NVML view (no driver here): let the engine decide
                return request
            free = [g for g in gpus if str(g["index"]) not in taken or self.sharing == "shared"]
            free.sort(key=lambda g: (str(g["index"]) in taken, g.get("utilization_gpu") or 0,
                                     g.get("memory_used") or 0, g["index"]))
            if len(free) < request.count:
                raise GpuUnavailable(
                    f"{request.count} GPU(s) requested but only {len(free)} of {len(gpus)} are free: "
                    f"{self._describe(taken, sorted(taken))}. Stop one of those, or ask for fewer GPUs.")
            chosen = tuple(str(g["index"]) for g in free[: request.count])
            self._pending[owner] = chosen
            return GpuRequest("ids", ids=chosen)

    def release(self, owner: str) -> None:
        """Forget an assignment still in memory (the container label goes away with the container)."""
        self._pending.pop(owner, None)

    @staticmethod
    def _describe(taken: dict[str, list[dict[str, str]]], which: list[str]) -> str:
        parts = []
        for gpu in which:
            who = ", ".join(f"{h['kind']} {h['id'][:8]}" + (f" ({h['notebook']})" if h.get("notebook") else "")
                            for h in taken.get(gpu, []))
            parts.append(f"GPU {gpu} is held by {who}")
        return "; ".join(parts) or "all GPUs are held"
