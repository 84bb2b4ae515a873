"""The Jupyter server with c.ContainerBackend.backend = "kubernetes": the extension makes its service
from the server's config (kubeconfig → the in-memory API server, whose node runs pods on the local
Docker engine), reaps an earlier process's pod at start, and a kernel start over REST — what JupyterLab
does — either runs a kernel pod or answers with the scheduler's reason.

The API server and its node run on their own thread and event loop, like a cluster beside the server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import socket
import threading
import time

import pytest
import yaml
from aiohttp import web

from jupyter_ptcuda.containers import factory as service_module
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.kernelspec import make_kernel_json

from .fakeapi import FakeKube
from .kubelet import Node

pytestmark = pytest.mark.integration
ROLE = next(d for d in yaml.safe_load_all((pathlib.Path(__file__).parents[2] / "examples/k8s/role.yaml").read_text())
            if d["kind"] == "Role")


class Cluster:
    """FakeKube + Node on a thread of their own."""

    def __init__(self, claims: dict[str, str] | None = None) -> None:
        self.claims = claims or {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake, self.node, self.runner, self.url = self.run(self._start())

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self):
        fake = FakeKube()
        fake.use_role(ROLE)
        runner = web.AppRunner(fake.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        node = Node(fake, claims=self.claims)
        await node.start()
        return fake, node, runner, f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self.node.stop()
        await self.fake.close()
        await self.runner.cleanup()

    def stop(self) -> list:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return self.node.leftovers()

    def objects(self, plural: str) -> list[dict]:
        async def get():
            return [o for (p, _), o in self.fake.objects.items() if p == plural]
        return self.run(get())


@pytest.fixture
def cluster(tmp_path, monkeypatch, test_image, jp_root_dir):
    from jupyter_ptcuda.containers.identity import username

    c = Cluster(claims={f"claim-{username()}": str(jp_root_dir)})  # the user's claim holds the server root
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": c.url}}],
        "users": [{"name": "jupyter", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "jupyter", "namespace": "hub"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("JUPYTER_PTCUDA_BROKER_URL", raising=False)
    monkeypatch.setattr(service_module, "_service", None)  # the server makes it, from its config
    # an earlier server process of this very pod (same host, another server id) left a kernel pod
    host = socket.gethostname()
    labels = L.make(L.KERNEL, owner_uid=1000, server_id=f"{host}:7:1600000000", server_pid=7, id="0ld0ld0ld0ld")
    k8s_labels, annotations = P.split_labels(labels)
    c.run(c.fake.put("pods", {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
                              "metadata": {"name": "ptcuda-kernel-0ld0ld0l-aaaaaa", "labels": k8s_labels,
                                           "annotations": annotations}, "spec": {}}))
    yield c
    assert c.stop() == []


@pytest.fixture
def jp_server_config(cluster, jp_root_dir, jp_data_dir, test_image):
    for name, gpus in (("ptcuda-kube", "none"), ("ptcuda-kube-gpu", 1)):
        d = pathlib.Path(jp_data_dir) / "kernels" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel.json").write_text(json.dumps(make_kernel_json(name, {"image": test_image, "gpus": gpus})))
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True}},
        "PtcudaExtension": {"sample_interval": 0.2, "freeze_gc": False, "nvml": "fake:1"},
        "ContainerBackend": {"backend": "kubernetes"},
        "KubeBackend": {"namespace": "hub", "launch_timeout": 2.0, "notebook_root": str(jp_root_dir)},
        "JobOptions": {"image": test_image, "gpus": 1},
        "JobManager": {"poll_interval": 0.2},
    }


async def test_the_server_runs_kernels_as_pods_and_says_why_one_cannot_start(jp_fetch, jp_serverapp, cluster):
    from jupyter_ptcuda.containers.kube.backend import KubeContainerService

    assert isinstance(service_module._service, KubeContainerService)  # from c.ContainerBackend.backend
    assert service_module._service.namespace == "hub"
    ext = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].app
    await ext._start_jupyter_server_extension(jp_serverapp)  # what ServerApp.start does (pytest-jupyter does not)
    # reaped at start: the earlier process's kernel pod
    for _ in range(100):
        if not cluster.objects("pods"):
            break
        await asyncio.sleep(0.1)
    assert cluster.objects("pods") == []

    # a GPU kernel on a cluster without free GPUs: JupyterLab hears why while it waits (notices), then the
    # start fails with the scheduler's reason and the notice says it was given up
    svc = service_module._service
    svc.options = dataclasses.replace(svc.options, launch_timeout=5.0)  # room to see it wait, on a loaded host
    start = asyncio.ensure_future(jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "ptcuda-kube-gpu"}),
                                           raise_error=False))
    seen: list[dict] = []
    while not start.done():
        seen += json.loads((await jp_fetch("jupyter-ptcuda", "notices")).body)["notices"]
        await asyncio.sleep(0.2)
    r = await start
    body = json.loads(r.body)
    assert r.code == 500
    assert "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in body["message"]
    waiting = next(n for n in seen if n["state"] == "waiting")
    assert waiting["kind"] == "kernel_pending" and "is waiting for a node: FailedScheduling: 0/1 nodes" in waiting["message"]
    done, = json.loads((await jp_fetch("jupyter-ptcuda", "notices", params={"since": waiting["updated"]})).body)["notices"]
    assert done["state"] == "failed" and done["at"] == waiting["at"] and "stayed Pending for 5 s" in done["message"]
    svc.options = dataclasses.replace(svc.options, launch_timeout=2.0)
    assert cluster.objects("pods") == [] and cluster.objects("secrets") == []

    # a CPU kernel runs as a pod; shutting it down deletes pod and Secret
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "ptcuda-kube"}))
    assert r.code == 201
    kid = json.loads(r.body)["id"]
    pod, = cluster.objects("pods")
    assert pod["status"]["phase"] == "Running" and pod["metadata"]["annotations"][L.KERNEL_ID] == kid
    assert len(cluster.objects("secrets")) == 1
    km = jp_serverapp.kernel_manager.get_kernel(kid)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        reply = await kc.execute_interactive("1+1", timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
    r = await jp_fetch("api", "kernels", kid, method="DELETE")
    assert r.code == 204
    deadline = time.monotonic() + 20
    while (cluster.objects("pods") or cluster.objects("secrets")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert cluster.objects("pods") == [] and cluster.objects("secrets") == []


async def jobs_state(jp_fetch, job_id: str, until, within: float = 90) -> dict:
    deadline = time.monotonic() + within
    while True:
        job = json.loads((await jp_fetch("jupyter-ptcuda", "jobs", job_id)).body)
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)


async def test_jobs_from_the_rest_api_run_as_kubernetes_jobs_and_a_pending_one_says_why(
        jp_fetch, jp_serverapp, jp_root_dir, cluster):
    ext = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].app
    await ext._start_jupyter_server_extension(jp_serverapp)
    (pathlib.Path(jp_root_dir) / "train.py").write_text("import sys\nprint('loss 0.1', flush=True)\nsys.exit(0)\n")
    (pathlib.Path(jp_root_dir) / "big.py").write_text("print('never')\n")

    # what JupyterLab's Run as job does: POST jobs, then poll the job and read its log
    r = await jp_fetch("jupyter-ptcuda", "jobs", method="POST", body=json.dumps({"path": "train.py", "gpus": "none"}))
    assert r.code == 201
    job_id = json.loads(r.body)["id"]
    job = await jobs_state(jp_fetch, job_id, lambda j: j["state"] not in ("queued", "running"))
    assert (job["state"], job["exit_code"], job["reason"]) == ("completed", 0, "completed")
    log = await jp_fetch("jupyter-ptcuda", "jobs", job_id, "log")
    assert b"loss 0.1" in log.body and log.headers["X-Ptcuda-Job-State"] == "completed"

    # a GPU job on a cluster without free GPUs: queued, its reason the scheduler's, then failed at the timeout
    r = await jp_fetch("jupyter-ptcuda", "jobs", method="POST", body=json.dumps({"path": "big.py", "gpus": 1}))
    big = json.loads(r.body)["id"]
    job = await jobs_state(jp_fetch, big, lambda j: (j["reason"] or "").startswith("pending: FailedScheduling"))
    assert job["state"] == "queued"
    assert "0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in job["reason"]
    log = await jp_fetch("jupyter-ptcuda", "jobs", big, "log")
    assert log.code == 200 and log.body == b"" and log.headers["X-Ptcuda-Job-State"] == "queued"
    job = await jobs_state(jp_fetch, big, lambda j: j["state"] == "failed")
    assert job["reason"].startswith("start failed:") and "stayed Pending for 2 s" in job["reason"]
    assert cluster.objects("jobs") == [] and cluster.objects("pods") == []
