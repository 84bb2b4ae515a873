"""GPU allocation as a layer around any backend: :class:`AllocatingService` wraps a
:class:`~.base.ContainerService` and assigns devices from a :class:`~.ledger.GpuLedger` before the inner
backend launches, the way middleware wraps an app. Installed once by whoever owns the ledger (the server
extension: :func:`.factory.install_ledger`; the broker assigns in its own operations), never looked up
from inside a backend.

A claim is kept only while its container starts: from then on the container's ``gpus`` label is the
claim, so it lives exactly as long as the container runs (no release can be forgotten).

A launch that may wait (it passes ``on_pending``: jobs, kernels) and asks for GPUs by count or device joins
the ledger's GPU queue (:class:`~.dispatch.GpuQueue`, when one is set) instead of being refused while they
are held: ``on_pending(reason)`` hears its place, and the launch goes on once the queue grants the devices.
Every removal and dropped claim here tells the queue to look again.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from . import labels as L
from .base import ContainerService
from .ledger import GpuLedger
from .progress import PullState
from .spec import ContainerSpec
from .tty import ExecTarget, TtySession
from .types import ContainerState, ImageInfo, Launched


class AllocatingService(ContainerService):
    """``inner`` with GPUs assigned by ``ledger``; every other call goes to ``inner`` unchanged."""

    def __init__(self, inner: ContainerService, ledger: GpuLedger) -> None:
        self.inner = inner
        self.ledger = ledger
        for name, value in inner.capabilities().items():  # the inner backend's capabilities are this one's
            setattr(self, name, value)

    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None, gpu_resource: str | None = None,
                     wait: bool = True, on_pending: Callable[[str], None] | None = None) -> Launched:
        """Assign the GPUs ``spec`` asks for under ``claim`` (a health check's 'all': every GPU nobody holds),
        then launch; the claim is dropped once the container exists (its label holds the GPUs from then on)."""
        if claim and assign_gpus and spec.gpus.wanted:
            queue = self.ledger.queue
            owner = spec.labels.get(L.OWNER, "")
            if queue is not None and queue.enabled and on_pending is not None and spec.gpus.mode in ("count", "ids"):
                queued_at = spec.labels.get(L.QUEUED_AT)
                tag = L.Tag.read(spec.labels)
                what = f"{tag.kind} {tag.name or os.path.basename(tag.notebook) or tag.id[:8]}".strip()
                got = await queue.acquire(claim, owner, spec.gpus, on_wait=on_pending,
                                          submitted=float(queued_at) if queued_at else None, what=what)
            else:
                got = await self.ledger.assign(claim, spec.gpus, free_all=spec.labels.get(L.KIND) == L.HEALTH, viewer=owner)
            spec = spec.with_gpus(got)
        try:
            return await self.inner.launch(spec, claim=claim, gpu_fallback=gpu_fallback, assign_gpus=False,
                                           timeout=timeout, gpu_resource=gpu_resource, wait=wait, on_pending=on_pending)
        finally:
            if claim:
                self.ledger.release(claim)

    def release(self, claim: str) -> None:
        self.ledger.release(claim)
        self._freed()

    async def leave_queue(self, kind: str, id: str) -> None:
        await self.inner.leave_queue(kind, id)

    def _freed(self) -> None:
        """GPUs may be free now: the queue looks again."""
        if self.ledger.queue is not None:
            self.ledger.queue.kick()

    # -- everything else is the inner backend's ------------------------------------------------------------
    async def ping(self) -> dict[str, str]:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    async def shutdown(self) -> None:
        await self.inner.shutdown()

    async def private_dir(self, kernel_id: str, user: str) -> Path:
        return await self.inner.private_dir(kernel_id, user)

    def validate(self, spec: ContainerSpec, *, timeout: float | None = None, gpu_resource: str | None = None) -> None:
        """The inner backend's checks, and a GPU request that can never be met (the queue's refusal)."""
        self.inner.validate(spec, timeout=timeout, gpu_resource=gpu_resource)
        if self.ledger.queue is not None and spec.gpus.mode in ("count", "ids"):
            self.ledger.queue.check(spec.labels.get(L.OWNER, ""), spec.gpus)

    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        return await self.inner.inspect(cid, signals=signals)

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> builtins.list[ContainerState]:
        return await self.inner.list(kind, id=id, owner_uid=owner_uid, server_id=server_id, running=running)

    async def pending(self, cid: str) -> str | None:
        return await self.inner.pending(cid)

    def image_digest(self, state: ContainerState) -> str:
        return self.inner.image_digest(state)

    def list_hint(self, kind: str) -> str:
        return self.inner.list_hint(kind)

    async def logs(self, cid: str, tail: int | str = "all") -> str:
        return await self.inner.logs(cid, tail=tail)

    async def log_bytes(self, cid: str) -> bytes:
        return await self.inner.log_bytes(cid)

    def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        return self.inner.follow(cid, sink)

    async def wait(self, cid: str) -> int:
        return await self.inner.wait(cid)

    async def cpu_seconds(self, cid: str) -> float | None:
        return await self.inner.cpu_seconds(cid)

    async def address(self, cid: str) -> str:
        return await self.inner.address(cid)

    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        return await self.inner.exec(cid, cmd, stdin=stdin, user=user, env=env, workdir=workdir)

    def open_tty(self, target: ExecTarget, *, term: str, size: tuple[int, int] | None = None) -> TtySession:
        return self.inner.open_tty(target, term=term, size=size)

    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        await self.inner.signal(cid, signal)

    async def remove(self, cid: str) -> None:
        try:
            await self.inner.remove(cid)
        finally:
            self._freed()

    def remove_soon(self, cid: str) -> asyncio.Future[None]:
        done = self.inner.remove_soon(cid)
        done.add_done_callback(lambda _: self._freed())
        return done

    async def reap(self, *, own_server_id: str | None = None, dry_run: bool = False) -> builtins.list[dict[str, Any]]:
        return await self.inner.reap(own_server_id=own_server_id, dry_run=dry_run)

    async def image(self, ref: str) -> ImageInfo:
        return await self.inner.image(ref)

    async def pull(self, ref: str, timeout: float, on_progress: Callable[[PullState], None] | None = None,
                   progress_interval: float = 0.5) -> None:
        await self.inner.pull(ref, timeout, on_progress, progress_interval)

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        return await self.inner.spec_of(cid)

    async def kernel_record(self, cid: str) -> tuple[ContainerSpec, str]:
        return await self.inner.kernel_record(cid)

    def gpu_view(self, **kwargs: Any) -> Any:
        return self.inner.gpu_view(**kwargs)

    async def notices(self, since: float = 0.0) -> builtins.list[dict[str, Any]]:
        return await self.inner.notices(since)
