"""The container service through the JupyterHub broker: what a user's server uses when the Hub set
``JUPYTER_PTCUDA_BROKER_URL`` (``Spawner.environment``; see examples/jupyterhub_config.py).

:class:`RemoteContainerService` has :class:`~.service.ContainerService`'s methods; each is one HTTP call
to the broker (:mod:`jupyter_ptcuda.broker`), authenticated with this server's own
``$JUPYTERHUB_API_TOKEN``. The broker builds every container again under its own policy: what this side
builds is only a request. Non-blocking (tornado's AsyncHTTPClient); errors come back as the same classes
(a 403 stays :class:`~jupyter_ptcuda.errors.Forbidden`, with the broker's sentence).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineUnavailable
from .. import labels as L
from .. import wire
from ..base import ContainerService
from ..build import Request
from ..progress import PullState
from ..spec import ContainerSpec
from ..types import ContainerState, ImageInfo, Launched

if TYPE_CHECKING:
    from ..tty import ExecTarget, TtySession

BROKER_ENV = "JUPYTER_PTCUDA_BROKER_URL"
log = logging.getLogger("jupyter_ptcuda")


def request_of(spec: ContainerSpec) -> dict[str, Any]:
    """The request a locally built spec stands for, as the broker takes it (:func:`.wire.request_to_json`):
    kind, id, notebook and this server's id from its labels; the notebook folder (when it is mounted at its
    own path), the other mounts, env, GPUs, limits, network and a kernel's files. The user, labels, ports,
    the kernel's private folder and every hardening field stay the broker's."""
    tag = L.Tag.read(spec.labels)
    workdir = spec.workdir if spec.workdir and spec.workdir != spec.home else None
    mount_workdir = workdir is not None and any(m.source == workdir == m.target and not m.read_only for m in spec.mounts)
    private = {tag.kernel_dir} - {""}
    mounts = tuple(m for m in spec.mounts if m.source not in private
                   and not (mount_workdir and m.source == workdir == m.target and not m.read_only))
    env = {k: v for k, v in spec.env.items() if not k.startswith("NVIDIA_")}
    request = Request(kind=tag.kind, image=spec.image, command=spec.command, workdir=workdir,
                      mount_workdir=mount_workdir, gpus=spec.gpus, mounts=mounts, env=env, shm_size=spec.shm_size,
                      mem_limit=spec.mem_limit, cpus=spec.cpus, pids_limit=spec.pids_limit,
                      network_mode=spec.network_mode, id=tag.id, notebook=tag.notebook, files=spec.files)
    return wire.request_to_json(request, server_id=tag.server_id, server_pid=tag.server_pid or 0)


class RemoteContainerService(ContainerService):
    """The service's operations, served by the broker for this server's Hub user. Complete on its own: it
    shares no code with the Docker backend the broker runs."""

    #: The broker assigns GPUs from its own ledger for every container; this server keeps none.
    allocates_gpus = True
    #: The broker tells this user's server what it did to their kernels (idle reclamation).
    posts_notices = True

    #: Seconds between tries to reach the broker again while a job waits in its line (it restarted).
    retry_interval = 2.0

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def gpu_view(self, *, nvml: Any, interval: float, history_seconds: float, sharing: str) -> tuple[Any, Any]:
        """The broker's GPUs: its one NVML sampler, polled (:class:`.gpus.BrokerSampler`), and its ledger's
        holders as this user may see them (:class:`.gpus.BrokerLedger`); this server reads no NVML."""
        from .gpus import BrokerLedger, BrokerSampler

        sampler = BrokerSampler(self.url, self.token, interval=interval, history_seconds=history_seconds)
        return sampler, BrokerLedger(self, sampler.snapshot, sharing=sharing)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    async def _call(self, op: str, timeout: float = 120, **body: Any) -> Any:
        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        if not self.token:
            raise EngineUnavailable(f"{BROKER_ENV} is set but JUPYTERHUB_API_TOKEN is not: the broker needs the "
                                    "single-user server's Hub token (start the server from JupyterHub).")
        try:
            response = await AsyncHTTPClient().fetch(f"{self.url}/v1/{op}", method="POST", body=json.dumps(body),
                                                     headers=self._headers(), request_timeout=timeout)
        except HTTPClientError as exc:
            if exc.response is None or exc.code == 599:
                raise self._unreachable(exc) from None
            raise wire.error_from_http(exc.code, exc.response.body) from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        return json.loads(response.body)["result"]

    def _unreachable(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(f"the jupyter-ptcuda broker at {self.url} does not answer ({exc}): ask the Hub "
                                 "operator to start it (c.JupyterHub.services, see examples/jupyterhub_config.py), "
                                 f"or unset {BROKER_ENV} to use a local Docker engine.")

    # -- the service's operations ------------------------------------------------------------------
    async def ping(self) -> dict[str, str]:
        return dict(await self._call("ping", timeout=10))

    async def whoami(self) -> dict[str, Any]:
        return dict(await self._call("whoami", timeout=10))

    async def notices(self, since: float = 0.0) -> list[dict[str, Any]]:
        """What the broker did to this user's kernels since ``since`` (idle reclamation)."""
        return list(await self._call("notices", timeout=10, since=since))

    async def private_dir(self, kernel_id: str, user: str) -> Path:
        return Path(await self._call("private_dir", kernel_id=kernel_id))

    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None, gpu_resource: str | None = None,
                     wait: bool = True, on_pending: Callable[[str], None] | None = None) -> Launched:
        """Ask the broker for the container ``spec`` describes: only its request travels (:func:`request_of`);
        the broker assigns GPUs (``claim``/``assign_gpus`` are its business) and builds the container.

        ``on_pending`` (a job or kernel that may wait): GPUs held by others put the request in the broker's GPU
        queue (fair across users) instead of a 409, and ``on_pending(reason)`` hears its place while it waits
        (read from the broker's op ``queue``, where other users' requests are only "another user"). A job is
        saved in the broker's line first (op ``enqueue``, keyed by its id): it keeps its place if this call is
        cancelled (the server stops) or the broker restarts (this asks again, joining the same place), and
        asking again never starts a second container."""
        request = request_of(spec)
        if on_pending is None or not spec.gpus.wanted:
            r = await self._call("launch", timeout=600, request=request, gpu_fallback=gpu_fallback)
            return Launched(r["id"], wire.spec_from_json(r["spec"]), r.get("fallback"))
        durable = request["kind"] == L.JOB
        if durable:  # saved in the broker's line first: from here on it keeps its place whatever happens to us
            r = await self._call("enqueue", timeout=120, request=request, gpu_fallback=gpu_fallback)
            if r.get("id"):
                return Launched(r["id"], wire.spec_from_json(r["spec"]), r.get("fallback"))
        mine = f"{request['kind']}/{request['id']}"
        watcher = asyncio.ensure_future(self._relay_place(mine, on_pending, first=0.0 if durable else None))
        try:
            while True:
                try:
                    r = await self._call("launch", timeout=0, request=request, gpu_fallback=gpu_fallback,
                                         wait_for_gpus=True)
                    break
                except EngineUnavailable:
                    if not durable:
                        raise
                    # the broker restarts: the job is still in its line (saved); asking again joins it
                    log.info("jupyter-ptcuda: the broker does not answer; job %s keeps its place, asking again",
                             request["id"])
                    await asyncio.sleep(self.retry_interval)
        finally:
            watcher.cancel()
        return Launched(r["id"], wire.spec_from_json(r["spec"]), r.get("fallback"))

    async def leave_queue(self, kind: str, id: str) -> None:
        """Take this user's waiting job out of the broker's line (op ``dequeue``; a container it started meanwhile
        is removed by the broker)."""
        await self._call("dequeue", timeout=60, kind=kind, id=id)

    async def queue_view(self) -> list[dict[str, Any]]:
        """The broker's GPU queue as this user may see it (``mine``, ``what``, ``place``, ``reason``, ...)."""
        return list(await self._call("queue", timeout=10))

    async def _relay_place(self, mine: str, on_pending: Callable[[str], None], interval: float = 2.0,
                           first: float | None = None) -> None:
        said = ""
        wait = interval if first is None else first
        while True:
            await asyncio.sleep(wait)
            wait = interval
            try:
                rows = await self.queue_view()
            except EngineUnavailable:
                continue
            for row in rows:
                if row.get("mine") and row.get("claim") == mine and row.get("reason") and row["reason"] != said:
                    said = row["reason"]
                    on_pending(said)

    def release(self, claim: str) -> None:
        """Nothing to do: under the broker a GPU claim lives exactly as long as its container."""

    async def run_once(self, spec: ContainerSpec, *, timeout: float = 300, claim: str | None = None,
                       gpu_fallback: str = "error") -> tuple[int, str, Launched]:
        r = await self._call("run_once", timeout=timeout + 60, request=request_of(spec), timeout_s=timeout,
                             gpu_fallback=gpu_fallback)
        return int(r["code"]), r["output"], Launched(r["id"], wire.spec_from_json(r["spec"]), r.get("fallback"))

    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        return wire.state_from_json(await self._call("inspect", cid=cid))

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> list[ContainerState]:
        rows = await self._call("list", kind=kind, id=id, server_id=server_id, running=running)
        found = [s for s in (wire.state_from_json(r) for r in rows) if s is not None]  # this Hub user's only
        return [s for s in found if owner_uid is None or s.tag.owner_uid == owner_uid]

    async def logs(self, cid: str, tail: int | str = "all") -> str:
        return str(await self._call("logs", cid=cid, tail=tail))

    async def log_bytes(self, cid: str) -> bytes:
        return base64.b64decode(await self._call("log_bytes", cid=cid))

    def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        return self._follow(cid, sink)

    async def _follow(self, cid: str, sink: Callable[[bytes], None] | None) -> AsyncIterator[bytes]:
        from urllib.parse import quote

        from tornado.httpclient import AsyncHTTPClient, HTTPClientError

        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def chunk(data: bytes) -> None:
            if sink is not None:
                sink(data)
            queue.put_nowait(data)

        async def fetch() -> None:
            try:
                await AsyncHTTPClient().fetch(f"{self.url}/v1/follow?cid={quote(cid)}", headers=self._headers(),
                                              streaming_callback=chunk, request_timeout=0)
            except HTTPClientError as exc:
                if exc.code != 404:
                    raise
            finally:
                queue.put_nowait(None)

        task = asyncio.ensure_future(fetch())
        try:
            while (data := await queue.get()) is not None:
                yield data
            await task
        finally:
            task.cancel()

    async def wait(self, cid: str) -> int:
        return int(await self._call("wait", timeout=0, cid=cid))

    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        r = await self._call("exec", timeout=0, cid=cid, cmd=list(cmd), env=env or {}, workdir=workdir,
                             stdin=base64.b64encode(stdin).decode() if stdin else None)
        return int(r["code"]), base64.b64decode(r["output"])

    def open_tty(self, target: ExecTarget, *, term: str, size: tuple[int, int] | None = None) -> TtySession:
        """A shell with a terminal in ``target``'s container, through the broker's ``/v1/tty`` websocket
        (:mod:`.remote_tty`): the broker builds the shell again from the container (only its id goes).
        What :func:`jupyter_ptcuda.shell.open_tty` uses here. Blocking."""
        from .tty import RemoteTty

        return RemoteTty.connect(self, target.container, term=term, size=size)

    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        await self._call("signal", cid=cid, signal=signal)

    async def remove(self, cid: str) -> None:
        await self._call("remove", cid=cid)

    def remove_soon(self, cid: str) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.remove(cid))

    async def image(self, ref: str) -> ImageInfo:
        return wire.image_from_json(await self._call("image", ref=ref))

    async def pull(self, ref: str, timeout: float, on_progress: Callable[[PullState], None] | None = None,
                   progress_interval: float = 0.5) -> None:
        # one request to the broker: its progress is not relayed (the notice says "being pulled")
        await self._call("pull", timeout=timeout + 30, ref=ref, timeout_s=timeout)

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        r = await self._call("spec_of", cid=cid)
        return wire.spec_from_json(r["spec"]), wire.image_from_json(r["image"])

    def list_hint(self, kind: str) -> str:
        return f"`jupyter ptcuda jobs list` ({kind}s through the JupyterHub broker)"

    async def cpu_seconds(self, cid: str) -> float | None:
        return None  # the broker watches idleness itself
