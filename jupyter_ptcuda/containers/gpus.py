"""The GPU vocabulary: one way to parse, label, display and request GPUs, for every kind of container.

- :func:`parse_gpus`: a kernelspec option, CLI flag or REST field → :class:`GpuRequest` (or ConfigError).
- :meth:`GpuRequest.label` / :func:`from_label`: the ``io.jupyter-ptcuda.gpus`` label, written and read.
- :func:`devices`: a label → the device indexes a user sees (the REST API's ``gpus`` fields and the
  status bar use it; the ledger uses it with ``all_devices=False``: ``all`` shares, it claims nothing).
- :func:`device_requests` / :func:`from_device_requests`: Docker's ``DeviceRequests`` and back.
- :func:`describe`: a request in words ("2 GPU(s)", "GPU(s) 0, 1").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError

_UUID_RE = re.compile(r"^(GPU|MIG)-[0-9a-fA-F-]+$")


@dataclasses.dataclass(frozen=True)
class GpuRequest:
    """``gpus`` option, normalised. ``mode`` is none | all | count | ids."""

    mode: str = "none"
    count: int = 0
    ids: tuple[str, ...] = ()

    def label(self) -> str:
        if self.mode == "count":
            return f"count:{self.count}"
        if self.mode == "ids":
            return ",".join(self.ids)
        return self.mode

    @property
    def wanted(self) -> bool:
        return self.mode != "none"

    @property
    def size(self) -> int:
        """How many devices a count or id list asks for (0 for none/all)."""
        return self.count if self.mode == "count" else len(self.ids)


NONE = GpuRequest()
ALL = GpuRequest("all")


def parse_gpus(value: Any) -> GpuRequest:
    """Parse ``gpus``: ``"all"`` | a count (int or digit string) | device ids/UUIDs | ``"none"``.

    Lists (``["0", "1"]``) and comma strings (``"0,1"``, ``"GPU-…"``) are device ids. A bare integer
    or ``"2"`` is a *count*; write ``["2"]`` or ``"device=2"`` for the device with index 2.
    """
    if isinstance(value, GpuRequest):
        return value
    if value is None or value is False:
        return NONE
    if isinstance(value, bool):  # True
        return ALL
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"gpus={value}: a GPU count cannot be negative; use 0 or 'none' for no GPU.")
        return GpuRequest("count", count=value) if value else NONE
    if isinstance(value, str):
        text = value.strip()
        low = text.lower()
        if low in ("", "none", "0", "void"):
            return NONE
        if low == "all":
            return ALL
        if text.isdigit():
            return GpuRequest("count", count=int(text))
        if low.startswith("device="):
            text = text[len("device=") :]
        return parse_gpus([p for p in text.split(",")])
    if isinstance(value, Iterable):
        ids = []
        for item in value:
            s = str(item).strip()
            if not s:
                continue
            if not (s.isdigit() or _UUID_RE.match(s)):
                raise ConfigError(
                    f"gpus: {s!r} is not a GPU index or UUID. Use 'all', a count such as 2, "
                    "device indexes such as ['0', '1'], or UUIDs such as ['GPU-5a3f…'] "
                    "(see `nvidia-smi -L`)."
                )
            ids.append(s)
        if not ids:
            return NONE
        if len(set(ids)) != len(ids):
            raise ConfigError(f"gpus: device {ids} is listed twice; list each device once.")
        return GpuRequest("ids", ids=tuple(ids))
    raise ConfigError(
        f"gpus={value!r} ({type(value).__name__}) is not understood: use 'all', 'none', a count, "
        "or a list of device indexes/UUIDs."
    )


def from_label(label: str | None) -> GpuRequest:
    """The request a ``gpus`` label was written from (:meth:`GpuRequest.label`): ``none``, ``all``,
    ``count:N`` or device ids (``"0"`` is device 0 here, not a count); unreadable reads as no GPU."""
    text = (label or "").strip()
    if text in ("", "none"):
        return NONE
    if text == "all":
        return ALL
    if text.startswith("count:"):
        return GpuRequest("count", count=int(text[6:])) if text[6:].isdigit() else NONE
    ids = tuple(p.strip() for p in text.split(",") if p.strip())
    if not all(i.isdigit() or _UUID_RE.match(i) for i in ids):
        return NONE
    return GpuRequest("ids", ids=ids)


def devices(label: str | None, gpus: Sequence[Mapping[str, Any]] = (), *, all_devices: bool = True) -> list[str]:
    """Device indexes a label names, UUIDs mapped to indexes through ``gpus`` (the sampler's snapshot).

    ``all`` → every index in ``gpus`` when ``all_devices`` (what a user sees: a kernel with every GPU),
    else none (the ledger: ``all`` shares every GPU and claims none). ``count:n`` (not yet resolved by
    the engine) → none.
    """
    req = from_label(label)
    if req.mode == "all":
        return [str(g.get("index")) for g in gpus] if all_devices else []
    if req.mode != "ids":
        return []
    by_uuid = {str(g.get("uuid")): str(g.get("index")) for g in gpus if g.get("uuid")}
    return [by_uuid.get(x, x) for x in req.ids]


def describe(gpus: GpuRequest) -> str:
    if gpus.mode == "count":
        return f"{gpus.count} GPU(s)"
    if gpus.mode == "ids":
        return f"GPU(s) {', '.join(gpus.ids)}"
    return "all GPUs" if gpus.mode == "all" else "no GPU"


def device_requests(gpus: GpuRequest) -> list[dict[str, Any]]:
    """The ``DeviceRequests`` Docker's ``--gpus`` flag sends (driver "" lets the engine pick nvidia)."""
    if gpus.mode == "none":
        return []
    req: dict[str, Any] = {"Driver": "", "Capabilities": [["gpu"]], "Options": {}}
    if gpus.mode == "all":
        req.update(Count=-1, DeviceIDs=None)
    elif gpus.mode == "count":
        req.update(Count=gpus.count, DeviceIDs=None)
    else:
        req.update(Count=0, DeviceIDs=list(gpus.ids))
    return [req]


def from_device_requests(requests: list[dict[str, Any]] | None) -> GpuRequest:
    """The inverse of :func:`device_requests` (``docker inspect``'s ``HostConfig.DeviceRequests``)."""
    for req in requests or []:
        caps = [c for group in req.get("Capabilities") or [] for c in group]
        if "gpu" not in caps:
            continue
        if req.get("DeviceIDs"):
            return GpuRequest("ids", ids=tuple(str(d) for d in req["DeviceIDs"]))
        count = int(req.get("Count") or 0)
        if count < 0:
            return ALL
        if count > 0:
            return GpuRequest("count", count=count)
    return NONE
