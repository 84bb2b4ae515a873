"""Kernels on the Kubernetes backend, for real: jupyter_client's KernelManager with our provisioner
against the in-memory API server (fakeapi.py), whose node (kubelet.py) runs each pod's container on the
local Docker engine. The kernel listens on its pod IP (the container's bridge IP); its connection file
reaches it only as a Secret the pod mounts; every channel is CurveZMQ.

Needs the Docker engine and the test image: in CI (CI set) their absence fails, never skips."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import time

import pytest
import yaml
import zmq
import zmq.asyncio
from aiohttp.test_utils import TestServer
from jupyter_client.manager import AsyncKernelManager
from kubernetes_asyncio import client

from jupyter_ptcuda.containers import factory as service_module
from jupyter_ptcuda.containers.kube.backend import KubeContainerService
from jupyter_ptcuda.containers.kube.kernels import PORTS
from jupyter_ptcuda.containers.kube.options import KubeOptions
from jupyter_ptcuda.errors import Forbidden, LaunchError
from jupyter_ptcuda.kernelspec import make_kernel_json

from .fakeapi import FakeKube
from .kubelet import Node

pytestmark = pytest.mark.integration
ROLE = next(d for d in yaml.safe_load_all((pathlib.Path(__file__).parents[2] / "examples/k8s/role.yaml").read_text())
            if d["kind"] == "Role")


@pytest.fixture
def kernelspec(tmp_path, monkeypatch, test_image):
    """make(config) -> kernel name, in a private JUPYTER_PATH."""
    root = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))

    def make(**config) -> str:
        config.setdefault("image", test_image)
        config.setdefault("gpus", "none")
        d = root / "kernels" / "ptcuda-kube"
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (Kubernetes test)", config)))
        return "ptcuda-kube"

    return make


@contextlib.asynccontextmanager
async def node_cluster(tmp_path, *, capacity=None, **opts):
    """The fake API server (Role enforced), a node running pods on Docker, and our service as the
    process's container service (what get_service() returns with c.ContainerBackend.backend = "kubernetes")."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    fake = FakeKube()
    fake.use_role(ROLE)
    server = TestServer(fake.app())
    await server.start_server()
    conf = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    svc = KubeContainerService(KubeOptions(namespace="hub", notebook_root=str(home), **opts), configuration=conf,
                               poll=0.2)
    node = Node(fake, capacity=capacity, claims={f"claim-{svc.identity.name}": str(home)})
    await node.start()
    saved, service_module._service = service_module._service, svc  # type: ignore[assignment]
    try:
        yield fake, svc, node
    finally:
        service_module._service = saved
        await node.stop()
        await svc.close()
        await fake.close()
        await server.close()
    assert node.leftovers() == []


def objects(fake: FakeKube, plural: str) -> list[dict]:
    return [o for (p, _), o in fake.objects.items() if p == plural]


@contextlib.asynccontextmanager
async def ready_client(km):
    """A client of ``km``'s kernel, its channels started and the kernel answering; stopped after."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=90)
        yield kc
    finally:
        kc.stop_channels()


@pytest.fixture
def notices_board(monkeypatch):
    """This process's notices (what GET jupyter-ptcuda/notices serves), as a server extension sets them."""
    from jupyter_ptcuda import notices as N

    board = N.Notices()
    monkeypatch.setattr(N, "_active", board)
    return board


async def run(kc, code: str, timeout: float = 60) -> tuple[str, str]:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "execute_result":
            out.append(msg["content"]["data"]["text/plain"])

    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"]["status"], "".join(out)


async def test_a_kernel_pod_runs_code_over_curvezmq_on_its_pod_ip_and_leaves_nothing(kernelspec, tmp_path):
    async with node_cluster(tmp_path) as (fake, svc, node):
        home = tmp_path / "home"
        notebook = home / "proj"
        notebook.mkdir()
        if os.geteuid() == 0:
            os.chown(notebook, 1000, 100)
        km = AsyncKernelManager(kernel_name=kernelspec())
        await km.start_kernel(cwd=str(notebook))
        try:
            pod, = objects(fake, "pods")
            secret, = objects(fake, "secrets")
            ip = pod["status"]["podIP"]
            # the server talks to the pod's IP; the connection info came as the pod's own Secret
            assert km.ip == ip and km.transport == "tcp" and km.hb_port == PORTS["hb_port"]
            assert ip.startswith("172.") and ip != "127.0.0.1"
            assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
            assert json.loads(open(km.connection_file).read())["ip"] == ip
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=90)
            assert await run(kc, "1+1") == ("ok", "2")
            # it runs as the folder's owner, in the user's claim (subPath); its connection file is its own
            # (copied from the Secret by the init container; ipykernel rewrote it 0600)
            status, out = await run(kc, "import os; open('w.txt','w').write('x'); st = os.stat('/run/ptcuda/kernel.json'); "
                                        "print(os.getuid(), os.getcwd(), st.st_uid, oct(st.st_mode & 0o777))")
            uid = 1000 if os.geteuid() == 0 else os.getuid()
            assert out.split() == [str(uid), str(notebook), str(uid), "0o600"]
            assert (notebook / "w.txt").stat().st_uid == uid

            # CurveZMQ: a client without the kernel's key gets no answer, even from the heartbeat
            ctx = zmq.asyncio.Context.instance()
            plain = ctx.socket(zmq.REQ)
            plain.linger = 0
            plain.connect(f"tcp://{ip}:{km.hb_port}")
            await plain.send(b"ping")
            assert await plain.poll(1500) == 0
            plain.close()
            assert km.curve_publickey is not None

            # interrupt: no pods/exec, so SIGINT goes as an interrupt_request on the control channel
            msg_id = kc.execute("import time; time.sleep(600)")
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            await km.interrupt_kernel()
            reply = await kc.get_shell_msg(timeout=20)
            assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
            assert time.monotonic() - t0 < 10

            # restart: a new pod (new IP), the same keys, state gone
            await km.restart_kernel(now=True)
            kc.stop_channels()  # its sockets know the old pod's IP; the new pod's may differ (a shared engine)
            pod2, = objects(fake, "pods")
            assert pod2["metadata"]["uid"] != pod["metadata"]["uid"] and km.ip == pod2["status"]["podIP"]
            assert len(objects(fake, "secrets")) == 1
            async with ready_client(km) as kc:
                assert await run(kc, "'x' in dir()") == ("ok", "False")
        finally:
            await km.shutdown_kernel(now=False)
        assert objects(fake, "pods") == [] and objects(fake, "secrets") == []
        await asyncio.sleep(0.5)
        assert node.leftovers() == []


async def test_a_kernel_that_cannot_be_scheduled_says_why_and_is_deleted(kernelspec, tmp_path, notices_board):
    board = notices_board
    async with node_cluster(tmp_path, launch_timeout=2.0) as (fake, svc, node):
        km = AsyncKernelManager(kernel_name=kernelspec(gpus=1))
        with pytest.raises(LaunchError, match=r"stayed Pending for 2 s \(FailedScheduling: 0/1 nodes are available: "
                                              r"1 Insufficient nvidia.com/gpu\.") as err:
            await km.start_kernel()
        assert "Ask for fewer GPUs" in str(err.value)
        told, = board.since()  # the notification that said it waits now says it was given up
        assert told["state"] == "failed" and "did not start:" in told["message"] and "stayed Pending" in told["message"]
        assert objects(fake, "pods") == [] and objects(fake, "secrets") == []
        await km.cleanup_resources()


async def test_a_kernel_waiting_for_a_gpu_tells_the_user_why_then_that_it_started(kernelspec, tmp_path, notices_board):
    """What JupyterLab shows while a GPU kernel's pod waits (GET jupyter-ptcuda/notices, the labextension's
    notification): the scheduler's reason at once, then "started" when a GPU frees up; a kernel that
    starts at once posts nothing."""
    board = notices_board
    async with node_cluster(tmp_path, launch_timeout=60.0) as (fake, svc, node):
        km = AsyncKernelManager(kernel_name=kernelspec(gpus=1))
        start = asyncio.ensure_future(km.start_kernel())
        try:
            for _ in range(100):
                if board.since():
                    break
                await asyncio.sleep(0.1)
            waiting, = board.since()
            assert waiting["kind"] == "kernel_pending" and waiting["state"] == "waiting"
            assert waiting["kernel_id"] == km.kernel_id
            assert waiting["message"].startswith(f"Kernel {km.kernel_id[:8]} is waiting for a node: FailedScheduling: "
                                                 "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
            assert "given up after 60 s" in waiting["message"]
            assert not start.done()
            await node.add_capacity("nvidia.com/gpu", "1")  # a GPU frees up
            await asyncio.wait_for(start, 90)
            started, = board.since(waiting["updated"])
            assert started["state"] == "started" and started["at"] == waiting["at"]  # the same notice, updated
            assert "started after waiting" in started["message"]
            async with ready_client(km) as kc:
                assert await run(kc, "6*7") == ("ok", "42")
        finally:
            if not start.done():
                start.cancel()
            await km.shutdown_kernel(now=True)
        seen = board.since()
        other = AsyncKernelManager(kernel_name=kernelspec(gpus="none"))
        await other.start_kernel()
        await other.shutdown_kernel(now=True)
        assert board.since() == seen  # a kernel that started at once: nothing to tell
    assert objects(fake, "pods") == [] and objects(fake, "secrets") == []


async def test_a_kernel_pod_that_exits_at_start_says_so_with_its_log(kernelspec, tmp_path):
    async with node_cluster(tmp_path) as (fake, svc, node):
        km = AsyncKernelManager(kernel_name=kernelspec())
        km.kernel_spec.argv = ["python", "-c", "import sys; print('no kernel here'); sys.exit(3)"]
        with pytest.raises(LaunchError, match=r"(?s)exited with code 3.*no kernel here"):
            await km.start_kernel()
        assert objects(fake, "pods") == [] and objects(fake, "secrets") == []
        await km.cleanup_resources()


async def test_no_secret_no_pod(kernelspec, tmp_path):
    """RBAC refuses the Secret: the pod made a moment before is deleted, the error names the Role."""
    async with node_cluster(tmp_path) as (fake, svc, node):
        fake.deny.add(("create", "secrets"))
        km = AsyncKernelManager(kernel_name=kernelspec())
        with pytest.raises(Forbidden, match=r'cannot create resource "secrets".*examples/k8s/role.yaml'):
            await km.start_kernel()
        assert objects(fake, "pods") == [] and objects(fake, "secrets") == []
        assert ("delete", "pods") in fake.requests
        await km.cleanup_resources()


async def test_a_kernel_asks_for_a_mig_profile_by_its_kernelspec_option(kernelspec, tmp_path):
    """gpus=1 + gpu_resource (kernel.json) → the pod asks for one nvidia.com/mig-1g.18gb; a node that has
    one runs it (this node has no real GPU: the resource is what the scheduler sees)."""
    mig = "nvidia.com/mig-1g.18gb"
    async with node_cluster(tmp_path, capacity={mig: "1"}, gpu_resources=("nvidia.com/gpu", mig)) as (fake, svc, node):
        km = AsyncKernelManager(kernel_name=kernelspec(gpus=1, gpu_resource=mig))
        await km.start_kernel()
        try:
            pod, = objects(fake, "pods")
            assert pod["spec"]["containers"][0]["resources"] == {"limits": {mig: "1"}, "requests": {mig: "1"}}
            async with ready_client(km) as kc:
                assert await run(kc, "6*7") == ("ok", "42")
        finally:
            await km.shutdown_kernel(now=True)
        assert objects(fake, "pods") == [] and objects(fake, "secrets") == []


async def test_a_kernel_whose_pod_is_deleted_behind_its_back_is_seen_dead(kernelspec, tmp_path):
    """Eviction, `kubectl delete pod`: poll (what the restarter calls) reports the kernel dead."""
    async with node_cluster(tmp_path) as (fake, svc, node):
        km = AsyncKernelManager(kernel_name=kernelspec())
        await km.start_kernel()
        try:
            assert await km.is_alive()
            pod, = objects(fake, "pods")
            await fake.drop("pods", pod["metadata"]["name"])
            assert objects(fake, "secrets") == []  # the garbage collector took its Secret
            assert not await km.is_alive()
        finally:
            await km.shutdown_kernel(now=True)
        assert objects(fake, "pods") == []
