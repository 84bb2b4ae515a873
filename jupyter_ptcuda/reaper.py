"""Reaping: remove kernel containers whose kernel no longer exists, from their labels alone.

A kernel container is an orphan when the server that launched it is gone (same host, its pid no longer
alive), or — asked by that server itself, with the kernel ids it still manages — when its kernel id is
unknown to it. Only containers labelled ``io.jupyter-ptcuda.kind=kernel`` are considered; batch jobs
(which outlive servers on purpose) and anything not ours are never touched.

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

from . import kernel_files
from .engine import Engine
from .spec import LABEL_KERNEL_ID, LABEL_KIND, LABEL_SERVER_ID, LABEL_SERVER_PID


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphan_reason(container: dict[str, Any], *, own_server_id: str | None = None,
                  known_kernels: Collection[str] | None = None, grace: float = 60.0) -> str | None:
    """Why this container is an orphan, or None. Pure apart from a pid liveness check."""
    labels = container.get("Labels") or {}
    kind = labels.get(LABEL_KIND)
    if kind not in ("kernel", "netns"):
        return None
    sid = labels.get(LABEL_SERVER_ID, "")
    host = sid.split(":", 1)[0]
    kernel_id = labels.get(LABEL_KERNEL_ID, "")
    if kind == "netns" and sid == own_server_id:
        return None  # this server's shared network namespace: removed when the server stops
    if own_server_id is not None and sid == own_server_id and known_kernels is not None:
        if kernel_id not in known_kernels and time.time() - container.get("Created", 0) > grace:
            return "its kernel is no longer managed by this server"
        return None
    if host == socket.gethostname():
        try:
            pid = int(labels.get(LABEL_SERVER_PID, ""))
        except ValueError:
            return "it carries no server pid"
        if not _pid_alive(pid):
            return f"the server that started it (pid {pid}) is gone"
    return None


async def reap_orphans(engine: Engine, *, dry_run: bool = False, own_server_id: str | None = None,
                       known_kernels: Collection[str] | None = None, grace: float = 60.0) -> list[dict[str, Any]]:
    """Remove orphaned kernel containers; returns what was (or would be) removed."""
    removed = []
    for c in await engine.containers():
        why = orphan_reason(c, own_server_id=own_server_id, known_kernels=known_kernels, grace=grace)
        if why is None:
            continue
        labels = c.get("Labels") or {}
        removed.append({"id": c["Id"], "kernel_id": labels.get(LABEL_KERNEL_ID), "server_id": labels.get(LABEL_SERVER_ID),
                        "why": why})
        if not dry_run:
            await engine.remove(c["Id"])
    return removed


async def reap_kernel_files(*, dry_run: bool = False, own_server_id: str | None = None,
                            known_kernels: Collection[str] | None = None, grace: float = 60.0) -> list[dict[str, Any]]:
    """Remove the host files of kernels that are gone (this uid's records); ``[{kernel_id, why}]``."""
    return await asyncio.to_thread(kernel_files.sweep, own_server_id=own_server_id, known_kernels=known_kernels,
                                   pid_alive=_pid_alive, dry_run=dry_run, grace=grace)
