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
import weakref
from typing import Any, Protocol

from ...errors import Conflict
from .. import labels as L
from ..build import Policy, Request, build
from ..identity import server_id, this_server
from ..spec import ContainerSpec
from ..types import ContainerState


class HolderBackend(Protocol):
    """What the holder needs of the (Docker) backend that launches the kernels joining it."""

    @property
    def engine(self) -> Any: ...

    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None: ...

    async def remove(self, cid: str) -> None: ...

#: One lock per event loop: an asyncio.Lock belongs to the first loop that waits on it, and provisioner
#: methods may run on different loops. (Processes, and loops of one process, race on the engine: Conflict.)
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _lock() -> asyncio.Lock:
    """This event loop's lock around making the holder."""
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def holder_name() -> str:
    return "jupyter-ptcuda-netns-" + hashlib.sha1(server_id().encode()).hexdigest()[:12]


def holder_spec(image: str) -> ContainerSpec:
    """The holder's spec: the kernel's image (already present), nobody's uid, nothing mounted."""
    return build(Request(kind=L.NETNS, image=image, command=("sleep", "infinity"), workdir="/", mount_workdir=False,
                         shm_size=None, pids_limit=16, name=holder_name()),
                 Policy(images=(image,)), this_server())


async def ensure_holder(service: HolderBackend, image: str) -> str:
    """The id of this server's running holder container, created from ``image`` if needed."""
    async with _lock():
        name = holder_name()
        found = await service.inspect(name)
        if found and found.running:
            return found.id
        if found:
            await service.remove(name)
        spec = holder_spec(image)
        try:
            return await service.engine.run(spec)
        except Conflict:  # another process of this server made it first
            found = await service.inspect(name)
            return found.id if found else await service.engine.run(spec)


async def remove_holder(service: HolderBackend) -> None:
    await service.remove(holder_name())
