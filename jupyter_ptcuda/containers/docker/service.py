"""The Docker backend: containers on this host's engine, every call through the engine seam (:mod:`..engine`,
the only module that imports ``docker``). Complete: it implements the whole :class:`~..base.ContainerService`
interface and declares Docker's capabilities (the interface's defaults: exec and terminals, image inspection,
pulls, no scheduler, no deadlines of its own, GPUs assigned by the allocation layer around it).

Signals go straight to the container's init process through a pidfd where this process may send them
(microseconds instead of an API call); a container being removed is no longer listed as running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal as signal_module
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import LaunchError, NoNvidiaRuntime, NotFound, PtcudaError
from .. import labels as L
from ..base import ContainerService
from ..engine import Engine, get_engine
from ..gpus import NONE
from ..logstream import follow_container
from ..progress import PullProgress, PullState, Throttle
from ..spec import ContainerSpec, spec_from_container
from ..tty import EngineTty, ExecTarget, TtySession
from ..types import ContainerState, ImageInfo, Launched

log = logging.getLogger("jupyter_ptcuda")


class DockerContainerService(ContainerService):
    """Containers over this host's Docker engine (the seam :mod:`..engine`). One per process (the factory's);
    tests make their own. The broker runs this backend for its users."""


    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine
        self._removing: set[str] = set()  # being removed now: gone as far as GPUs and listings go
        self._pidfds: dict[str, int] = {}  # container -> pidfd of its init process (fast signals)

    @property
    def engine(self) -> Engine:
        return self._engine or get_engine()

    async def ping(self) -> dict[str, str]:
        """The backend's version (``{"version", "api_version"}``); EngineUnavailable when it does not answer."""
        v = await self.engine.ping()
        return {"version": str(v.get("Version") or ""), "api_version": str(v.get("ApiVersion") or "")}

    async def private_dir(self, kernel_id: str, user: str) -> Path:
        """A kernel's private ipc folder (0700, owned by the container's ``uid:gid``): made here, in this
        server's private folder (:mod:`jupyter_ptcuda.kernel_files`); under the broker, by the broker."""
        from ... import kernel_files

        return await asyncio.to_thread(kernel_files.ipc_dir, kernel_id, user)

    # -- launching ---------------------------------------------------------------------------------
    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None, gpu_resource: str | None = None,
                     wait: bool = True, on_pending: Callable[[str], None] | None = None) -> Launched:
        """Create and start a container (GPUs as ``spec`` names them: the allocation layer around this backend
        chose them). ``network_mode="shared"`` joins this server's namespace holder (:mod:`.netns`); the one
        GPU fallback lives here (``gpu_fallback="cpu"``: no NVIDIA runtime → start without GPUs, saying so)."""
        if spec.network_mode == "shared":
            from .netns import ensure_holder

            holder = await ensure_holder(self, spec.image)
            spec = dataclasses.replace(spec, network_mode=f"container:{holder}", ports={})
        try:
            return Launched(await self.engine.run(spec), spec)
        except NoNvidiaRuntime as exc:
            if gpu_fallback != "cpu":
                raise
            log.warning("jupyter-ptcuda: %s -- gpu_fallback='cpu': %s %s starts WITHOUT GPUs.",
                        exc.message.split(". ")[0], spec.labels.get(L.KIND, "container"), claim or "")
            spec = spec.with_gpus(NONE)
            return Launched(await self.engine.run(spec), spec, exc.message)

    # -- watching ----------------------------------------------------------------------------------
    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        """The container's state, or None when it is gone. ``signals``: also get ready to signal it
        quickly (see :meth:`signal`), from this inspect (a kernel's start-up check does this)."""
        info = await self.engine.inspect(cid)
        state = ContainerState.from_inspect(info) if info else None
        if signals and state is not None and state.running and state.pid:
            self._open_pidfd(cid, state.pid)
        return state

    async def address(self, cid: str) -> str:
        """The container's IP on its network (a model server's scoring port is reached there, never published
        on the host); LaunchError when it has none (gone, not running, network 'none')."""
        info = await self.engine.inspect(cid)
        networks = ((info or {}).get("NetworkSettings") or {}).get("Networks") or {}
        for net in networks.values():
            if (net or {}).get("IPAddress"):
                return str(net["IPAddress"])
        raise LaunchError(f"container {cid[:12]} has no IP address (gone, stopped or without a network).")

    def _open_pidfd(self, cid: str, pid: int) -> int | None:
        if cid not in self._pidfds and hasattr(os, "pidfd_open"):
            try:
                self._pidfds[cid] = os.pidfd_open(pid)
            except OSError:
                return None
        return self._pidfds.get(cid)

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> list[ContainerState]:
        """Containers of ours (of ``kind``, with that id/owner/server), newest first; ``running`` only."""
        rows = await self.engine.containers(L.selector(kind, id=id, owner_uid=owner_uid, server_id=server_id),
                                            all=not running)
        return [ContainerState.from_listing(r) for r in rows if not (running and r["Id"] in self._removing)]


    def list_hint(self, kind: str) -> str:
        """The command that lists this backend's containers of ``kind`` (said when :meth:`find` fails)."""
        return f"`docker ps --filter label={L.KIND}={kind}`"

    async def logs(self, cid: str, tail: int | str = "all") -> str:
        return await self.engine.logs(cid, tail=tail)

    async def log_bytes(self, cid: str) -> bytes:
        """The whole output, as bytes (NotFound/Conflict when gone or being removed)."""
        return await self.engine.call(lambda api: api.logs(cid, stdout=True, stderr=True))

    def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        return follow_container(self.engine, cid, sink)

    async def wait(self, cid: str) -> int:
        return await self.engine.wait(cid)

    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        return await self.engine.exec(cid, [*cmd], stdin=stdin, user=user, env=env, workdir=workdir)

    def open_tty(self, target: ExecTarget, *, term: str, size: tuple[int, int] | None = None) -> TtySession:
        """A shell with a terminal in ``target``'s container: what :func:`jupyter_ptcuda.shell.open_tty` returns
        (``jupyter ptcuda shell``, a server terminal's attach). ``term``/``size``: the client terminal's type and
        ``(rows, cols)``. Blocking. Docker: an exec over this process's engine
        (:class:`~.tty.EngineTty`)."""
        return EngineTty.open(self.engine, target, term, size)

    async def cpu_seconds(self, cid: str) -> float | None:
        """CPU time used by the container so far (None: gone or stopped). The idle watch reads it."""
        return await self.engine.cpu_seconds(cid)


    # -- acting ------------------------------------------------------------------------------------
    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        """Signal PID 1 (the init process forwards it); a container gone or stopped is fine.

        Where this process may signal the container's init process directly (same host, same uid or
        root, no user namespace) it does, through a pidfd (no pid-reuse race): an interrupt then costs
        microseconds instead of a Docker API call. Otherwise, and on any doubt, ``docker kill``."""
        fd = self._pidfds.get(cid)
        if fd is None and hasattr(os, "pidfd_open"):
            state = await self.inspect(cid, signals=True)
            fd = self._pidfds.get(cid) if state is not None else None
        if fd is not None:
            try:
                sig = signal if isinstance(signal, int) else int(getattr(signal_module, signal))
                signal_module.pidfd_send_signal(fd, sig)
                return
            except ProcessLookupError:
                return  # it has exited: nothing to signal
            except OSError:  # not ours to signal (user namespaces, another host's pid): ask the engine
                self._close_pidfd(cid)
        await self.engine.kill(cid, signal)

    def _close_pidfd(self, cid: str) -> None:
        fd = self._pidfds.pop(cid, None)
        if fd is not None:
            os.close(fd)

    async def remove(self, cid: str) -> None:
        """Force-remove; a container already gone (or being removed) is fine. While the removal runs the
        container is no longer listed as running (its GPUs are free for the ledger)."""
        self._removing.add(cid)
        self._close_pidfd(cid)
        try:
            await self.engine.remove(cid)
        finally:
            self._removing.discard(cid)

    def remove_soon(self, cid: str) -> asyncio.Future[None]:
        """Start removing a container and return at once (the removal is handed to a worker thread before
        this returns, so it happens even if the caller's event loop ends); the future says when it is
        done. A container gone, or being removed already, is fine."""
        from ...errors import Conflict

        self._removing.add(cid)
        self._close_pidfd(cid)

        def remove(api: Any) -> None:
            try:
                api.remove_container(cid, force=True, v=True)
            except Exception as exc:  # noqa: BLE001 - mapped below; gone/being removed is fine
                from ..engine import map_error

                mapped = map_error(exc)
                if not isinstance(mapped, NotFound | Conflict):
                    raise mapped from exc

        def done(f: asyncio.Future[None]) -> None:
            self._removing.discard(cid)
            if not f.cancelled() and f.exception() is not None:
                log.warning("jupyter-ptcuda: %s", f.exception())

        future = self.engine.call_soon(remove, what=f"removing container {cid[:12]}")
        future.add_done_callback(done)
        return future


    # -- images ------------------------------------------------------------------------------------
    async def image(self, ref: str) -> ImageInfo:
        """``docker image inspect``; ImageNotFound with the fix when absent."""
        return ImageInfo.from_inspect(await self.engine.image(ref))

    async def pull(self, ref: str, timeout: float, on_progress: Callable[[PullState], None] | None = None,
                   progress_interval: float = 0.5) -> None:
        """``docker pull`` with this process's credentials, read again for each pull (a ``docker login`` made
        after the server started counts); a registry's refusal is one sentence with the fix (RegistryError).
        The engine's events are folded into bytes done/total in the pulling thread (:mod:`..progress`); a
        changed state reaches ``on_progress`` on this loop at most once per ``progress_interval``."""
        on_event: Callable[[dict[str, Any]], None] | None = None
        over = False
        if on_progress is not None:
            loop, progress, throttle = asyncio.get_running_loop(), PullProgress(), Throttle(progress_interval)
            told: list[PullState] = []

            def tell(state: PullState) -> None:
                if not over:
                    on_progress(state)

            def on_event(event: dict[str, Any]) -> None:  # in the pulling thread
                state = progress.feed(event)
                if state.layers and (not told or state != told[-1]) and throttle.ready():
                    told[:] = [state]
                    loop.call_soon_threadsafe(tell, state)
        try:
            await asyncio.wait_for(self.engine.pull(ref, on_event), timeout)
        except TimeoutError:
            raise LaunchError(f"pulling {ref} took longer than pull_timeout={timeout:.0f} s.") from None
        finally:
            over = True


    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        """The spec a container was created from (read back from ``docker inspect``) and the image it
        runs (by id: the same image even if its tag moved since); NotFound if either is gone."""
        info = await self.engine.inspect(cid)
        if info is None:
            raise NotFound(f"container {cid[:12]} is gone.")
        image = await self.image(info["Image"])
        return spec_from_container(info, image.config()), image

    async def shutdown(self) -> None:
        """Remove this server's network-namespace holder (:mod:`.netns`), if it made one."""
        from .netns import remove_holder

        try:
            await remove_holder(self)
        except PtcudaError:
            pass
