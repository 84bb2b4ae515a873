"""What the broker does for a Hub user: the container service's operations, each checked.

:meth:`Broker.call` dispatches ``op`` (``launch``, ``inspect``, ``list``, ``signal``, ``remove``, ...) for
the Hub user the request's token belongs to (resolved by :mod:`.app`). Launching rebuilds the client's
spec as a :class:`~jupyter_ptcuda.containers.build.Request` — only what a caller may ask (image, command,
folder, GPUs, mounts, env, limits, the kernel's files) — and runs it through the same pure
:func:`~jupyter_ptcuda.containers.build.build` under the broker's policy and the user's identity; the
client's user, labels, ports and host paths it did not get from the broker are not taken.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..containers import labels as L
from ..containers import wire
from ..containers.build import FORBIDDEN_SOURCES, Policy, Request, build
from ..containers.dispatch import GpuQueue
from ..containers.docker.service import DockerContainerService
from ..containers.gpus import NONE, GpuRequest
from ..containers.identity import Identity
from ..containers.ledger import GpuLedger
from ..containers.spec import ContainerSpec, spec_with_logical_mounts
from ..containers.types import ContainerState, Launched
from ..errors import ConfigError, Conflict, Forbidden, GpuUnavailable, NotFound, TooBusy
from . import inputs as I
from . import mounts as M
from . import users as U
from .limits import UserLimits
from .policy import BrokerPolicy
from .waiting import JobLine, WaitingStore, check_key

if TYPE_CHECKING:
    from .idle import Reclaimer
    from .telemetry import Telemetry

log = logging.getLogger("jupyter_ptcuda.broker")

#: Kinds a user's server may ask for (netns holders are not offered: 'shared' needs a per-server holder).
CLIENT_KINDS = (L.KERNEL, L.JOB, L.HEALTH, L.PROBE, L.SERVE)
#: Kinds with a private folder made by the broker (a kernel's ipc sockets, a model server's socket).
PRIVATE_KINDS = (L.KERNEL, L.SERVE)
NETWORKS = ("bridge", "none")


class Broker:
    def __init__(self, policy: BrokerPolicy, service: DockerContainerService, ledger: GpuLedger) -> None:
        self.config = policy
        self.service = service
        self.ledger = ledger
        self._launching: dict[int, asyncio.Lock] = {}
        self.limits = UserLimits(policy.max_long_calls, policy.max_terminals)
        self.staging = M.Staging(os.path.join(policy.private_root, "staging", str(os.getpid())))
        self.reclaimer: Reclaimer | None = None  # set by the app when c.PtcudaBroker.idle_gpu_timeout is set
        self.telemetry: Telemetry = None  # type: ignore[assignment]  # set by the app
        #: The GPU queue across users (c.GpuQueue.*; set by the app): requests that wait for held GPUs.
        self.queue: GpuQueue | None = None
        #: Jobs waiting in that queue, kept across restarts and hang-ups (:mod:`.waiting`; set by the app).
        self.jobs: JobLine = None  # type: ignore[assignment]

    def keep_waiting_jobs(self, store: WaitingStore, max_per_user: int = 100) -> JobLine:
        """Waiting jobs saved in ``store`` (the app: ``c.PtcudaBroker.queue_db``), at most ``max_per_user`` each;
        :meth:`JobLine.reload` at start."""
        self.jobs = JobLine(store, self._start, self.find_job, self.user, max_per_user=max_per_user)
        return self.jobs

    # -- who ---------------------------------------------------------------------------------------
    def user(self, name: str) -> U.HubUser:
        return self.config.user(name)

    def policy(self, user: U.HubUser) -> Policy:
        return self.config.for_user(user)

    async def _own(self, user: U.HubUser, cid: str) -> ContainerState:
        """The container ``cid`` if it is this user's; else NotFound (never saying whose it is)."""
        state = await self.service.inspect(cid) if cid else None
        if state is None or state.tag.owner_uid != user.uid or state.tag.owner != user.name:
            raise NotFound(f"no container {str(cid)[:12]!r} of yours (Hub user {user.name!r}): list yours with "
                           "`jupyter ptcuda jobs list` or the kernels view.")
        return state

    # -- dispatch ----------------------------------------------------------------------------------
    async def call(self, name: str, op: str, body: dict[str, Any]) -> Any:
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise NotFound(f"the broker has no operation {op!r}.")
        return await handler(self.user(name), body)

    async def op_whoami(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        return {"name": user.name, "uid": user.uid, "gid": user.gid,
                "mount_roots": list(self.policy(user).mount_roots), "images": list(self.config.images)}

    async def op_ping(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        return await self.service.ping()

    async def op_image(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """An image's labels and environment: only for an image the user's policy allows (403 otherwise, as
        for a launch), so no user reads what other images on the engine carry."""
        from ..containers.build import check_image

        ref = I.text(body, "ref", limit=512)
        check_image(ref, await self._image_policy(user, ref), None)
        return wire.image_to_json(await self.service.image(ref))

    async def op_pull(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        from ..containers.build import check_image

        ref = I.text(body, "ref", limit=512)
        check_image(ref, self.policy(user), None)
        with self.limits.long_call(user.name):
            await self.service.pull(ref, I.number(body, "timeout_s", default=900, minimum=1, maximum=6 * 3600))

    async def op_private_dir(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """The kernel's ipc folder (one per kernel id: asking again gives the same one). At most
        ``c.PtcudaBroker.max_private_dirs`` per user: past it the folders of kernels that no longer have a
        container are removed first, and only then is the call refused (429)."""
        kernel_id = U.check_kernel_id(I.text(body, "kernel_id", limit=64))
        root, cap = self.config.private_root, int(self.config.max_private_dirs)
        if await asyncio.to_thread(U.count_private_dirs, root, user, kernel_id) >= cap:
            alive = {s.tag.id for s in await self.service.list(owner_uid=user.uid)
                     if s.tag.owner == user.name and s.tag.kind in PRIVATE_KINDS}
            await asyncio.to_thread(U.sweep_private_dirs, root, user, keep=alive)
            if await asyncio.to_thread(U.count_private_dirs, root, user, kernel_id) >= cap:
                raise TooBusy(f"you have {cap} kernel folders at the broker (c.PtcudaBroker.max_private_dirs): shut a "
                              "kernel down first.")
        path = await asyncio.to_thread(U.private_dir, root, user, kernel_id)
        return str(path)

    async def op_launch(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """Start the container the user's ``request`` asks for, built here (:meth:`_start`). A job that may wait
        for GPUs (``wait_for_gpus``) joins its durable place in line (:mod:`.waiting`): this returns its
        container once it has started, and a caller that hangs up leaves it in line."""
        key = self._job_key(body)
        if key is not None:
            await self._prepare(user, body, wait=True)  # the refusals now, before anything is kept
            launched = await self.jobs.join(user, key, self._durable(body))
        else:
            launched = await self._start(user, body)
        return self._launched(launched)

    async def op_enqueue(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """Put a job that asks for GPUs in the broker's durable line (:mod:`.waiting`), keyed by its id; returns
        at once: ``{"queued": true}`` while it waits (op ``queue`` says where), or its container (it started at
        once, or had started already: asking again never starts a second one). Refusals (the policy, a
        request that can never be met) come now, and nothing is kept."""
        data = body.get("request")
        request = wire.request_from_json(data)
        if request.kind != L.JOB:
            raise Forbidden("only a job waits in the broker's durable GPU queue (a kernel waits in op launch with "
                            "wait_for_gpus as long as its server does).")
        key = check_key(request.id)
        await self._prepare(user, body, wait=True)  # the refusals now, before anything is kept
        launched = await self.jobs.enqueue(user, key, self._durable(body))
        return {"queued": True} if launched is None else self._launched(launched)

    async def op_dequeue(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """Take one of this user's waiting jobs out of line (cancelled): ``{"kind": "job", "id": ...}``. A
        container it had started meanwhile is removed. Another user's job is never touched (it is not found)."""
        key = check_key(I.text(body, "id", limit=64))
        waited = await self.jobs.leave(user, key)
        for state in await self.service.list(L.JOB, id=key, owner_uid=user.uid):
            if state.tag.owner == user.name:
                await self.remove_container(state)
        return {"removed": waited}

    def _launched(self, launched: Launched) -> dict[str, Any]:
        return {"id": launched.id, "spec": wire.spec_to_json(self._shown(launched.spec)), "fallback": launched.fallback}

    @staticmethod
    def _job_key(body: dict[str, Any]) -> str | None:
        """The key of a job launch that may wait (its job id), or None for any other launch."""
        data = body.get("request")
        if not I.flag(body, "wait_for_gpus") or not isinstance(data, dict) or data.get("kind") != L.JOB:
            return None
        return check_key(str(data.get("id") or ""))

    @staticmethod
    def _durable(body: dict[str, Any]) -> dict[str, Any]:
        """What is kept of a waiting job's launch: its request and fallback (nothing else the caller sent)."""
        return {"request": body.get("request"), "gpu_fallback": body.get("gpu_fallback") or "error",
                "wait_for_gpus": True}

    async def find_job(self, user: U.HubUser, key: str) -> Launched | None:
        """The container of ``user``'s job ``key`` (by its labels), if it exists."""
        for state in await self.service.list(L.JOB, id=key, owner_uid=user.uid):
            if state.tag.owner == user.name:
                spec, _ = await self.service.spec_of(state.id)
                return Launched(state.id, spec, None)
        return None

    async def op_run_once(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        timeout = I.number(body, "timeout_s", default=300, minimum=1, maximum=24 * 3600)
        with self.limits.long_call(user.name):
            launched = await self._start(user, body)
            code, out = await self.service.finish_once(launched, timeout=timeout)
        return {"code": code, "output": out, "id": launched.id, "spec": wire.spec_to_json(self._shown(launched.spec)),
                "fallback": launched.fallback}

    async def _prepare(self, user: U.HubUser, body: dict[str, Any], *, wait: bool = False
                       ) -> tuple[Request, Policy, ContainerSpec, str, str]:
        """Parse the request and build the container under the broker's policy and the Hub identity: (request,
        policy, spec, private folder, gpu fallback); the policy's refusals, and, for a request that would wait
        (``wait``), the GPU queue's refusal of one that can never be met."""
        data = body.get("request")
        request = wire.request_from_json(data)
        server_id, server_pid = wire.request_identity(data or {})
        fallback = I.choice(body, "gpu_fallback", ("error", "cpu"), default="error")
        if request.kind not in CLIENT_KINDS:
            raise Forbidden(f"a container of kind {request.kind!r} is not started through the broker "
                            f"(it starts {', '.join(CLIENT_KINDS)}).")
        if request.network_mode not in NETWORKS:
            raise Forbidden(f"network_mode {request.network_mode!r} is not offered through the broker (it offers "
                            f"{', '.join(NETWORKS)}): set c.ContainerOptions.network_mode = 'bridge'.")
        if request.files and request.kind != L.KERNEL:
            raise Forbidden("only a kernel's container gets files from its server (its connection file).")
        policy = await self._image_policy(user, request.image)
        identity = Identity(uid=user.uid, gid=user.gid, name=user.name, server_id=server_id or f"hub:{user.name}",
                            server_pid=server_pid)
        max_pids = int(self.config.max_pids)
        if request.kind == L.SERVE and request.network_mode != "none":
            raise Forbidden("a model server gets no network through the broker: it answers on a Unix socket in its "
                            "private folder (network_mode 'none'); update jupyter-ptcuda on the user's server.")
        private = ""
        if request.kind in PRIVATE_KINDS and request.id:
            made = os.path.join(self.config.private_root, str(user.uid), U.check_kernel_id(request.id))
            private = made if await asyncio.to_thread(os.path.isdir, made) else ""
        mem = request.mem_limit or policy.max_mem
        request = dataclasses.replace(
            request, run_as=user.user, private_dir=private, image_labels=None,
            env={k: v for k, v in request.env.items() if not k.startswith("NVIDIA_")},
            mem_limit=mem, cpus=request.cpus or policy.max_cpus, pids_limit=request.pids_limit or max_pids,
            # /dev/shm is memory of the container's own: never more than its memory limit
            shm_size=min(request.shm_size or 2 * 1024**3, mem or 2 * 1024**3))
        if request.pids_limit and request.pids_limit > max_pids:
            raise Forbidden(f"pids_limit {request.pids_limit} is above the operator's limit c.PtcudaBroker.max_pids = "
                            f"{max_pids}; ask for at most that.")
        spec = build(request, policy, identity)  # refusals first: nothing is opened or claimed for a bad request
        if wait and self.queue is not None:
            self.queue.check(user.name, spec.gpus)  # never satisfiable: refused now (400), never kept waiting
        return request, policy, spec, private, fallback

    async def _start(self, user: U.HubUser, body: dict[str, Any], *, submitted: float | None = None,
                     on_wait: Callable[[str], None] | None = None, key: str | None = None) -> Launched:
        """Build the container (:meth:`_prepare`), assign its GPUs (always, whatever the client sent; a request
        that may wait, in the GPU queue: ``submitted`` its first time in line, ``on_wait`` hears its place), stage
        its folders (:mod:`.mounts`) and start it. ``key``: a waiting job's id; if its container exists already,
        that one is returned (never a second)."""
        wait = I.flag(body, "wait_for_gpus")
        request, policy, spec, private, fallback = await self._prepare(user, body, wait=wait)
        claim = f"{user.name}/{request.kind}/{request.id or secrets.token_hex(6)}"
        staging = self.staging
        staged: list[str] = []
        fds: list[int] = []
        try:
            # GPUs first, outside the user's launch lock: a request waiting in the queue holds up nothing else
            gpus, why = await self._assign(user, claim, spec.gpus, fallback, wait=wait,
                                           what=f"{request.kind} {request.id}".strip(), submitted=submitted,
                                           on_wait=on_wait)
            async with self._launching.setdefault(user.uid, asyncio.Lock()):  # quotas: one launch per user at a time
                if key is not None and (found := await self.find_job(user, key)) is not None:
                    return found  # a waiting job started already (a broker killed before it forgot the row)
                await self._check_kernels(user, spec)
                spec = spec.with_gpus(gpus)
                env = dict(spec.env)
                env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpus.ids) if gpus.wanted else "void"
                mounts, logical = [], []
                for m in spec.mounts:
                    if private and m.source == private:
                        mounts.append(m)
                        continue
                    what = "notebook folder" if m.source == spec.workdir else "mount"
                    path, fd = await asyncio.to_thread(M.open_beneath, m.source, policy.mount_roots, FORBIDDEN_SOURCES, what)
                    fds.append(fd)
                    staged.append(await asyncio.to_thread(staging.stage, fd))
                    mounts.append(dataclasses.replace(m, source=staged[-1]))
                    logical.append([path, m.target])
                labels = {**spec.labels, L.MOUNTS: json.dumps(logical)} if logical else dict(spec.labels)
                spec = dataclasses.replace(spec, env=env, mounts=tuple(mounts), labels=labels)
                launched = await self.service.launch(spec, gpu_fallback=fallback, assign_gpus=False)
        finally:
            self.ledger.release(claim)  # from now on the container's label is the claim: it lives as long as it runs
            if staged:
                await asyncio.to_thread(staging.release, staged)
            for fd in fds:
                os.close(fd)
        return launched._replace(fallback=launched.fallback or why)

    @staticmethod
    def _shown(spec: ContainerSpec) -> ContainerSpec:
        """The spec as its user reads it: the folders they asked for, not the broker's staging paths."""
        return spec_with_logical_mounts(spec)

    async def _assign(self, user: U.HubUser, claim: str, gpus: GpuRequest, fallback: str, *, wait: bool = False,
                      what: str = "", submitted: float | None = None,
                      on_wait: Callable[[str], None] | None = None) -> tuple[GpuRequest, str | None]:
        """The canonical device indexes this container gets (or NONE), from the broker's ledger; refused when
        they do not exist or pass the user's quota for good. Held ones: with ``wait`` (a job or kernel whose
        server waits for it) the request joins the broker's GPU queue (fair across users, :mod:`...containers.
        dispatch`) and this returns when the queue grants it; otherwise refused (409)."""
        if not gpus.wanted:
            return gpus, None
        await self.ledger.ready()
        if not self.ledger.gpu_count():
            if fallback == "cpu":
                return NONE, "the broker sees no GPU on this host (NVML): started without GPUs (gpu_fallback='cpu')."
            raise GpuUnavailable("GPUs were requested but the broker sees no GPU on this host (NVML): ask for gpus 'none', "
                                 "or ask the operator to check the NVIDIA driver.")
        wanted = self.ledger.canonical(gpus)
        queue = self.queue
        if wait and queue is not None and queue.enabled and wanted.mode in ("count", "ids"):
            return await queue.acquire(claim, user.name, wanted, on_wait=on_wait, what=what, submitted=submitted), None
        c = self.config
        mine = [s for s in await self.service.list(owner_uid=user.uid, running=True) if s.tag.owner == user.name]
        held = self.ledger.held_by(mine)
        if c.max_gpus is not None and wanted.mode == "count" and len(held) + wanted.count > c.max_gpus:
            raise Conflict(self._quota(held, wanted.count, gpus))
        got = await self.ledger.assign(claim, wanted, free_all=True, viewer=user.name)
        if c.max_gpus is not None and len(held | set(got.ids)) > c.max_gpus:
            self.ledger.release(claim)
            raise Conflict(self._quota(held, len(got.ids), gpus))
        return got, None

    def _quota(self, held: set[str], asked: int, gpus: GpuRequest) -> str:
        return (f"you hold {len(held)} GPU(s) and ask for {asked} more ({gpus.label()}), above the operator's quota "
                f"c.PtcudaBroker.max_gpus = {self.config.max_gpus} per user: ask for fewer (e.g. gpus 1), stop a kernel "
                "or job that holds one, or ask the operator.")

    async def _image_policy(self, user: U.HubUser, image: str) -> Policy:
        """The user's policy; a job pinned to an image id or digest is allowed when a tag of that image is."""
        from ..containers.policy import image_allowed

        policy = self.policy(user)
        if image.startswith("sha256:") or "@sha256:" in image:
            try:
                info = await self.service.engine.image(image)
            except NotFound:
                return policy  # refused below, saying which patterns are allowed
            names = [*(info.get("RepoTags") or []), *(info.get("RepoDigests") or [])]
            if any(image_allowed(n, configured=(), patterns=policy.image_patterns, allow_built=False) for n in names):
                policy = dataclasses.replace(policy, images=(image,))
        return policy

    async def _check_kernels(self, user: U.HubUser, spec: ContainerSpec) -> None:
        c = self.config
        if spec.labels.get(L.KIND) != L.KERNEL:
            return
        mine = await self.service.list(L.KERNEL, owner_uid=user.uid, running=True)
        kernels = [s for s in mine if s.tag.owner == user.name]
        if len(kernels) >= c.max_kernels:
            raise Conflict(f"you have {len(kernels)} kernel(s) running and the operator's limit is "
                           f"c.PtcudaBroker.max_kernels = {c.max_kernels}: shut one down first (or ask the "
                           "operator to raise it).")

    # -- watching and acting on one's own containers ----------------------------------------------
    async def op_inspect(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        try:
            return wire.state_to_json(await self._own(user, I.cid(body)))
        except NotFound:
            return None

    async def op_list(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        kind = body.get("kind")
        if kind is not None and kind not in L.KINDS:
            raise ConfigError(f"unknown kind {str(kind)[:40]!r}: one of {', '.join(L.KINDS)}.")
        found = await self.service.list(kind, id=I.text(body, "id", limit=128) or None, owner_uid=user.uid,
                                        server_id=I.text(body, "server_id", limit=256) or None,
                                        running=I.flag(body, "running"))
        return [wire.state_to_json(s) for s in found if s.tag.owner == user.name]

    async def op_logs(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        return await self.service.logs(state.id, tail=I.tail(body))

    async def op_log_bytes(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        return base64.b64encode(await self.service.log_bytes(state.id)).decode()

    async def op_wait(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        with self.limits.long_call(user.name):
            return await self.service.wait(state.id)

    async def op_exec(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        cmd = I.strings(body, "cmd")
        stdin = I.b64(body, "stdin")
        env = I.env(body)
        workdir = I.text(body, "workdir") or None
        if workdir is not None and not workdir.startswith("/"):
            raise ConfigError("workdir: give an absolute path inside the container.")
        with self.limits.long_call(user.name):
            # as the container's own user (never one the client names)
            code, out = await self.service.exec(state.id, cmd, stdin=stdin, env=env or None, workdir=workdir)
        return {"code": code, "output": base64.b64encode(out).decode()}

    async def op_signal(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        await self.service.engine.kill(state.id, I.signal(body))  # the broker's own pidfds are not the client's business

    async def op_remove(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        try:
            state = await self._own(user, I.cid(body))
        except NotFound:
            return None  # gone (or never yours): nothing to remove
        await self.remove_container(state)
        return None

    async def remove_container(self, state: ContainerState) -> None:
        """Remove a container, and a kernel's private folder (op remove, idle reclamation); the GPU queue looks
        again (its GPUs are free)."""
        await self.service.remove(state.id)
        if self.queue is not None:
            self.queue.kick()
        if state.tag.kind in PRIVATE_KINDS and state.tag.kernel_dir:
            await asyncio.to_thread(U.remove_private_dir, self.config.private_root, state.tag.kernel_dir)

    async def op_notices(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """What the broker did to this user's kernels (idle reclamation) since ``since`` (epoch s)."""
        reclaimer = self.reclaimer
        since = I.number(body, "since", default=0.0)
        return reclaimer.since(user.name, since) if reclaimer is not None else []

    async def op_gpus(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """The broker's GPU telemetry for this user's server (others' holders as "another user")."""
        since = body.get("since")
        return await self.telemetry.view(user.name, I.number(body, "since") if since is not None else None,
                                         I.integer(body, "max_points", minimum=1, maximum=100_000))

    async def op_queue(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """The broker's GPU queue in order, as ``user`` may see it: their own requests with what and why, every
        other user's as "another user" (no id, no notebook, no reason)."""
        if self.queue is None:
            return []
        rows = sorted(self.queue.view().items(), key=lambda kv: kv[1]["place"])
        out = []
        for claim, row in rows:
            mine = row["owner"] == user.name
            out.append({"mine": mine, "what": row["what"] if mine else "another user",
                        "claim": claim.split("/", 1)[1] if mine else "", "place": row["place"],
                        "reason": row["reason"] if mine else "", "waited_s": row["waited_s"], "gpus": row["gpus"]})
        return out

    async def op_release(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """Nothing to release: a GPU claim lives exactly as long as its container (kept for older servers)."""
        return None

    async def op_spec_of(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, I.cid(body))
        spec, image = await self.service.spec_of(state.id)
        return {"spec": wire.spec_to_json(spec_with_logical_mounts(spec)), "image": wire.image_to_json(image)}

    async def follow(self, name: str, cid: str) -> AsyncIterator[bytes]:
        state = await self._own(self.user(name), I.cid({"cid": cid}))
        return self.service.follow(state.id)
