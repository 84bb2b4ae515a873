"""The container service: the one way the rest of the package launches, watches and removes containers.

``launch / inspect / signal / logs / follow / wait / exec / remove / list`` (+ ``run_once``, ``image``,
``pull``, ``spec_of``, ``find``, ``pending``, ``image_digest``, ``open_tty``, ``reap``, ``close``) over the
engine seam (:mod:`.engine`, the only module that imports ``docker``). Its types are ours, not Docker's:
:class:`ContainerState`, :class:`ImageInfo`, :class:`~.spec.ContainerSpec`. It is the interface a remote
backend (the JupyterHub broker) and a Kubernetes backend implement; it stays small and async.

``launch`` is where every kind gets the same treatment: the GPU ledger assigns devices for any kind
that asks for GPUs (kernels, jobs, health checks), ``network_mode="shared"`` joins this server's
namespace holder (:mod:`.netns`), and the one GPU fallback (``gpu_fallback="cpu"``: no NVIDIA runtime →
start without GPUs, saying so) lives here.

Callers: the provisioner, the job manager, the health runner, image probes, the reaper, the netns
holder, the server's REST handlers and the CLI.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import os
import signal as signal_module
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, cast

from traitlets import CaselessStrEnum, default
from traitlets.config import Configurable

from ..errors import LaunchError, NoNvidiaRuntime, NotFound
from . import labels as L
from .engine import Engine, get_engine
from .gpus import NONE
from .ledger import active_ledger
from .logstream import follow_container
from .spec import ContainerSpec, spec_from_container
from .tty import EngineTty, ExecTarget, TtySession
from .types import DEADLINE_STATUS, ContainerState, ImageInfo, Launched

#: Re-exported: the value types live in :mod:`.types` (import them from there).
__all__ = ["DEADLINE_STATUS", "ContainerBackend", "ContainerService", "ContainerState", "ImageInfo", "Launched",
           "get_service"]

log = logging.getLogger("jupyter_ptcuda")


class ContainerService:
    """Containers over one engine. One per process (:func:`get_service`); tests make their own."""

    #: Whether the backend itself ends a job at its timeout (the container then reads as
    #: :data:`DEADLINE_STATUS`); the job lifecycle's own timer is then only a backstop. Docker: no.
    enforces_deadlines: bool = False
    #: Whether a container may wait for a scheduler before it runs (status "created", not running, no exit
    #: code; :meth:`pending` says why). Docker's start at once.
    waits_for_scheduler: bool = False
    #: None when a command or shell can run in a container of this backend (:meth:`exec`,
    #: :meth:`open_tty`); else the sentence that says why not and what to do instead.
    no_exec: str | None = None

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
        from .. import kernel_files

        return await asyncio.to_thread(kernel_files.ipc_dir, kernel_id, user)

    # -- launching ---------------------------------------------------------------------------------
    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True) -> Launched:
        """Start a container; ``(id, the spec it was started with, the fallback's reason)``.

        ``claim``: the kernel/job/check id the GPU ledger records (when the server extension runs one and
        ``assign_gpus``); released again if the start fails. ``gpu_fallback='cpu'``: without an NVIDIA
        runtime the container starts without GPUs (a warning says so); else NoNvidiaRuntime with the fix.
        """
        ledger = active_ledger()
        claimed = False
        try:
            if ledger is not None and claim and assign_gpus and spec.gpus.wanted:
                spec = spec.with_gpus(await ledger.assign(claim, spec.gpus,
                                                               free_all=spec.labels.get(L.KIND) == L.HEALTH,
                                                               viewer=spec.labels.get(L.OWNER, "")))
                claimed = True
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
        except BaseException:
            if claimed and ledger is not None:
                ledger.release(claim or "")
            raise

    def release(self, claim: str) -> None:
        """Forget a GPU assignment (the container, and so its label, is gone)."""
        ledger = active_ledger()
        if ledger is not None:
            ledger.release(claim)

    async def run_once(self, spec: ContainerSpec, *, timeout: float = 300, claim: str | None = None,
                       gpu_fallback: str = "error") -> tuple[int, str, Launched]:
        """Run a one-off container to completion: ``(exit code, output, what was launched)``. Always
        removed afterwards, also on timeout (LaunchError) or cancellation, which frees the worker its wait
        held."""
        launched = await self.launch(spec, claim=claim, gpu_fallback=gpu_fallback)
        code, output = await self.finish_once(launched, timeout=timeout, claim=claim)
        return code, output, launched

    async def finish_once(self, launched: Launched, *, timeout: float = 300, claim: str | None = None
                          ) -> tuple[int, str]:
        """The second half of :meth:`run_once` (the broker checks the mounts in between): wait for the
        launched container, ``(exit code, output)``; removed afterwards in every case."""
        cid, spec = launched.id, launched.spec
        try:
            try:
                code = await asyncio.wait_for(self.engine.wait(cid), timeout)
            except TimeoutError:
                raise LaunchError(f"{spec.image}: {' '.join(spec.command)[:80]} did not finish in {timeout:.0f} s; "
                                  "its container was removed.") from None
            return code, await self.engine.logs(cid)
        finally:
            await self.engine.remove(cid)
            if claim:
                self.release(claim)

    # -- watching ----------------------------------------------------------------------------------
    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        """The container's state, or None when it is gone. ``signals``: also get ready to signal it
        quickly (see :meth:`signal`), from this inspect (a kernel's start-up check does this)."""
        info = await self.engine.inspect(cid)
        state = ContainerState.from_inspect(info) if info else None
        if signals and state is not None and state.running and state.pid:
            self._open_pidfd(cid, state.pid)
        return state

    async def pending(self, cid: str) -> str | None:
        """Why container ``cid`` waits for a scheduler ("" when nothing was said), or None when it does not
        wait. The job lifecycle asks while a job is queued (where :attr:`waits_for_scheduler`). Docker's
        containers never wait for a scheduler: None."""
        return None

    def image_digest(self, state: ContainerState) -> str:
        """The image ``state``'s container runs, as a job records it (``image_digest``) when it was known
        only by name at submit. Docker: the image id as inspect gives it (``sha256:...``)."""
        return state.image_id

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

    async def find(self, kind: str, id: str) -> ContainerState:
        """The running container of kernel/job ``id`` (a unique prefix will do); NotFound saying why."""
        found = await self.list(kind, id=id, running=True)
        if not found:
            found = [c for c in await self.list(kind, running=True) if c.tag.id.startswith(id)] if id else []
        if len(found) != 1:
            why = "is not running" if not found else "matches more than one; give more of the id"
            hint = "start it (open the notebook)" if kind == L.KERNEL else "check `jupyter ptcuda jobs list`"
            raise NotFound(f"{kind} {id!r} {why}: {hint}, or list them with {self.list_hint(kind)}.")
        return found[0]

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

    def describe_exit(self, state: ContainerState | None, logs: str, what: str) -> LaunchError:
        """A LaunchError for a container that died: exit code, OOMKilled, the last log lines."""
        tail = "\n".join(logs.strip().splitlines()[-20:])
        code, oom = (state.exit_code, state.oom_killed) if state else (None, False)
        why = "it was killed for exceeding its memory limit (OOMKilled)" if oom else f"it exited with code {code}"
        return LaunchError(f"{what}: {why}." + (f" Last log lines:\n{tail}" if tail else ""),
                           exit_code=code, oom_killed=oom, logs=tail)

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
        from ..errors import Conflict

        self._removing.add(cid)
        self._close_pidfd(cid)

        def remove(api: Any) -> None:
            try:
                api.remove_container(cid, force=True, v=True)
            except Exception as exc:  # noqa: BLE001 - mapped below; gone/being removed is fine
                from .engine import map_error

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

    async def reap(self, *, own_server_id: str | None = None, dry_run: bool = False
                   ) -> builtins.list[dict[str, Any]]:
        """Orphans the backend itself finds and removes (``dry_run``: only reports), beyond the containers
        :func:`.reaper.reap_orphans` judges one by one from :meth:`list`; reported as it reports them. Called by
        :func:`.reaper.reap_orphans` after its own pass. Docker: none (``[]``): the labels' server pid says it all."""
        return []

    # -- images ------------------------------------------------------------------------------------
    async def image(self, ref: str) -> ImageInfo:
        """``docker image inspect``; ImageNotFound with the fix when absent."""
        return ImageInfo.from_inspect(await self.engine.image(ref))

    async def pull(self, ref: str, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.engine.call(lambda api: list(api.pull(ref, stream=True, decode=True)),
                                                    what=f"pulling {ref}", long=True), timeout)
        except TimeoutError:
            raise LaunchError(f"pulling {ref} took longer than pull_timeout={timeout:.0f} s.") from None

    async def kernel_record(self, cid: str) -> tuple[ContainerSpec, str]:
        """``(spec, gpu_resource)`` a kernel's container was made from, for a job that copies it from a
        process that did not start it. Docker: its spec read back (:meth:`spec_of`); no GPU resource names."""
        spec, _ = await self.spec_of(cid)
        return spec, ""

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        """The spec a container was created from (read back from ``docker inspect``) and the image it
        runs (by id: the same image even if its tag moved since); NotFound if either is gone."""
        info = await self.engine.inspect(cid)
        if info is None:
            raise NotFound(f"container {cid[:12]} is gone.")
        image = await self.image(info["Image"])
        return spec_from_container(info, image.config()), image

    async def close(self) -> None:
        """Close the backend's own API client, on the event loop it was made on. Called when a command's event
        loop ends (:func:`jupyter_ptcuda.jobs.cli.in_one_loop`). Docker: nothing to close (the engine seam's
        client is process-wide and not bound to a loop)."""


_service: ContainerService | None = None


class ContainerBackend(Configurable):
    """Which backend :func:`get_service` makes (read once, at the first call)."""

    backend = CaselessStrEnum(["docker", "kubernetes"], config=True, help="""Where containers run: 'docker'
        (default: this host's engine) or 'kubernetes' (pods in the server's namespace, c.KubeBackend.*).
        Default from $JUPYTER_PTCUDA_BACKEND. A broker URL ($JUPYTER_PTCUDA_BROKER_URL) wins over both.
        Example: c.ContainerBackend.backend = "kubernetes" """)

    @default("backend")
    def _default_backend(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_BACKEND", "").strip().lower() or "docker"


def get_service(config: Any = None) -> ContainerService:
    """The process-wide service: over this host's engine; through the Hub's broker (:mod:`.remote`) when
    ``$JUPYTER_PTCUDA_BROKER_URL`` is set (a JupyterHub user's server); as pods (:mod:`.kube`) when
    ``c.ContainerBackend.backend = "kubernetes"`` (or ``$JUPYTER_PTCUDA_BACKEND=kubernetes``). ``config``:
    default, the running Jupyter application's (the server's ``jupyter_server_config.py``)."""
    global _service
    if _service is None:
        url = os.environ.get("JUPYTER_PTCUDA_BROKER_URL")
        if config is None:
            from traitlets.config import Application

            config = Application.instance().config if Application.initialized() else None
        if url:
            from .remote import RemoteContainerService

            _service = RemoteContainerService(url)
        elif ContainerBackend(config=config).backend == "kubernetes":
            from .kube.backend import get_kube_service

            _service = cast(ContainerService, get_kube_service(config))  # the same interface, not a subclass
        else:
            _service = ContainerService()
    return _service
