"""A node for the in-memory API server (:mod:`.fakeapi`): a scheduler and a kubelet that run each pod's
container for real on the local Docker engine, so a kernel pod is a real kernel the server reaches.

What it does as a real node does, for what the backend and the provisioner depend on:

- **Scheduler**: a pod whose resource requests exceed the node's ``capacity`` (e.g. no
  ``nvidia.com/gpu``) stays Pending, with a ``FailedScheduling`` Warning event worded as the real
  scheduler's (``0/1 nodes are available: 1 Insufficient nvidia.com/gpu.``); else it gets ``nodeName``.
- **Kubelet**: Pending with ``waiting: ContainerCreating`` while volumes are set up; a secret volume
  whose Secret does not exist yet waits (``FailedMount`` event after a while, as the kubelet retries);
  the Secret's items are placed at the mount path, owned by root and the pod's ``fsGroup``, with their
  modes (a real kubelet uses a tmpfs; here they are written into the container before start, read-only
  is not enforced); ``emptyDir`` = a host folder (0777) shared by the pod's containers; a
  ``persistentVolumeClaim`` = a host folder the test maps. Init containers run first, one after the
  other, each to its end (a failed one fails the pod).
  The container runs with the pod's ``args``, ``workingDir``, ``env``, runAsUser/runAsGroup (+ fsGroup
  as a supplementary group), capabilities dropped, no-new-privileges, memory/CPU limits. Running:
  ``podIP`` = the container's bridge IP, ``containerStatuses[].state.running``; ended: ``terminated``
  with the exit code and reason (``Completed`` / ``Error`` / ``OOMKilled``), phase Succeeded/Failed
  (restartPolicy Never). Its output becomes the pod's log.
- **Deletion**: a pod marked with a ``deletionTimestamp`` has its container stopped as a kubelet does
  (SIGTERM, SIGKILL at the grace period -- capped at :attr:`Node.max_grace` seconds here, so a test does not
  wait 30 s for a PID 1 that ignores SIGTERM), its end recorded, then the pod deleted for good; its
  container is removed.

Not done: image pulls (an absent image: ``ErrImagePull``), probes, restarts, networking beyond Docker's bridge.
"""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from typing import Any

from .fakeapi import FakeKube, now

LABEL = "io.jupyter-ptcuda.kind"  # so the leftover checks (docker ps --filter label=...kind) see them
VALUE = "test-kubelet"
NODE_LABEL = "io.jupyter-ptcuda.test-node"  # which Node made it: leftovers are this node's only


def _quantity(text: str) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for suffix, mult in sorted(units.items(), key=lambda u: -len(u[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mult
    return float(text)


class Node:
    def __init__(self, fake: FakeKube, *, capacity: dict[str, str] | None = None, name: str = "node-1",
                 claims: dict[str, str] | None = None, mount_wait: float = 3.0, max_grace: float = 3.0) -> None:
        import docker

        self.fake = fake
        self.name = name
        self.capacity = {"cpu": "16", "memory": "64Gi", **(capacity or {})}
        self.claims = claims or {}  # claimName -> host folder
        self.mount_wait = mount_wait  # seconds before a missing Secret is reported (FailedMount)
        self.max_grace = max_grace  # the longest a deleted pod's container gets between SIGTERM and SIGKILL here
        self._ending: dict[str, asyncio.Task] = {}  # pod uid -> its container being stopped (graceful deletion)
        self.api = docker.from_env(timeout=120).api
        self.containers: dict[str, str] = {}  # pod uid -> container id
        self._busy: set[str] = set()  # pod uids being started
        self._stuck: set[str] = set()  # pod uids that cannot start here (unschedulable, no image): left Pending
        self._said: set[tuple[str, str]] = set()  # (pod uid, reason) events already sent
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._logs: dict[str, int] = {}
        self.root = tempfile.mkdtemp(prefix="ptcuda-kubelet-")  # emptyDirs
        self.id = os.path.basename(self.root)  # unique on this host

    # -- the loop -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.fake.nodes.append(self)
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stop after the sync in progress (a removal half done would leave a container), then remove
        every container still running, as a node drained."""
        self._stopping = True
        if self._task:
            await self._task
        while self._busy:
            await asyncio.sleep(0.05)
        await asyncio.gather(*self._ending.values(), return_exceptions=True)
        if self in self.fake.nodes:
            self.fake.nodes.remove(self)
        for cid in list(self.containers.values()):
            await asyncio.to_thread(self._remove, cid)
        self.containers.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    async def add_capacity(self, resource: str, quantity: str) -> None:
        """The node gets more of ``resource`` (a GPU freed, a bigger node added by the autoscaler): the
        scheduler tries its unschedulable pods again, as a real one does when capacity changes."""
        self.capacity[resource] = quantity
        for uid, pod in self._pods().items():
            if uid in self._stuck and not pod["spec"].get("nodeName"):
                self._stuck.discard(uid)
        async with self.fake.changed:
            self.fake.changed.notify_all()

    def leftovers(self) -> list[dict]:
        """This node's containers still on the engine (not another test's node, on a shared engine)."""
        return self.api.containers(all=True, filters={"label": [f"{LABEL}={VALUE}", f"{NODE_LABEL}={self.id}"]})

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - a node keeps going; the test sees the pod's state
                print(f"kubelet: {exc!r}")
            async with self.fake.changed:
                try:
                    await asyncio.wait_for(self.fake.changed.wait(), 0.3)
                except TimeoutError:
                    pass

    def _pods(self) -> dict[str, dict]:
        return {o["metadata"]["uid"]: o for (p, _), o in self.fake.objects.items() if p == "pods"}

    async def sync(self) -> None:
        pods = self._pods()
        for uid, cid in list(self.containers.items()):
            pod = pods.get(uid)
            if pod is None:  # deleted: its container goes, and its emptyDirs
                del self.containers[uid]
                await asyncio.to_thread(self._remove, cid)
                shutil.rmtree(os.path.join(self.root, uid), ignore_errors=True)
                continue
            if pod["metadata"].get("deletionTimestamp"):
                if uid not in self._ending:
                    self._ending[uid] = asyncio.ensure_future(self._end(pod, cid))
                continue
            try:  # one pod's trouble does not stop the node from looking after the others
                await self._observe(pod, cid)
            except Exception as exc:  # noqa: BLE001 - said; the pod is looked at again at the next sync
                print(f"kubelet: pod {pod['metadata']['name']}: {exc!r}")
                if "404" in str(exc) and ("pods", pod["metadata"]["name"]) in self.fake.objects:
                    del self.containers[uid]  # its container vanished: the pod has failed, as a kubelet reports it
                    await self._status(pod["metadata"]["name"], {"phase": "Failed", "reason": "ContainerStatusUnknown"})
        for uid, pod in pods.items():  # deleted before its container was made: nothing to stop
            if pod["metadata"].get("deletionTimestamp") and uid not in self.containers and uid not in self._busy \
                    and uid not in self._ending and ("pods", pod["metadata"]["name"]) in self.fake.objects:
                await self.fake.drop("pods", pod["metadata"]["name"])
        for uid, pod in pods.items():
            if (not self._stopping and uid not in self.containers and uid not in self._busy and uid not in self._stuck
                    and (pod.get("status") or {}).get("phase")
                    == "Pending" and pod.get("spec", {}).get("containers")):
                self._busy.add(uid)
                asyncio.ensure_future(self._start(pod))

    # -- scheduling ---------------------------------------------------------------------------------
    def _unschedulable(self, pod: dict) -> str | None:
        short = []
        for c in pod["spec"]["containers"]:
            res = c.get("resources") or {}
            for name, qty in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                have = self.capacity.get(name)
                if have is None or _quantity(str(qty)) > _quantity(have):
                    short.append(name)
        if not short:
            return None
        return "0/1 nodes are available: " + ", ".join(f"1 Insufficient {n}" for n in sorted(set(short))) + \
            ". preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."

    async def _say(self, pod: dict, reason: str, message: str, type: str = "Warning") -> None:
        key = (pod["metadata"]["uid"], reason)
        if key not in self._said:
            self._said.add(key)
            await self.fake.event(pod["metadata"]["name"], reason, message, type=type)

    async def _status(self, name: str, status: dict) -> None:
        if ("pods", name) in self.fake.objects:
            await self.fake.modify("pods", name, lambda o: o["status"].update(status))

    # -- starting -----------------------------------------------------------------------------------
    async def _start(self, pod: dict) -> None:
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        try:
            why = self._unschedulable(pod)
            if why:
                await self._say(pod, "FailedScheduling", why)
                await self._status(name, {"conditions": [{"type": "PodScheduled", "status": "False",
                                                          "reason": "Unschedulable", "message": why}]})
                self._stuck.add(uid)  # stays Pending (nothing frees capacity on this node)
                return
            if not pod["spec"].get("nodeName"):
                await self.fake.modify("pods", name, lambda o: o["spec"].update(nodeName=self.name))
                await self._say(pod, "Scheduled", f"Successfully assigned {self.fake.namespace}/{name} to {self.name}",
                                type="Normal")
            c = pod["spec"]["containers"][0]
            await self._status(name, {"conditions": [{"type": "PodScheduled", "status": "True"}],
                                      "containerStatuses": [{"name": c["name"], "ready": False, "restartCount": 0,
                                                             "image": c["image"], "imageID": "",
                                                             "state": {"waiting": {"reason": "ContainerCreating"}}}]})
            if not await self._secrets_there(pod):
                return
            if not await asyncio.to_thread(self._image_present, c["image"]):
                await self._say(pod, "Failed", f'Failed to pull image "{c["image"]}": not present on this node')
                await self._status(name, {"containerStatuses": [{"name": c["name"], "ready": False, "restartCount": 0,
                                          "image": c["image"], "imageID": "",
                                          "state": {"waiting": {"reason": "ErrImagePull"}}}]})
                self._stuck.add(uid)
                return
            for n, ic in enumerate(pod["spec"].get("initContainers") or []):  # one after the other, to the end
                icid = await asyncio.to_thread(self._create, pod, ic, self._secret_files(pod, ic), f"init-{n}")
                try:
                    code = await asyncio.to_thread(lambda c=icid: (self.api.start(c), self.api.wait(c))[1]["StatusCode"])
                    logs = await asyncio.to_thread(self.api.logs, icid)
                finally:
                    await asyncio.to_thread(self._remove, icid)
                status = {"name": ic["name"], "ready": code == 0, "restartCount": 0, "image": ic["image"], "imageID": "",
                          "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                   "message": logs.decode(errors="replace")[-500:]}}}
                await self._status(name, {"initContainerStatuses": [status]})
                if code != 0:  # restartPolicy Never: the pod has failed
                    await self._status(name, {"phase": "Failed", "reason": "", "message": ""})
                    self._stuck.add(uid)
                    return
            cid = await asyncio.to_thread(self._create, pod, c, self._secret_files(pod, c), "main")
            if ("pods", name) not in self.fake.objects or self._pods().get(uid) is None:  # deleted meanwhile
                await asyncio.to_thread(self._remove, cid)
                return
            self.containers[uid] = cid
            info = await asyncio.to_thread(self._run, cid)
            ip = info["NetworkSettings"]["IPAddress"]
            await self._say(pod, "Started", f"Started container {c['name']}", type="Normal")
            if not info["State"].get("Running"):  # ended already (before it had an IP): report its end, not Running
                state = await asyncio.to_thread(self.api.inspect_container, cid)
                self.fake.logs[name] = await asyncio.to_thread(lambda: self.api.logs(cid, stdout=True, stderr=True))
                code = int(state["State"].get("ExitCode") or 0)
                why = "OOMKilled" if state["State"].get("OOMKilled") else "Completed" if code == 0 else "Error"
                await self._status(name, {
                    "phase": "Succeeded" if code == 0 else "Failed", "hostIP": "192.0.2.2", "startTime": now(),
                    "containerStatuses": [{"name": c["name"], "ready": False, "started": False, "restartCount": 0,
                                           "image": c["image"], "imageID": "docker-pullable://" + info["Image"],
                                           "containerID": "docker://" + cid, "state": {"terminated": {
                                               "exitCode": code, "reason": why, "startedAt": now(),
                                               "finishedAt": now(), "containerID": "docker://" + cid}}}]})
                return
            await self._status(name, {
                "phase": "Running", "hostIP": "192.0.2.2", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now(),
                "containerStatuses": [{"name": c["name"], "ready": True, "started": True, "restartCount": 0,
                                       "image": c["image"], "imageID": "docker-pullable://" + info["Image"],
                                       "containerID": "docker://" + cid,
                                       "state": {"running": {"startedAt": now()}}}]})
        finally:
            self._busy.discard(uid)

    async def _secrets_there(self, pod: dict) -> bool:
        """Wait (the kubelet retries the mount) until every secret volume's Secret exists; False if the
        pod is deleted meanwhile."""
        began = time.monotonic()
        for vol in pod["spec"].get("volumes") or []:
            src = vol.get("secret")
            while src and ("secrets", src["secretName"]) not in self.fake.objects:
                if ("pods", pod["metadata"]["name"]) not in self.fake.objects:
                    return False
                if time.monotonic() - began > self.mount_wait:
                    await self._say(pod, "FailedMount", f'MountVolume.SetUp failed for volume "{vol["name"]}" : '
                                    f'secret "{src["secretName"]}" not found')
                await asyncio.sleep(0.1)
        return ("pods", pod["metadata"]["name"]) in self.fake.objects

    def _secret_files(self, pod: dict, container: dict) -> list[tuple[str, bytes, int, int]]:
        """``(path, data, mode, gid)`` of the items of the secret volumes ``container`` mounts."""
        import base64

        mounts = {m["name"]: m for m in container.get("volumeMounts") or []}
        gid = int((pod["spec"].get("securityContext") or {}).get("fsGroup") or 0)
        out = []
        for vol in pod["spec"].get("volumes") or []:
            src = vol.get("secret")
            if not src or vol["name"] not in mounts:
                continue
            data = self.fake.objects[("secrets", src["secretName"])].get("data") or {}
            for item in src.get("items") or [{"key": k, "path": k} for k in data]:
                out.append((posixpath.join(mounts[vol["name"]]["mountPath"], item["path"]),
                            base64.b64decode(data[item["key"]]), int(item.get("mode", src.get("defaultMode", 0o644))),
                            gid))
        return out

    def _empty_dir(self, pod: dict, volume: str) -> str:
        """An emptyDir: a folder shared by the pod's containers (0777, as the kubelet makes it), removed
        with the pod. (A real one with medium Memory is a tmpfs.)"""
        path = os.path.join(self.root, pod["metadata"]["uid"], volume)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        return path

    # -- Docker (blocking: run in a thread) ---------------------------------------------------------
    def _image_present(self, image: str) -> bool:
        import docker.errors

        try:
            self.api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _create(self, pod: dict, c: dict, files: list[tuple[str, bytes, int, int]], role: str) -> str:
        spec = pod["spec"]
        psc = spec.get("securityContext") or {}
        csc = c.get("securityContext") or {}
        uid, gid = csc.get("runAsUser", psc.get("runAsUser")), csc.get("runAsGroup", psc.get("runAsGroup"))
        limits = (c.get("resources") or {}).get("limits") or {}
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        binds = []
        for m in c.get("volumeMounts") or []:
            v = vols[m["name"]]
            if "emptyDir" in v:
                binds.append(f"{self._empty_dir(pod, m['name'])}:{m['mountPath']}")
            elif "persistentVolumeClaim" in v:
                host = self.claims[v["persistentVolumeClaim"]["claimName"]]
                binds.append(f"{posixpath.join(host, m.get('subPath', ''))}:{m['mountPath']}"
                             + (":ro" if m.get("readOnly") else ""))
        host_config = self.api.create_host_config(
            binds=binds, cap_drop=["ALL"] if "ALL" in (csc.get("capabilities") or {}).get("drop", []) else None,
            security_opt=["no-new-privileges"] if csc.get("allowPrivilegeEscalation") is False else None,
            group_add=[str(psc["fsGroup"])] if psc.get("fsGroup") is not None else None,
            mem_limit=int(_quantity(limits["memory"])) if "memory" in limits else None,
            nano_cpus=int(_quantity(limits["cpu"]) * 1e9) if "cpu" in limits else None)
        kw: dict[str, Any] = {}
        if c.get("command"):
            kw["entrypoint"] = c["command"]
        created = self.api.create_container(
            c["image"], command=c.get("args") or None, working_dir=c.get("workingDir"), host_config=host_config,
            environment={e["name"]: e["value"] for e in c.get("env") or []},
            user=f"{uid}:{gid}" if uid is not None else None,
            labels={LABEL: VALUE, NODE_LABEL: self.id, "io.jupyter-ptcuda.test-pod": pod["metadata"]["name"], "io.jupyter-ptcuda.test-role": role},
            **kw)
        cid = created["Id"]
        if files:
            self.api.put_archive(cid, "/", _tar(files))
        return cid

    def _run(self, cid: str) -> dict:
        self.api.start(cid)
        return self.api.inspect_container(cid)

    def _remove(self, cid: str) -> None:
        import docker.errors

        try:
            self.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass

    async def _end(self, pod: dict, cid: str) -> None:
        """A deleted pod: stop its container (SIGTERM, SIGKILL at the grace), record how it ended, delete the pod."""
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        grace = min(float(pod["metadata"].get("deletionGracePeriodSeconds", 30)), self.max_grace)
        try:
            await asyncio.to_thread(self.api.stop, cid, timeout=max(1, int(grace)))
            obj = self.fake.objects.get(("pods", name))
            if obj is not None and obj["metadata"]["uid"] == uid:  # not deleted for good meanwhile (grace 0)
                await self._observe(obj, cid)  # its last output and exit code
                await self.fake.drop("pods", name)
        finally:
            self._ending.pop(uid, None)

    async def _observe(self, pod: dict, cid: str) -> None:
        """The running container's log, and its end."""
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") != "Running":
            return
        info, logs = await asyncio.to_thread(lambda: (self.api.inspect_container(cid),
                                                      self.api.logs(cid, stdout=True, stderr=True)))
        if len(logs) > self._logs.get(cid, 0):
            self._logs[cid] = len(logs)
            self.fake.logs[name] = logs
            async with self.fake.changed:
                self.fake.changed.notify_all()
        state = info["State"]
        if state.get("Running"):
            return
        code = int(state.get("ExitCode") or 0)
        reason = "OOMKilled" if state.get("OOMKilled") else "Completed" if code == 0 else "Error"

        def ended(o: dict) -> None:
            o["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            o["status"]["containerStatuses"][0].update(ready=False, started=False, state={"terminated": {
                "exitCode": code, "reason": reason, "startedAt": now(), "finishedAt": now(),
                "containerID": "docker://" + cid}})
        await self.fake.modify("pods", name, ended)


def _tar(files: list[tuple[str, bytes, int, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = set()
        for path, data, mode, gid in files:
            folder = posixpath.dirname(path).lstrip("/")
            parts = folder.split("/")
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, 0, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, gid
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
