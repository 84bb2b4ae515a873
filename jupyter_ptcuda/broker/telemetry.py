"""The broker's one GPU sampler, served to every user's server (op ``gpus``).

Under JupyterHub only the broker reads NVML: each user's server polls it (a
:class:`~jupyter_ptcuda.containers.remote.gpus.BrokerSampler`, once per sample interval, only while its
panel is open) for the snapshot and the history since its last sample, so fifty users do not run fifty
samplers. Holders and GPU processes are joined to the snapshot once per sample; what one user gets is
that, with every holder of another user's shown as ``{"kind": "other", "owner": "another user"}`` (no
id, container or notebook) and the other users' GPU processes left out.
"""

from __future__ import annotations

from typing import Any

from ..containers.ledger import GpuLedger
from ..errors import PtcudaError
from ..nvml.sampler import GpuSampler
from ..refreshed import Refreshed

OTHER = {"kind": "other", "id": "", "container": "", "notebook": "", "owner": "another user"}


class Telemetry:
    def __init__(self, sampler: GpuSampler, ledger: GpuLedger) -> None:
        self.sampler = sampler
        self.ledger = ledger
        self._holders = Refreshed(1.0, self._read_holders)
        self._joined: tuple[Any, dict[str, Any]] | None = None

    async def _read_holders(self) -> dict[str, list[dict[str, str]]]:
        try:
            return await self.ledger.holders()
        except PtcudaError:
            return {}

    async def _snapshot(self) -> dict[str, Any]:
        """The sampler's snapshot with every holder and process attributed (once per sample)."""
        from ..server.attribution import attribute_processes

        holders = await self._holders.get()
        key = (self.sampler.version, self._holders.version)
        if self._joined is None or self._joined[0] != key:
            snap = self.sampler.snapshot()
            for gpu in snap.get("gpus", []):
                gpu["holders"] = holders.get(str(gpu.get("index")), [])
            if snap.get("gpus"):
                await attribute_processes(snap)
            self._joined = (key, snap)
        return self._joined[1]

    async def view(self, user: str, since: float | None, max_points: int | None) -> dict[str, Any]:
        """``{"snapshot", "history"}`` as ``GET jupyter-ptcuda/gpus`` has them, for Hub user ``user``."""
        self.sampler.ensure_started()
        snap = await self._snapshot()
        gpus = []
        for gpu in snap.get("gpus", []):
            mine = [dict(h) for h in gpu.get("holders", []) if _mine(h, user)]
            for h in mine:
                if h["kind"] == "starting":
                    h["id"] = h["id"].split("/", 1)[-1]
            others = len(gpu.get("holders", [])) - len(mine)
            own_containers = {h.get("container") for h in mine if h.get("container")}
            procs = gpu.get("processes")
            if procs is not None:
                procs = [dict(p) for p in procs if not p.get("container") or p.get("container") in own_containers]
            gpus.append({**gpu, "holders": mine + [dict(OTHER)] * min(others, 1), "processes": procs})
        return {"snapshot": {**snap, "gpus": gpus},
                "history": self.sampler.history(since=since, max_points=max_points)}


def _mine(holder: dict[str, str], user: str) -> bool:
    if holder.get("kind") == "starting":  # a claim being started: '<user>/<id>' under the broker
        return str(holder.get("id", "")).startswith(f"{user}/")
    return holder.get("owner") == user
