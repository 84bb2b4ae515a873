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
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..containers import labels as L
from ..containers import wire
from ..containers.build import Policy, Request, build
from ..containers.gpus import ALL
from ..containers.identity import Identity
from ..containers.ledger import GpuLedger
from ..containers.service import ContainerService, ContainerState
from ..containers.spec import ContainerSpec, parse_size
from ..errors import ConfigError, Conflict, Forbidden, NotFound
from . import users as U

if TYPE_CHECKING:
    from .app import PtcudaBroker
    from .idle import Reclaimer
    from .telemetry import Telemetry

log = logging.getLogger("jupyter_ptcuda.broker")

#: Kinds a user's server may ask for (netns holders are not offered: 'shared' needs a per-server holder).
CLIENT_KINDS = (L.KERNEL, L.JOB, L.HEALTH, L.PROBE)
NETWORKS = ("bridge", "none")


class Broker:
    def __init__(self, config: PtcudaBroker, service: ContainerService, ledger: GpuLedger) -> None:
        self.config = config
        self.service = service
        self.ledger = ledger
        self._launching: dict[int, asyncio.Lock] = {}
        self.reclaimer: Reclaimer | None = None  # set by the app when c.PtcudaBroker.idle_gpu_timeout is set
        self.telemetry: Telemetry = None  # type: ignore[assignment]  # set by the app

    # -- who ---------------------------------------------------------------------------------------
    def user(self, name: str) -> U.HubUser:
        c = self.config
        return U.resolve_user(name, c.user_map, c.user_resolver)

    def policy(self, user: U.HubUser) -> Policy:
        c = self.config
        return Policy(images=(), image_patterns=tuple(c.images), allow_built_images=False,
                      mount_roots=U.mount_roots(c.mount_roots, user), max_gpus=ALL,
                      max_mem=parse_size(c.max_mem, "c.PtcudaBroker.max_mem"), max_cpus=c.max_cpus,
                      allow_root=False, source="c.PtcudaBroker")

    async def _own(self, user: U.HubUser, cid: str) -> ContainerState:
        """The container ``cid`` if it is this user's; else NotFound (never saying whose it is)."""
        state = await self.service.inspect(str(cid)) if cid else None
        if state is None or state.tag.owner_uid != user.uid or state.tag.owner != user.name:
            raise NotFound(f"no container {str(cid)[:12]!r} of yours (Hub user {user.name!r}): list yours with "
                           "`jupyter ptcuda jobs list` or the kernels view.")
        return state

    def _claim(self, user: U.HubUser, claim: Any) -> str | None:
        return f"{user.name}/{claim}" if claim else None  # the ledger's claim under the broker

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
        return wire.image_to_json(await self.service.image(str(body["ref"])))

    async def op_pull(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        from ..containers.build import check_image

        check_image(str(body["ref"]), self.policy(user), None)
        await self.service.pull(str(body["ref"]), float(body.get("timeout_s") or 900))

    async def op_private_dir(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        path = await asyncio.to_thread(U.private_dir, self.config.private_root, user, str(body.get("kernel_id") or ""))
        return str(path)

    async def op_launch(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        spec, expected = await self._rebuild(user, wire.spec_from_json(body.get("spec") or {}))
        claim = self._claim(user, body.get("claim"))
        async with self._launching.setdefault(user.uid, asyncio.Lock()):  # quotas: one launch per user at a time
            await self._check_quotas(user, spec)
            launched = await self.service.launch(spec, claim=claim, gpu_fallback=str(body.get("gpu_fallback") or "error"),
                                                 assign_gpus=bool(body.get("assign_gpus", True)))
        await self._verify(launched.id, expected, claim)
        return {"id": launched.id, "spec": wire.spec_to_json(launched.spec), "fallback": launched.fallback}

    async def op_run_once(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        spec, expected = await self._rebuild(user, wire.spec_from_json(body.get("spec") or {}))
        claim = self._claim(user, body.get("claim"))
        async with self._launching.setdefault(user.uid, asyncio.Lock()):
            await self._check_quotas(user, spec)
            launched = await self.service.launch(spec, claim=claim, gpu_fallback=str(body.get("gpu_fallback") or "error"))
        try:
            await self._verify(launched.id, expected, claim)
        except BaseException:
            await self.service.remove(launched.id)
            if claim:
                self.service.release(claim)
            raise
        code, out = await self.service.finish_once(launched, timeout=float(body.get("timeout_s") or 300), claim=claim)
        return {"code": code, "output": out, "id": launched.id, "spec": wire.spec_to_json(launched.spec),
                "fallback": launched.fallback}

    async def _rebuild(self, user: U.HubUser, asked: ContainerSpec) -> tuple[ContainerSpec, dict[str, tuple[int, int]]]:
        """The spec the broker runs for what ``asked`` asks, and the (device, inode) of each host path mounted."""
        tag = L.Tag.read(asked.labels)
        if tag.kind not in CLIENT_KINDS:
            raise Forbidden(f"a container of kind {tag.kind or '(none)'!r} is not started through the broker "
                            f"(it starts {', '.join(CLIENT_KINDS)}).")
        if asked.ports:
            raise Forbidden("published ports are not offered through the broker: every local user could connect "
                            "to them. Use the kernel transport 'ipc' (c.ContainerOptions.transport, the default).")
        network = asked.network_mode
        if network not in NETWORKS:
            raise Forbidden(f"network_mode {network!r} is not offered through the broker (it offers "
                            f"{', '.join(NETWORKS)}): set c.ContainerOptions.network_mode = 'bridge'.")
        roots = self.policy(user).mount_roots
        expected: dict[str, tuple[int, int]] = {}
        private = ""
        if tag.kind == L.KERNEL and tag.kernel_dir:
            made = os.path.join(self.config.private_root, str(user.uid), U.check_kernel_id(tag.id))
            if tag.kernel_dir != made or not os.path.isdir(made):
                raise Forbidden(f"kernel folder {tag.kernel_dir!r} was not made by the broker for this kernel: ask "
                                "for it first (op private_dir).")
            private = made
        workdir = asked.workdir if asked.workdir and asked.workdir != asked.home else None
        mount_workdir = workdir is not None and any(
            m.source == workdir and m.target == workdir and not m.read_only for m in asked.mounts)
        mounts = []
        for m in asked.mounts:
            if m.source == private and m.target == private:
                continue
            if workdir and m.source == workdir and m.target == workdir and not m.read_only:
                continue  # the notebook folder: build mounts it again
            source, ident = await asyncio.to_thread(U.resolve_mount, m.source, roots, "mount")
            expected[m.target] = ident
            mounts.append(dataclasses.replace(m, source=source))
        if workdir is not None and mount_workdir:
            real, ident = await asyncio.to_thread(U.resolve_mount, workdir, roots, "notebook folder")
            expected[real], workdir = ident, real
        # GPUs only through the ledger: the NVIDIA runtime also reads NVIDIA_* from the environment (an
        # image's NVIDIA_VISIBLE_DEVICES=all, or a client's), which would hand out devices nobody assigned
        env = {k: v for k, v in asked.env.items() if not k.startswith("NVIDIA_")}
        if not asked.gpus.wanted:
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        request = Request(
            kind=tag.kind, image=asked.image, command=asked.command, run_as=user.user, workdir=workdir,
            mount_workdir=mount_workdir, gpus=asked.gpus, mounts=tuple(mounts), env=env,
            shm_size=asked.shm_size, mem_limit=asked.mem_limit, cpus=asked.cpus, pids_limit=asked.pids_limit,
            network_mode=network, id=tag.id, notebook=tag.notebook, name=asked.name,
            files=asked.files, private_dir=private,
        )
        identity = Identity(uid=user.uid, gid=user.gid, name=user.name, server_id=tag.server_id or f"hub:{user.name}",
                            server_pid=tag.server_pid or 0)
        return build(request, await self._image_policy(user, asked.image), identity), expected

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

    async def _check_quotas(self, user: U.HubUser, spec: ContainerSpec) -> None:
        c = self.config
        mine = await self.service.list(owner_uid=user.uid, running=True)
        mine = [s for s in mine if s.tag.owner == user.name]
        kind = spec.labels.get(L.KIND)
        if kind == L.KERNEL and c.max_kernels is not None:
            kernels = [s for s in mine if s.tag.kind == L.KERNEL]
            if len(kernels) >= c.max_kernels:
                raise Conflict(f"you have {len(kernels)} kernel(s) running and the operator's limit is "
                               f"c.PtcudaBroker.max_kernels = {c.max_kernels}: shut one down first (or ask the "
                               "operator to raise it).")
        if c.max_gpus is not None and spec.gpus.wanted:
            held = self.ledger.held_by(mine)
            asked = self.ledger.gpu_count() if spec.gpus.mode == "all" else spec.gpus.size
            if len(held) + asked > c.max_gpus:
                raise Conflict(f"you hold {len(held)} GPU(s) and ask for {asked} more ({spec.gpus.label()}), above the "
                               f"operator's quota c.PtcudaBroker.max_gpus = {c.max_gpus} per user: ask for fewer "
                               "(e.g. gpus 1), stop a kernel or job that holds one, or ask the operator.")

    async def _verify(self, cid: str, expected: dict[str, tuple[int, int]], claim: str | None) -> None:
        """After start: each mount is the folder that was checked (not one swapped in since); else the
        container is removed and the launch refused."""
        if not expected:
            return
        state = await self.service.inspect(cid)
        wrong = U.verify_mounts(state.pid, expected) if state is not None and state.pid else []
        if state is not None and state.running and not wrong:
            return
        if state is not None and not state.running:
            return  # it died on its own: the caller sees that (logs, exit code)
        await self.service.remove(cid)
        if claim:
            self.service.release(claim)
        log.warning("broker: container %s removed: %s changed between the check and the mount", cid[:12], wrong)
        raise Forbidden(f"{', '.join(wrong)} changed between the broker's check and the mount (a folder swapped for a "
                        "link?): the container was removed. Mount real folders inside your mount roots.")

    # -- watching and acting on one's own containers ----------------------------------------------
    async def op_inspect(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        try:
            return wire.state_to_json(await self._own(user, str(body.get("cid") or "")))
        except NotFound:
            return None

    async def op_list(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        kind = body.get("kind")
        if kind is not None and kind not in L.KINDS:
            raise ConfigError(f"unknown kind {kind!r}: one of {', '.join(L.KINDS)}.")
        found = await self.service.list(kind, id=body.get("id"), owner_uid=user.uid, server_id=body.get("server_id"),
                                        running=bool(body.get("running")))
        return [wire.state_to_json(s) for s in found if s.tag.owner == user.name]

    async def op_logs(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        return await self.service.logs(state.id, tail=body.get("tail", "all"))

    async def op_log_bytes(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        return base64.b64encode(await self.service.log_bytes(state.id)).decode()

    async def op_wait(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        return await self.service.wait(state.id)

    async def op_exec(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        cmd = body.get("cmd")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise ConfigError("exec: give cmd as a list of strings.")
        stdin = base64.b64decode(body["stdin"]) if body.get("stdin") else None
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        # as the container's own user (never one the client names)
        code, out = await self.service.exec(state.id, cmd, stdin=stdin, env=env or None, workdir=body.get("workdir") or None)
        return {"code": code, "output": base64.b64encode(out).decode()}

    async def op_signal(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        sig = body.get("signal", "SIGTERM")
        if not (isinstance(sig, int) or (isinstance(sig, str) and sig.startswith("SIG") and sig[3:].isalnum())):
            raise ConfigError(f"signal {sig!r}: give a name such as 'SIGINT' or a number.")
        await self.service.engine.kill(state.id, sig)  # the broker's own pidfds are not the client's business

    async def op_remove(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        try:
            state = await self._own(user, str(body.get("cid") or ""))
        except NotFound:
            return None  # gone (or never yours): nothing to remove
        await self.remove_container(state)
        return None

    async def remove_container(self, state: ContainerState) -> None:
        """Remove a container, and a kernel's private folder (op remove, idle reclamation)."""
        await self.service.remove(state.id)
        if state.tag.kind == L.KERNEL and state.tag.kernel_dir:
            await asyncio.to_thread(U.remove_private_dir, self.config.private_root, state.tag.kernel_dir)

    async def op_notices(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """What the broker did to this user's kernels (idle reclamation) since ``since`` (epoch s)."""
        reclaimer = self.reclaimer
        return reclaimer.since(user.name, float(body.get("since") or 0)) if reclaimer is not None else []

    async def op_gpus(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        """The broker's GPU telemetry for this user's server (others' holders as "another user")."""
        since = body.get("since")
        max_points = body.get("max_points")
        return await self.telemetry.view(user.name, float(since) if since is not None else None,
                                         int(max_points) if max_points is not None else None)

    async def op_release(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        claim = self._claim(user, body.get("claim"))
        if claim:
            self.service.release(claim)

    async def op_spec_of(self, user: U.HubUser, body: dict[str, Any]) -> Any:
        state = await self._own(user, str(body.get("cid") or ""))
        spec, image = await self.service.spec_of(state.id)
        return {"spec": wire.spec_to_json(spec), "image": wire.image_to_json(image)}

    async def follow(self, name: str, cid: str) -> AsyncIterator[bytes]:
        state = await self._own(self.user(name), cid)
        return self.service.follow(state.id)
