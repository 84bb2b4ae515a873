"""The container service: the one way the rest of the package launches, watches and removes containers.

``launch / inspect / signal / logs / follow / wait / exec / remove / list`` (+ ``run_once``, ``image``,
``pull``, ``spec_of``, ``find``) over the engine seam (:mod:`.engine`, the only module that imports
``docker``). Its types are ours, not Docker's: :class:`ContainerState`, :class:`ImageInfo`,
:class:`~.spec.ContainerSpec`. It is the interface a remote backend (the JupyterHub broker) and a
Kubernetes backend implement; it stays small and async.

``launch`` is where every kind gets the same treatment: the GPU ledger assigns devices for any kind
that asks for GPUs (kernels, jobs, health checks), ``network_mode="shared"`` joins this server's
namespace holder (:mod:`.netns`), and the one GPU fallback (``gpu_fallback="cpu"``: no NVIDIA runtime →
start without GPUs, saying so) lives here.

Callers: the provisioner, the job manager, the health runner, image probes, the reaper, the netns
holder, the server's REST handlers and the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import LaunchError, NoNvidiaRuntime, NotFound
from . import labels as L
from .engine import Engine, get_engine
from .gpus import NONE
from .ledger import active_ledger
from .logstream import docker_time, follow_container
from .spec import ContainerSpec, spec_from_container

log = logging.getLogger("jupyter_ptcuda")


@dataclasses.dataclass(frozen=True)
class ContainerState:
    """A container of ours as the service reports it (from ``docker inspect`` or a listing)."""

    id: str
    name: str
    image: str  # as asked for at create time (a tag, or the digest a job is pinned to)
    image_id: str
    running: bool
    status: str  # created | running | exited | dead | removing | paused | restarting
    tag: L.Tag
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    exit_code: int | None = None
    oom_killed: bool = False
    created: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def from_inspect(cls, info: Mapping[str, Any]) -> ContainerState:
        state = info.get("State") or {}
        labels = (info.get("Config") or {}).get("Labels") or {}
        code = state.get("ExitCode")
        running = bool(state.get("Running"))
        return cls(id=info["Id"], name=(info.get("Name") or "").lstrip("/"), image=(info.get("Config") or {}).get("Image") or "",
                   image_id=info.get("Image") or "", running=running, status=state.get("Status") or ("running" if running else "exited"),
                   tag=L.Tag.read(labels), labels=labels, exit_code=None if running or code is None else int(code),
                   oom_killed=bool(state.get("OOMKilled")), created=docker_time(info.get("Created")) or 0.0,
                   started_at=docker_time(state.get("StartedAt")), finished_at=docker_time(state.get("FinishedAt")))

    @classmethod
    def from_listing(cls, row: Mapping[str, Any]) -> ContainerState:
        labels = row.get("Labels") or {}
        status = row.get("State") or ""
        return cls(id=row["Id"], name=((row.get("Names") or [""])[0]).lstrip("/"), image=row.get("Image") or "",
                   image_id=row.get("ImageID") or "", running=status == "running", status=status, tag=L.Tag.read(labels), labels=labels,
                   created=float(row.get("Created") or 0))


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    id: str
    digest: str  # the repo digest when there is one, else the image id: what a job is pinned to
    labels: Mapping[str, str]
    env: Mapping[str, str]

    @classmethod
    def from_inspect(cls, info: Mapping[str, Any]) -> ImageInfo:
        config = info.get("Config") or {}
        return cls(id=info["Id"], digest=(info.get("RepoDigests") or [None])[0] or info["Id"],
                   labels=dict(config.get("Labels") or {}),
                   env=dict(e.partition("=")[::2] for e in config.get("Env") or []))

    def config(self) -> dict[str, Any]:
        return {"Labels": dict(self.labels), "Env": [f"{k}={v}" for k, v in self.env.items()]}


class Launched(NamedTuple):
    """What :meth:`ContainerService.launch` started: the container, the spec it was started with, and
    why it runs without the GPUs it asked for (``gpu_fallback='cpu'`` without an NVIDIA runtime), if so."""

    id: str
    spec: ContainerSpec
    fallback: str | None = None


class ContainerService:
    """Containers over one engine. One per process (:func:`get_service`); tests make their own."""

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine or get_engine()

    async def ping(self) -> dict[str, str]:
        """The backend's version (``{"version", "api_version"}``); EngineUnavailable when it does not answer."""
        v = await self.engine.ping()
        return {"version": str(v.get("Version") or ""), "api_version": str(v.get("ApiVersion") or "")}

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
                                                               free_all=spec.labels.get(L.KIND) == L.HEALTH))
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
        cid, spec = launched.id, launched.spec
        try:
            try:
                code = await asyncio.wait_for(self.engine.wait(cid), timeout)
            except TimeoutError:
                raise LaunchError(f"{spec.image}: {' '.join(spec.command)[:80]} did not finish in {timeout:.0f} s; "
                                  "its container was removed.") from None
            return code, await self.engine.logs(cid), launched
        finally:
            await self.engine.remove(cid)
            if claim:
                self.release(claim)

    # -- watching ----------------------------------------------------------------------------------
    async def inspect(self, cid: str) -> ContainerState | None:
        info = await self.engine.inspect(cid)
        return ContainerState.from_inspect(info) if info else None

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> list[ContainerState]:
        """Containers of ours (of ``kind``, with that id/owner/server), newest first; ``running`` only."""
        rows = await self.engine.containers(L.selector(kind, id=id, owner_uid=owner_uid, server_id=server_id),
                                            all=not running)
        return [ContainerState.from_listing(r) for r in rows]

    async def find(self, kind: str, id: str) -> ContainerState:
        """The running container of kernel/job ``id`` (a unique prefix will do); NotFound saying why."""
        found = await self.list(kind, id=id, running=True)
        if not found:
            found = [c for c in await self.list(kind, running=True) if c.tag.id.startswith(id)] if id else []
        if len(found) != 1:
            why = "is not running" if not found else "matches more than one; give more of the id"
            hint = "start it (open the notebook)" if kind == L.KERNEL else "check `jupyter ptcuda jobs list`"
            raise NotFound(f"{kind} {id!r} {why}: {hint}, or list them with "
                           f"`docker ps --filter label={L.KIND}={kind}`.")
        return found[0]

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

    def describe_exit(self, state: ContainerState | None, logs: str, what: str) -> LaunchError:
        """A LaunchError for a container that died: exit code, OOMKilled, the last log lines."""
        tail = "\n".join(logs.strip().splitlines()[-20:])
        code, oom = (state.exit_code, state.oom_killed) if state else (None, False)
        why = "it was killed for exceeding its memory limit (OOMKilled)" if oom else f"it exited with code {code}"
        return LaunchError(f"{what}: {why}." + (f" Last log lines:\n{tail}" if tail else ""),
                           exit_code=code, oom_killed=oom, logs=tail)

    # -- acting ------------------------------------------------------------------------------------
    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        """Signal PID 1 (the init process forwards it); a container gone or stopped is fine."""
        await self.engine.kill(cid, signal)

    async def remove(self, cid: str) -> None:
        """Force-remove; a container already gone (or being removed) is fine."""
        await self.engine.remove(cid)

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

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        """The spec a container was created from (read back from ``docker inspect``) and the image it
        runs (by id: the same image even if its tag moved since); NotFound if either is gone."""
        info = await self.engine.inspect(cid)
        if info is None:
            raise NotFound(f"container {cid[:12]} is gone.")
        image = await self.image(info["Image"])
        return spec_from_container(info, image.config()), image


_service: ContainerService | None = None


def get_service() -> ContainerService:
    """The process-wide service, over the process-wide engine."""
    global _service
    if _service is None:
        _service = ContainerService()
    return _service


