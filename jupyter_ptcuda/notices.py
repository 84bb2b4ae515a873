"""Notices: what happened to this server's kernels that the user should hear of in JupyterLab.

Two kinds reach ``GET jupyter-ptcuda/notices`` (the labextension's ``NoticesPoller`` shows each one as a
notification and updates it when its state changes):

- ``idle_gpu_kernel`` (from the JupyterHub broker): a kernel that held GPUs unused past the operator's
  timeout is shut down: ``requested`` → ``done`` | ``enforced``;
- ``kernel_pending`` (Kubernetes backend): a kernel pod waits for a node (no GPU free, a quota, a failed
  pull), with the scheduler's reason: ``waiting`` (again when the reason changes) → ``started`` |
  ``failed`` (deleted after ``c.KubeBackend.launch_timeout``);
- ``kernel_image`` (Docker): a kernel's image is missing and being pulled: ``waiting`` → ``started`` |
  ``failed`` (with how to build it);
- ``gpu_fallback``: a kernel that asked for GPUs started on the CPU (no NVIDIA runtime,
  ``gpu_fallback='cpu'``), with why and what to install: ``done``.

A notice is a JSON object keyed by ``(at, kernel_id)``; posting one with the same key replaces it and
moves its ``updated`` time on. The server extension owns the one :class:`Notices` of its process
(:func:`set_active_notices`); the provisioner posts to it (:func:`post`), a no-op outside a server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

KEEP = 50


class Notices:
    def __init__(self, keep: int = KEEP, clock: Callable[[], float] = time.time) -> None:
        self.keep = keep
        self.clock = clock
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def post(self, notice: dict[str, Any]) -> dict[str, Any]:
        """Add ``notice`` or replace the one with its ``(at, kernel_id)``; ``updated`` defaults to now (and
        never goes back for a replaced one, so a client polling ``since`` its last sees the change)."""
        with self._lock:
            key = (notice.get("at"), notice.get("kernel_id"))
            old = next((n for n in self._items if (n.get("at"), n.get("kernel_id")) == key), None)
            item = dict(notice)
            item.setdefault("updated", self.clock())
            if old is not None:
                item["updated"] = max(float(item["updated"]), float(old.get("updated") or 0) + 1e-6)
            self._items = [n for n in self._items if n is not old] + [item]
            del self._items[:-self.keep]
            return dict(item)

    def since(self, t: float = 0.0) -> list[dict[str, Any]]:
        """Notices posted or changed after ``t`` (epoch seconds), oldest first."""
        with self._lock:
            return [dict(n) for n in self._items if float(n.get("updated") or 0) > t]


_active: Notices | None = None


def set_active_notices(notices: Notices | None) -> None:
    global _active
    _active = notices


def post(notice: dict[str, Any]) -> dict[str, Any] | None:
    """Post to this process's server (None when no server extension runs here: a CLI, a bare KernelManager)."""
    return _active.post(notice) if _active is not None else None


class PendingKernel:
    """The ``kernel_pending`` notice of one kernel start: :meth:`waiting` while its pod waits (each new
    reason), then :meth:`started` or :meth:`failed` — both only if the user was told it waits."""

    def __init__(self, kernel_id: str, notebook: str | None, limit: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.kernel_id, self.notebook, self.limit, self.clock = kernel_id, notebook, limit, clock
        self.at: float | None = None

    def _what(self) -> str:
        # the notebook's name, not its path (an absolute one under Jupyter Server 2): a pop-up shows ~140 characters
        return f"The kernel for {os.path.basename(self.notebook)}" if self.notebook else f"Kernel {self.kernel_id[:8]}"

    def _post(self, state: str, message: str) -> None:
        post({"kind": "kernel_pending", "state": state, "message": message, "kernel_id": self.kernel_id,
              "notebook": self.notebook, "at": self.at})

    def waiting(self, reason: str) -> None:
        self.at = self.at or self.clock()
        said = reason.strip() + ("" if reason.strip().endswith(".") else ".")
        self._post("waiting", f"{self._what()} is waiting for a node: {said} It is given up after "
                              f"{self.limit:.0f} s (ask for fewer GPUs or less memory, or wait for a free node).")

    def started(self) -> None:
        if self.at is not None:
            self._post("started", f"{self._what()} started after waiting {self.clock() - self.at:.0f} s for a node.")

    def failed(self, message: str) -> None:
        if self.at is not None:
            self._post("failed", f"{self._what()} did not start: {message}")


class QueuedKernel(PendingKernel):
    """The same ``kernel_pending`` notice for a kernel that waits in the GPU queue (Docker: the allocation
    layer's queue; one mechanism with the Kubernetes pod's): its place and the holders while it waits, then
    "started after waiting 41 s" or why it gave up. Posted by the provisioner."""

    def waiting(self, reason: str) -> None:
        self.at = self.at or self.clock()
        self._post("waiting", f"{self._what()} is {reason.strip().rstrip('.')}. It is given up after "
                              f"{self.limit:.0f} s (shut it down to leave the line).")

    def started(self) -> None:
        if self.at is not None:
            self._post("started", f"{self._what()} started after waiting {self.clock() - self.at:.0f} s for a GPU.")
