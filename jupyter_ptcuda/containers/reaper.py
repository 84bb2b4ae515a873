"""Reaping: remove containers of ours whose owner no longer exists, from their labels alone.

A kernel, health-check, image-probe or netns-holder container is an orphan when the server that
launched it is gone (same host, its pid no longer alive); a kernel container also — asked by that server
itself, with the kernel ids it still manages — when its kernel id is unknown to it. A model server
(``serve``, which outlives the command that started it, like a job) is an orphan once its scoring server has
exited. Batch jobs (which outlive servers on purpose) and anything not ours are never touched.

:func:`reap_kernel_files` does the same for what a kernel leaves on the host (connection file, ipc
folder: :mod:`~jupyter_ptcuda.kernel_files`), so no key outlives its kernel, however it went.

Callers: ``jupyter ptcuda reap`` (CLI), the server extension at start and periodically.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Collection
from typing import Any

from .. import kernel_files
from ..procs import pid_alive
from . import labels as L
from .base import ContainerService
from .types import ContainerState

#: Kinds that belong to the server that started them (jobs do not).
SERVER_KINDS = (L.KERNEL, L.HEALTH, L.PROBE, L.NETNS)


def orphan_reason(container: ContainerState, *, own_server_id: str | None = None,
                  known_kernels: Collection[str] | None = None, grace: float = 60.0) -> str | None:
    """Why this container is an orphan, or None. Pure apart from a pid liveness check."""
    tag = container.tag
    if tag.kind == L.SERVE:
        if not container.running and container.status != "created" and time.time() - container.created > grace:
            return f"its model server has exited ({container.status})"
        return None
    if tag.kind not in SERVER_KINDS:
        return None
    if tag.kind != L.KERNEL and tag.server_id == own_server_id:
        return None  # this server's own check, probe or namespace holder: it removes them itself
    if own_server_id is not None and tag.server_id == own_server_id and known_kernels is not None:
        if tag.id not in known_kernels and time.time() - container.created > grace:
            return "its kernel is no longer managed by this server"
        return None
    if tag.host == socket.gethostname():
        if tag.server_pid is None:
            return "it carries no server pid"
        if not pid_alive(tag.server_pid):
            return f"the server that started it (pid {tag.server_pid}) is gone"
    return None


async def reap_orphans(service: ContainerService, *, dry_run: bool = False, own_server_id: str | None = None,
                       known_kernels: Collection[str] | None = None, grace: float = 60.0) -> list[dict[str, Any]]:
    """Remove orphaned containers; returns what was (or would be) removed."""
    removed = []
    for c in await service.list():
        why = orphan_reason(c, own_server_id=own_server_id, known_kernels=known_kernels, grace=grace)
        if why is None:
            continue
        removed.append({"id": c.id, "kind": c.tag.kind, "kernel_id": c.tag.id if c.tag.kind == L.KERNEL else None,
                        "server_id": c.tag.server_id, "why": why})
        if not dry_run:
            await service.remove(c.id)
            if c.tag.kind == L.SERVE and c.tag.kernel_dir:
                await asyncio.to_thread(_remove_serve_dir, c.tag.kernel_dir, c.tag.id)
    # what the backend finds itself (Kubernetes: servers are pods, kube/backend.py; Docker: nothing)
    removed += await service.reap(own_server_id=own_server_id, dry_run=dry_run)
    return removed


def _remove_serve_dir(path: str, serve_id: str) -> None:
    """A model server's socket folder, when it is this server's own (``<private>/<serve id>``: under the broker
    the broker removed it with the container)."""
    import shutil

    try:
        mine = os.path.join(kernel_files.private_base(), serve_id)
    except Exception:  # noqa: BLE001 - no private folder here: nothing of ours to remove
        return
    if serve_id and path == mine and os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)


async def reap_kernel_files(*, dry_run: bool = False, own_server_id: str | None = None,
                            known_kernels: Collection[str] | None = None, grace: float = 60.0) -> list[dict[str, Any]]:
    """Remove the host files of kernels that are gone (this uid's records); ``[{kernel_id, why}]``."""
    return await asyncio.to_thread(kernel_files.sweep, own_server_id=own_server_id, known_kernels=known_kernels,
                                   pid_alive=pid_alive, dry_run=dry_run, grace=grace)
