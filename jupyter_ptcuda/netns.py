"""``network_mode = "shared"``: the kernels of one server join one network namespace.

Docker spends most of a container's start creating its network namespace (here: 361 ms per
create+start with ``bridge``, 134 ms joining an existing namespace). In shared mode a small holder
container per server owns a bridge namespace (outbound access, nothing published) and every kernel
joins it with ``--network container:<holder>``; kernels then talk to the server over ipc sockets, so
nothing listens on any network. The holder is labelled ``kind=netns`` with the server's id and pid:
the server removes it when it stops and the reaper removes it when its server is gone.

Callers: the provisioner (``ensure_holder`` before a kernel starts), the extension (``remove_holder``).
"""

from __future__ import annotations

import asyncio
import hashlib

from .engine import Engine
from .errors import Conflict
from .spec import LABEL_KIND, LABEL_SERVER_ID, LABEL_SERVER_PID, ContainerSpec

_lock = asyncio.Lock()


def holder_name() -> str:
    from .provisioner import server_id

    return "jupyter-ptcuda-netns-" + hashlib.sha1(server_id().encode()).hexdigest()[:12]


async def ensure_holder(engine: Engine, image: str) -> str:
    """The id of this server's running holder container, created from ``image`` if needed."""
    import os

    from .provisioner import server_id

    async with _lock:
        name = holder_name()
        info = await engine.inspect(name)
        if info and info["State"].get("Running"):
            return str(info["Id"])
        if info:
            await engine.remove(name)
        spec = ContainerSpec(
            image=image, command=("sleep", "infinity"), user="65534:65534", workdir="/", name=name,
            labels={LABEL_KIND: "netns", LABEL_SERVER_ID: server_id(), LABEL_SERVER_PID: str(os.getpid())},
            shm_size=None, pids_limit=16,
        )
        try:
            return await engine.run(spec)
        except Conflict:  # another process of this server made it first
            info = await engine.inspect(name)
            return str(info["Id"]) if info else await engine.run(spec)


async def remove_holder(engine: Engine) -> None:
    await engine.remove(holder_name())
