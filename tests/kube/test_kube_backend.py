"""The Kubernetes backend's lifecycle against the in-memory API server (tests/kube/fakeapi.py): create,
wait Running, logs, Pending with the scheduler's event, delete, reap, Job success/failure/OOM/deadline,
403 from RBAC. No cluster runs here: what this does and does not show is in docs/kubernetes.md."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib

import pytest
import yaml
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy, Request, build
from jupyter_ptcuda.containers.gpus import GpuRequest
from jupyter_ptcuda.containers.identity import Identity
from jupyter_ptcuda.containers.kube.backend import DEADLINE_EXIT, KubeContainerService
from jupyter_ptcuda.containers.kube.options import KubeOptions
from jupyter_ptcuda.containers.reaper import reap_orphans
from jupyter_ptcuda.errors import ConfigError, Forbidden, LaunchError

from .fakeapi import FakeKube

ROLE = next(d for d in yaml.safe_load_all((pathlib.Path(__file__).parents[2] / "examples/k8s/role.yaml").read_text())
            if d["kind"] == "Role")
ANN = Identity(uid=1000, gid=100, name="ann", server_id="jupyter-ann:7:1700000000", server_pid=7)
POLICY = Policy(images=("img:1",))


@contextlib.asynccontextmanager
async def cluster(**opts):
    fake = FakeKube()
    fake.use_role(ROLE)  # RBAC as examples/k8s/role.yaml grants it: the backend needs no more
    server = TestServer(fake.app())
    await server.start_server()
    conf = client.Configuration(host=str(server.make_url("")).rstrip("/"))
    svc = KubeContainerService(KubeOptions(namespace="hub", **opts), configuration=conf, identity=ANN, poll=0.2)
    try:
        yield fake, svc
    finally:
        await svc.close()
        await fake.close()
        await server.close()


def spec(kind=L.JOB, identity=ANN, **kw):
    base = dict(kind=kind, image="img:1", command=("python", "train.py"), run_as="1000:100", workdir="/home/jovyan/p",
                id="0a1b2c3d4e5f", gpus=GpuRequest("count", 1))
    base.update(kw)
    return build(Request(**base), POLICY, identity)


async def created(fake: FakeKube, plural: str, n: int = 1) -> str:
    """The name of the newest object of ``plural`` once there are ``n`` (the backend's create went through)."""
    for _ in range(200):
        names = [name for (p, name) in fake.objects if p == plural]
        if len(names) >= n:
            return max(names, key=lambda k: int(fake.objects[(plural, k)]["metadata"]["resourceVersion"]))
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {plural} created")


async def test_a_job_runs_its_log_is_read_and_its_exit_code_is_the_pods():
    async with cluster() as (fake, svc):
        task = asyncio.ensure_future(svc.launch(spec(), timeout=600))
        job = await created(fake, "jobs")
        pod = fake.pod_of(job)
        await fake.run(pod, b"epoch 1\n")
        launched = await task
        assert launched.id == job
        state = await svc.inspect(job)
        assert state.running and state.tag.kind == L.JOB and state.tag.id == "0a1b2c3d4e5f"
        assert state.tag.server_id == ANN.server_id  # from the annotations: not a valid label value
        assert fake.objects[("jobs", job)]["spec"]["activeDeadlineSeconds"] == 600
        follow = asyncio.ensure_future(_collect(svc.follow(job)))
        await asyncio.sleep(0.3)
        await fake.log(pod, b"epoch 2\n")
        await fake.exit(pod, 0)
        assert await svc.wait(job) == 0
        assert await asyncio.wait_for(follow, 5) == b"epoch 1\nepoch 2\n"
        assert await svc.logs(job, tail=1) == "epoch 2\n"
        assert [s.id for s in await svc.list(L.JOB, server_id=ANN.server_id)] == [job]
        assert await svc.list(L.JOB, running=True) == []
        await svc.remove(job)
        assert await svc.inspect(job) is None and not fake.objects  # the Job's pod went with it
        await svc.remove(job)  # gone already: fine


def objects(fake: FakeKube, plural: str) -> list[dict]:
    return [o for (p, _), o in fake.objects.items() if p == plural]


async def _collect(it):
    return b"".join([c async for c in it])


@pytest.mark.parametrize(("code", "reason", "oom"), [(3, "Error", False), (137, "OOMKilled", True)])
async def test_a_failed_or_oom_killed_job_says_so(code, reason, oom):
    async with cluster() as (fake, svc):
        task = asyncio.ensure_future(svc.launch(spec()))
        job = await created(fake, "jobs")
        await fake.run(fake.pod_of(job), b"CUDA out of memory\n")
        await task
        await fake.exit(fake.pod_of(job), code, reason)
        assert await svc.wait(job) == code
        state = await svc.inspect(job)
        assert (state.exit_code, state.oom_killed, state.running) == (code, oom, False)
        msg = svc.describe_exit(state, await svc.logs(job), "job").message
        assert ("OOMKilled" in msg) == oom and "CUDA out of memory" in msg


async def test_a_job_past_its_deadline_reads_as_timed_out():
    async with cluster() as (fake, svc):
        task = asyncio.ensure_future(svc.launch(spec(), timeout=1))
        job = await created(fake, "jobs")
        await fake.run(fake.pod_of(job))
        await task
        assert await asyncio.wait_for(svc.wait(job), 10) == DEADLINE_EXIT
        assert (await svc.inspect(job)).exit_code == DEADLINE_EXIT


async def test_a_pod_that_stays_pending_is_reported_with_the_schedulers_reason_and_deleted():
    async with cluster(launch_timeout=1.0) as (fake, svc):
        task = asyncio.ensure_future(svc.launch(spec(L.HEALTH)))
        pod = await created(fake, "pods")
        await fake.event(pod, "FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        with pytest.raises(LaunchError, match=r"stayed Pending for 1 s \(FailedScheduling: 0/3 nodes are available: "
                                              r"3 Insufficient nvidia.com/gpu.\); it was deleted"):
            await task
        assert ("pods", pod) not in fake.objects


async def looks_at_events(fake: FakeKube, n: int, within: float = 20) -> None:
    """Until the backend has read the pod's events ``n`` more times (it lists them at each look)."""
    start = fake.requests.count(("list", "events"))
    deadline = asyncio.get_running_loop().time() + within
    while fake.requests.count(("list", "events")) < start + n:
        assert asyncio.get_running_loop().time() < deadline, f"the backend did not look at the events {n} times"
        await asyncio.sleep(0.05)


async def test_while_a_pod_waits_the_caller_hears_each_new_warning_and_not_a_quick_starts_normal_events():
    async with cluster(launch_timeout=30.0) as (fake, svc):
        said: list[str] = []
        task = asyncio.ensure_future(svc.launch(spec(L.HEALTH), on_pending=said.append))
        pod = await created(fake, "pods")
        await fake.event(pod, "Scheduled", "Successfully assigned hub/x to node-1", type="Normal")
        await looks_at_events(fake, 3)  # a Normal step of a start is not news
        assert said == []
        await fake.event(pod, "FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        for _ in range(50):
            if said:
                break
            await asyncio.sleep(0.1)
        await looks_at_events(fake, 3)
        assert said == ["FailedScheduling: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."]  # once
        await fake.event(pod, "FailedMount", 'MountVolume.SetUp failed for volume "nb": not found')
        for _ in range(50):
            if len(said) == 2:
                break
            await asyncio.sleep(0.1)
        assert said[1] == 'FailedMount: MountVolume.SetUp failed for volume "nb": not found'
        await fake.run(pod)
        assert (await task).id == pod and len(said) == 2


async def test_a_pod_runs_and_is_signalled_and_reaped_when_its_server_is_gone():
    async with cluster() as (fake, svc):
        task = asyncio.ensure_future(svc.launch(spec(L.HEALTH, gpus=GpuRequest())))
        pod = await created(fake, "pods")
        await fake.run(pod)
        assert (await task).id == pod
        assert (await svc.find(L.HEALTH, "0a1b")).id == pod
        # an earlier process of this server's pod left one behind; another server (pod) is gone
        old = KubeContainerService(svc.options, configuration=svc._configuration, poll=0.2,
                                   identity=dataclasses.replace(ANN, server_id="jupyter-ann:5:1600000000"))
        other = KubeContainerService(svc.options, configuration=svc._configuration, poll=0.2,
                                     identity=dataclasses.replace(ANN, server_id="jupyter-bob:9:1"))
        for s in (old, other):
            t = asyncio.ensure_future(s.launch(spec(L.HEALTH, s.identity, gpus=GpuRequest(), id="ffff")))
            await created(fake, "pods", 2 if s is old else 3)
            for (p, n), o in list(fake.objects.items()):
                if p == "pods" and o["status"]["phase"] == "Pending":
                    await fake.run(n)
            await t
            await s.close()
        await fake.put("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-ann"}, "spec": {}})
        # what the server does at start and every reap_interval (server/extension.py -> reaper.reap_orphans)
        assert sorted(r["why"] for r in await reap_orphans(svc, own_server_id=ANN.server_id, dry_run=True)) == [
            "an earlier server process of this pod started it", "its server's pod jupyter-bob is gone"]
        assert len(objects(fake, "pods")) == 4  # a dry run removes nothing
        # `jupyter ptcuda reap` (no server id: it cannot tell an earlier process from the live one)
        assert [r["server_id"] for r in await reap_orphans(svc)] == ["jupyter-bob:9:1"]
        removed = await reap_orphans(svc, own_server_id=ANN.server_id)
        assert [r["server_id"] for r in removed] == ["jupyter-ann:5:1600000000"] and pod not in str(removed)
        assert [s.id for s in await svc.list(L.HEALTH)] == [pod]
        with pytest.raises(ConfigError, match="pods/exec"):
            await svc.signal(pod, "SIGINT")
        await svc.signal(pod, "SIGTERM")
        assert await svc.inspect(pod) is None


async def test_rbac_403_names_the_role():
    async with cluster() as (fake, svc):
        fake.deny.add(("create", "jobs"))
        with pytest.raises(Forbidden, match=r'cannot create resource "jobs" in API group "batch".*examples/k8s/role.yaml'):
            await svc.launch(spec())


async def test_the_api_server_rejects_what_a_real_one_would():
    async with cluster() as (fake, svc):
        # the fake refuses invalid label values, as the API server does; our builder never sends one
        bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "x:y"}},
               "spec": {"containers": [{"name": "c", "image": "i"}]}}
        core = client.CoreV1Api(await svc._api())
        with pytest.raises(ConfigError, match="valid label"):
            await svc._call(core.create_namespaced_pod, "hub", bad, what="pod")
        bad["metadata"] = {"name": "Bad_Name"}
        with pytest.raises(ConfigError, match="metadata.name"):
            await svc._call(core.create_namespaced_pod, "hub", bad, what="pod")
        bad["metadata"] = {"name": "p"}
        bad["spec"]["containers"][0]["securityContext"] = {"capabilities": {"drop": "ALL"}}  # not a list
        with pytest.raises(ConfigError, match="rejected"):
            await svc._call(core.create_namespaced_pod, "hub", bad, what="pod")


async def test_without_kubernetes_asyncio_the_error_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kubernetes_asyncio", None)
    with pytest.raises(ConfigError, match=r"jupyter-ptcuda\[kubernetes\]"):
        await KubeContainerService(KubeOptions()).ping()


@pytest.fixture
def fresh_service(monkeypatch, tmp_path):
    """get_service() as at a process's start: no service yet, no broker, no credentials."""
    from jupyter_ptcuda.containers import factory as S

    monkeypatch.setattr(S, "_service", None)
    for var in ("JUPYTER_PTCUDA_BROKER_URL", "JUPYTER_PTCUDA_BACKEND", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    return S


def test_the_kubernetes_backend_is_chosen_by_configuration(fresh_service, tmp_path, monkeypatch):
    from traitlets.config import Config

    S = fresh_service
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}], "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    c = Config()
    c.ContainerBackend.backend = "Kubernetes"
    c.KubeBackend.namespace = "gpu-users"
    svc = S.get_service(c)
    assert isinstance(svc, KubeContainerService) and svc.namespace == "gpu-users"
    assert S.get_service() is svc  # one per process
    monkeypatch.setattr(S, "_service", None)
    monkeypatch.setenv("JUPYTER_PTCUDA_BACKEND", "kubernetes")  # the environment works too
    assert isinstance(S.get_service(), KubeContainerService)
    monkeypatch.setattr(S, "_service", None)
    monkeypatch.setenv("JUPYTER_PTCUDA_BROKER_URL", "http://127.0.0.1:1/broker")  # a broker wins
    assert type(S.get_service()).__name__ == "RemoteContainerService"
    monkeypatch.setattr(S, "_service", None)
    monkeypatch.delenv("JUPYTER_PTCUDA_BROKER_URL")
    monkeypatch.delenv("JUPYTER_PTCUDA_BACKEND")
    assert type(S.get_service()).__name__ == "DockerContainerService"  # the default: Docker


def test_without_credentials_the_error_says_what_to_do(fresh_service):
    from traitlets.config import Config

    c = Config()
    c.ContainerBackend.backend = "kubernetes"
    with pytest.raises(ConfigError, match=r"found no credentials.*service account.*examples/k8s/role.yaml.*kubeconfig"):
        fresh_service.get_service(c)
    assert fresh_service._service is None


async def test_a_missing_pod_is_not_found_with_the_kubectl_hint():
    from jupyter_ptcuda.errors import NotFound

    async with cluster() as (fake, svc):
        with pytest.raises(NotFound, match=r"kernel 'abc' is not running: start it .* `kubectl get pods -n hub -l "):
            await svc.find(L.KERNEL, "abc")


async def test_a_job_that_waits_says_why_the_scheduler_or_the_job_controller_gave():
    """What the job lifecycle shows as "pending: <reason>": the pod's latest Warning event; with no pod
    (a quota refused it), the Job's own (FailedCreate)."""
    async with cluster(launch_timeout=600.0) as (fake, svc):
        launched = await svc.launch(spec(), timeout=60, wait=False)  # the job manager does not wait
        job = launched.id
        assert (await svc.inspect(job)).status == "created"
        assert await svc.pending(job) == ""  # nothing said yet
        await fake.event(fake.pod_of(job), "FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
        assert await svc.pending(job) == "FailedScheduling: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        await fake.drop("pods", fake.pod_of(job))  # as if the Job controller could not create it
        await fake.put("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{job}.q"}, "type": "Warning",
                                  "involvedObject": {"kind": "Job", "name": job, "namespace": "hub"},
                                  "reason": "FailedCreate", "lastTimestamp": "2026-01-01T00:00:00Z",
                                  "message": f'Error creating: pods "{job}-x" is forbidden: exceeded quota: gpus, '
                                             "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, "
                                             "limited: requests.nvidia.com/gpu=4"})
        assert (await svc.pending(job)).startswith("FailedCreate: Error creating: pods") and "exceeded quota" in \
            await svc.pending(job)
        svc.options = dataclasses.replace(svc.options, launch_timeout=0.0)  # past the launch timeout
        with pytest.raises(LaunchError, match=r"stayed Pending for 0 s \(FailedCreate: .*exceeded quota.*\); it was deleted"):
            await svc.pending(job)
        assert ("jobs", job) not in fake.objects
        assert await svc.pending(job) is None  # gone: not pending


async def test_a_shell_or_command_in_a_pod_is_refused_saying_why_and_what_to_use():
    """`jupyter ptcuda shell|exec ID` and JupyterLab's terminal button on this backend: refused before
    any pod is looked up, with the reason (no pods/exec in the Role) and the operator's way in."""
    from jupyter_ptcuda.containers.tty import resolve

    async with cluster() as (fake, svc):
        for ident in ("0a1b", ""):
            with pytest.raises(ConfigError, match=r"needs pods/exec, which .* does not grant.*kubectl exec -it"):
                await resolve(svc, ident)  # type: ignore[arg-type]
