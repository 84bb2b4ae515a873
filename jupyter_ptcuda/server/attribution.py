"""Map NVML process ids to our containers (and so to kernels and jobs).

NVML reports host pids. A process in a Docker container has the container's 64-hex id in its
``/proc/<pid>/cgroup`` path (cgroup v1 and v2, cgroupfs and systemd drivers). Where the host hides
other users' processes (hidepid) the mapping is simply absent.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

_CID = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?$")


def container_of_pid(pid: int) -> str | None:
    """The Docker container id a host pid runs in, or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                m = _CID.search(line.strip())
                if m:
                    return m.group(1)
    except OSError:
        return None
    return None


async def attribute_processes(snapshot: dict[str, Any]) -> None:
    """Add ``container`` and the holder (``kind``, ``id``, ``notebook``) to each GPU process, in place."""
    holders = {h["container"]: h for g in snapshot.get("gpus", []) for h in g.get("holders", []) if h.get("container")}
    pids = {p["pid"] for g in snapshot.get("gpus", []) for p in (g.get("processes") or [])}
    if not pids:
        return
    found = await asyncio.get_running_loop().run_in_executor(None, lambda: {p: container_of_pid(p) for p in pids})
    for g in snapshot.get("gpus", []):
        for p in g.get("processes") or []:
            cid = found.get(p["pid"])
            p["container"] = cid[:12] if cid else None
            h = holders.get(cid[:12]) if cid else None
            if h:
                p.update(kind=h["kind"], owner=h["id"], notebook=h.get("notebook"))
