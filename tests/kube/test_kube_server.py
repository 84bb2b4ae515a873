"""The Jupyter server with c.ContainerBackend.backend = "kubernetes": the extension makes its service
from the server's config (kubeconfig → the in-memory API server, whose node runs pods on the local
Docker engine), reaps an earlier process's pod at start, and a kernel start over REST — what JupyterLab
does — either runs a kernel pod or answers with the scheduler's reason.

The API server and its node run on their own thread and event loop, like a cluster beside the server."""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import threading
import time

import pytest
import yaml
from aiohttp import web

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers import service as service_module
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.kernelspec import make_kernel_json

from .fakeapi import FakeKube
from .kubelet import Node

pytestmark = pytest.mark.integration
ROLE = next(d for d in yaml.safe_load_all((pathlib.Path(__file__).parents[2] / "examples/k8s/role.yaml").read_text())
            if d["kind"] == "Role")


class Cluster:
    """FakeKube + Node on a thread of their own."""

    def __init__(self) -> None:
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
        node = Node(fake)
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
def cluster(tmp_path, monkeypatch, test_image):
    c = Cluster()
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

    # a GPU kernel on a cluster without free GPUs: the start fails with the scheduler's reason
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "ptcuda-kube-gpu"}), raise_error=False)
    body = json.loads(r.body)
    assert r.code == 500
    assert "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in body["message"]
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
