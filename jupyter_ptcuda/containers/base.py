"""The container service interface: what every backend implements, and what each declares it can do.

One interface, three complete backends, each in its own sub-package, chosen by :mod:`.factory` alone:

- :class:`~.docker.service.DockerContainerService` — this host's Docker engine (the only backend that
  speaks the engine API, through the seam :mod:`.engine`);
- :class:`~.kube.backend.KubeContainerService` — pods and Jobs in a namespace (kubernetes_asyncio);
- :class:`~.remote.service.RemoteContainerService` — the JupyterHub broker, over HTTP, which runs the
  Docker backend with the socket under its own policy.

GPU allocation is not a backend's business: :class:`~.allocating.AllocatingService` wraps any backend
that does not assign GPUs itself (:attr:`ContainerService.allocates_gpus` False), installed once by the
server extension (:func:`.factory.install_ledger`).

Callers never ask which backend they have: they read the **declared capabilities** (class attributes
below, and :meth:`ContainerService.capabilities`, like jupyter-scheduler's ``supported_features``) and call
the methods. A method a backend cannot offer raises with the sentence that says why and what to do.

Callers: the provisioner, the job manager, the health runner, image probes, the reaper, the server's REST
handlers, the broker and the CLI. Value types: :mod:`.types`; terminal types: :mod:`.tty`.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LaunchError, NotFound
from . import labels as L
from .progress import PullState
from .spec import ContainerSpec
from .tty import ExecTarget, TtySession
from .types import ContainerState, ImageInfo, Launched


class ContainerService(abc.ABC):
    """The interface. Each method's docstring says who calls it and when."""

    # -- declared capabilities (each backend sets its own) ----------------------------------------------
    #: Whether the backend itself ends a job at its timeout (the container then reads as
    #: :data:`~.types.DEADLINE_STATUS`); the job lifecycle's own timer is then only a backstop.
    enforces_deadlines: bool = False
    #: Whether a container may wait for a scheduler before it runs (status "created", not running, no exit
    #: code; :meth:`pending` says why).
    waits_for_scheduler: bool = False
    #: None when a command or shell can run in a container (:meth:`exec`, :meth:`open_tty`); else the
    #: sentence that says why not and what to do instead.
    no_exec: str | None = None
    #: Whether :meth:`image` reads the image (labels, env, modules); False where nodes pull it (an image is
    #: then allowed by name only and the jobs' import check is skipped).
    inspects_images: bool = True
    #: Whether the backend assigns GPUs itself (the broker's ledger, a cluster's scheduler): no local ledger
    #: is wrapped around it.
    allocates_gpus: bool = False
    #: Whether jobs may ask for a named GPU resource (``nvidia.com/mig-1g.10gb``: Kubernetes).
    gpu_resources: bool = False
    #: Where a kernel runs, as the provisioner reaches it: "local" (this host: ipc sockets or loopback
    #: ports) or "pod" (its own IP, ports in the pod, CurveZMQ; :meth:`address`).
    kernel_placement: str = "local"
    #: Whether the backend posts notices for this server's user (:meth:`notices`: the broker's idle reclaimer).
    posts_notices: bool = False

    def capabilities(self) -> dict[str, Any]:
        """The declared capabilities by name (logged at start, shown by tests that skip what is not declared)."""
        return {name: getattr(self, name) for name in ("enforces_deadlines", "waits_for_scheduler", "no_exec",
                                                       "inspects_images", "allocates_gpus", "gpu_resources",
                                                       "kernel_placement", "posts_notices")}

    # -- the backend ------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> dict[str, str]:
        """The backend's version (``{"version", "api_version"}``); EngineUnavailable when it does not answer.
        The server's ``GET status`` and the CLI's checks call it."""

    async def close(self) -> None:
        """Close the backend's own API client, on the event loop it was made on. Called when a command's event
        loop ends (:func:`jupyter_ptcuda.jobs.cli.in_one_loop`). Default: nothing to close."""
        return None

    async def shutdown(self) -> None:
        """The server that uses this backend stops: remove what the backend holds for that server alone (Docker:
        its network-namespace holder). Called by the server extension's stop. Default: nothing."""
        return None

    async def notices(self, since: float = 0.0) -> builtins.list[dict[str, Any]]:
        """What the backend did to this server's user's kernels since ``since`` (epoch s), where it
        :attr:`posts_notices`. The server extension polls it. Default: none."""
        return []

    def gpu_view(self, *, nvml: Any, interval: float, history_seconds: float, sharing: str) -> tuple[Any, Any]:
        """``(sampler, ledger)`` the server shows GPUs with (``GET gpus``) and allocates from: by default this
        host's NVML (``nvml``: an NVML module to use instead, from the server's configuration) and a ledger
        over this backend's own labels. A backend whose GPUs are another process's says so (the broker's)."""
        from ..nvml.sampler import GpuSampler
        from .ledger import GpuLedger

        sampler = GpuSampler(nvml, interval=interval, history_seconds=history_seconds)
        return sampler, GpuLedger(self, sampler.snapshot, sharing=sharing, sampler=sampler)

    # -- launching --------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None, gpu_resource: str | None = None,
                     wait: bool = True, on_pending: Callable[[str], None] | None = None) -> Launched:
        """Start a container; ``(id, the spec it was started with, the fallback's reason)``. Called by the
        provisioner (kernels), the job lifecycle, the health runner and probes.

        ``claim``/``assign_gpus``: for the allocation layer around the backend (the id a GPU assignment is
        recorded under). ``gpu_fallback='cpu'``: where the backend has no GPU runtime, start without GPUs
        (saying so in ``fallback``); else NoNvidiaRuntime with the fix. For a backend that
        :attr:`waits_for_scheduler`: ``wait=False`` returns once created (:meth:`pending` says why it waits),
        ``on_pending(reason)`` hears each new reason while :meth:`launch` waits; where it
        :attr:`enforces_deadlines`, ``timeout`` is the deadline; ``gpu_resource`` where it has
        :attr:`gpu_resources`. Other backends start at once and ignore them."""

    def release(self, claim: str) -> None:
        """Forget a GPU assignment (its container is gone). Default: nothing held here."""
        return None

    async def leave_queue(self, kind: str, id: str) -> None:
        """Take a job out of a GPU queue that outlives its :meth:`launch` call (the JupyterHub broker's, which
        keeps a waiting job when its caller hangs up). Called by the job manager when a queued job is cancelled.
        Default: nothing (an in-process queue is left by cancelling the launch)."""
        return None

    async def queue_view(self) -> builtins.list[dict[str, Any]] | None:
        """The GPU queue of a backend that keeps its own (the JupyterHub broker's), in order, as this server's
        user may see it: ``mine``, ``what``, ``claim``, ``place``, ``reason``, ``waited_s``, ``gpus`` (another
        user's request: ``what`` "another user", no claim, no reason). Default: None (the server's own queue,
        in the allocation layer, is the one)."""
        return None

    async def run_once(self, spec: ContainerSpec, *, timeout: float = 300, claim: str | None = None,
                       gpu_fallback: str = "error") -> tuple[int, str, Launched]:
        """Run a one-off container to completion: ``(exit code, output, what was launched)``; always removed
        afterwards, also on timeout (LaunchError) or cancellation. Health checks and image probes."""
        launched = await self.launch(spec, claim=claim, gpu_fallback=gpu_fallback)
        code, output = await self.finish_once(launched, timeout=timeout, claim=claim)
        return code, output, launched

    async def finish_once(self, launched: Launched, *, timeout: float = 300, claim: str | None = None
                          ) -> tuple[int, str]:
        """The second half of :meth:`run_once`: wait for ``launched``, ``(exit code, output)``; removed
        afterwards in every case."""
        cid, spec = launched.id, launched.spec
        try:
            try:
                code = await asyncio.wait_for(self.wait(cid), timeout)
            except TimeoutError:
                raise LaunchError(f"{spec.image}: {' '.join(spec.command)[:80]} did not finish in {timeout:.0f} s; "
                                  "its container was removed.") from None
            return code, await self.logs(cid)
        finally:
            await self.remove(cid)
            if claim:
                self.release(claim)

    async def private_dir(self, kernel_id: str, user: str) -> Path:
        """A kernel's private ipc folder (0700, owned by the container's ``uid:gid``), made by whoever mounts
        it. The provisioner asks before a local kernel starts. Default: not offered."""
        raise ConfigError("this backend has no kernel folders on this host: use transport 'tcp' (pods reach "
                          "their kernels by IP).")

    def validate(self, spec: ContainerSpec, *, timeout: float | None = None, gpu_resource: str | None = None) -> None:
        """Refuse now what :meth:`launch` would refuse later (a job's submit calls it). Default: nothing more
        than the builder already checked."""
        if gpu_resource and not self.gpu_resources:
            raise ConfigError(f"gpu_resource {gpu_resource!r} is only understood by the Kubernetes backend: ask for "
                              "GPUs by count or device instead.")

    # -- watching ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        """The container's state, or None when it is gone. ``signals``: also get ready to signal it quickly
        (a kernel's start-up check does this)."""

    @abc.abstractmethod
    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> builtins.list[ContainerState]:
        """Containers of ours (of ``kind``, with that id/owner/server), newest first; ``running`` only. The
        ledger, the reaper, the jobs list and the broker's quotas read it: labels are the truth."""

    async def pending(self, cid: str) -> str | None:
        """Why ``cid`` waits for a scheduler ("" when nothing was said), or None when it does not wait. The
        job lifecycle asks while a job is queued (where :attr:`waits_for_scheduler`). Default: None."""
        return None

    def image_digest(self, state: ContainerState) -> str:
        """The image ``state``'s container runs, as a job records it. Default: the image id."""
        return state.image_id

    async def find(self, kind: str, id: str) -> ContainerState:
        """The running container of kernel/job ``id`` (a unique prefix will do); NotFound saying why. The
        CLI's shell/exec/health --kernel."""
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
        return f"`jupyter ptcuda jobs list` ({kind}s)"

    @abc.abstractmethod
    async def logs(self, cid: str, tail: int | str = "all") -> str:
        """The container's output so far (stdout and stderr); "" when it is gone."""

    @abc.abstractmethod
    async def log_bytes(self, cid: str) -> bytes:
        """The whole output, as bytes (NotFound when gone)."""

    @abc.abstractmethod
    def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        """The container's output as it comes, from the start, until it exits (``sink`` sees each chunk in the
        reading thread). The job lifecycle's log tee; the broker's ``/v1/follow``."""

    @abc.abstractmethod
    async def wait(self, cid: str) -> int:
        """Until the container exits: its exit code."""

    async def cpu_seconds(self, cid: str) -> float | None:
        """CPU time used by the container so far (None: gone, stopped or not measured). The idle watch."""
        return None

    async def address(self, cid: str) -> str:
        """Where a ``kernel_placement == "pod"`` kernel listens (its IP). Default: not offered."""
        raise ConfigError("this backend's kernels are reached on this host, not by address.")

    def describe_exit(self, state: ContainerState | None, logs: str, what: str) -> LaunchError:
        """A LaunchError for a container that died: exit code, OOMKilled, the last log lines."""
        tail = "\n".join(logs.strip().splitlines()[-20:])
        code, oom = (state.exit_code, state.oom_killed) if state else (None, False)
        why = "it was killed for exceeding its memory limit (OOMKilled)" if oom else f"it exited with code {code}"
        return LaunchError(f"{what}: {why}." + (f" Last log lines:\n{tail}" if tail else ""),
                           exit_code=code, oom_killed=oom, logs=tail)

    # -- acting -----------------------------------------------------------------------------------------
    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        """Run a command in a running container: ``(exit code, combined output)``. Health checks of a running
        kernel, ``jupyter ptcuda exec``. Offered where :attr:`no_exec` is None."""
        raise ConfigError(self.no_exec or "this backend runs no command inside a container.")

    def open_tty(self, target: ExecTarget, *, term: str, size: tuple[int, int] | None = None) -> TtySession:
        """A shell with a terminal in ``target``'s container (``jupyter ptcuda shell``, a server terminal).
        Blocking. Offered where :attr:`no_exec` is None."""
        raise ConfigError(self.no_exec or "this backend opens no shell inside a container.")

    @abc.abstractmethod
    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        """Signal the container's main process (interrupts, cancels); a container gone or stopped is fine."""

    @abc.abstractmethod
    async def remove(self, cid: str) -> None:
        """Remove a container whatever its state; one already gone (or being removed) is fine."""

    def remove_soon(self, cid: str) -> asyncio.Future[None]:
        """Start removing a container and return at once; the future says when it is done. Default: the
        removal as a task of the running loop."""
        return asyncio.ensure_future(self.remove(cid))

    async def reap(self, *, own_server_id: str | None = None, dry_run: bool = False
                   ) -> builtins.list[dict[str, Any]]:
        """Orphans the backend itself finds and removes beyond those :func:`.reaper.reap_orphans` judges one
        by one (``dry_run``: only reports). Default: none."""
        return []

    # -- images and records -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def image(self, ref: str) -> ImageInfo:
        """What the backend knows of an image (``inspected=False`` where it cannot read it); ImageNotFound
        with the fix when absent."""

    async def pull(self, ref: str, timeout: float, on_progress: Callable[[PullState], None] | None = None,
                   progress_interval: float = 0.5) -> None:
        """Bring an image to where containers start (``pull_policy``). Default: nothing (nodes pull).

        ``on_progress`` (the provisioner's kernel-start notice) hears the bytes downloaded so far, at most once
        per ``progress_interval`` seconds, on the caller's event loop, and never after this returns. A backend
        that cannot see the pull's progress (the broker client) never calls it."""
        return None

    @abc.abstractmethod
    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        """The spec a container was created from and the image it runs; NotFound if either is gone. A job
        copied from a kernel."""

    async def kernel_record(self, cid: str) -> tuple[ContainerSpec, str]:
        """``(spec, gpu_resource)`` a kernel's container was made from, for a job that copies it from a
        process that did not start it. Default: its spec read back, no GPU resource."""
        spec, _ = await self.spec_of(cid)
        return spec, ""
