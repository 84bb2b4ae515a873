"""Jobs and health checks on the Kubernetes backend, for real: the JobManager (what the server's Jobs API
and `jupyter ptcuda run` use) with the Kubernetes service against the in-memory API server (fakeapi.py),
whose node (kubelet.py) runs each Job's pod on the local Docker engine. Every Job and pod the backend
sends is validated by the fake against the v1.37 OpenAPI schema (strict), as a real API server would
reject it; the tests validate the Job they read back too.

Needs the Docker engine and the test image: in CI (CI set) their absence fails, never skips."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import time
from pathlib import Path

import kubernetes_validate
import pytest
from traitlets.config import Config

from jupyter_ptcuda.containers.kube.backend import DEADLINE_EXIT
from jupyter_ptcuda.errors import ConfigError, Forbidden
from jupyter_ptcuda.health.runner import check_allowed, check_image
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.conftest import finished

from .fakeapi import SCHEMA, FakeKube
from .test_kube_kernels import node_cluster

pytestmark = pytest.mark.integration
MIG = "nvidia.com/mig-1g.18gb"


@contextlib.asynccontextmanager
async def jobs_on_kube(tmp_path, test_image, *, capacity=None, **opts):
    """The cluster (its node runs pods on Docker) and a JobManager over the Kubernetes service, configured
    as an operator would: the job image, GPUs asked for by count."""
    async with node_cluster(tmp_path, capacity=capacity, **opts) as (fake, svc, node):
        c = Config()
        c.JobOptions.image = test_image
        c.JobOptions.gpus = 1
        mgr = JobManager(service=svc, config=c, db_path=str(tmp_path / "jobs.sqlite"), poll_interval=0.2,
                         cancel_grace=1.0, reconcile_interval=0)
        try:
            yield fake, mgr, project(tmp_path)
        finally:
            await mgr.stop()
        assert objects(fake, "jobs") == []
        await gone(fake, "pods")  # nothing left behind: a deleted Job's pods go after it, once their node ended them


async def manifest_says(job, key: str, value, within: float = 10) -> None:
    """Until the job's manifest.json has ``key`` = ``value`` (its finaliser rewrites it just after recording the
    end, so a reader that saw the job end may be a moment early)."""
    deadline = time.monotonic() + within
    while (got := json.loads(Path(job.manifest_path).read_text()).get(key)) != value:
        assert time.monotonic() < deadline, f"manifest {key} = {got!r}, not {value!r}"
        await asyncio.sleep(0.05)


async def gone(fake: FakeKube, plural: str, within: float = 30) -> None:
    """Until no object of ``plural`` is left (AssertionError naming them after ``within`` seconds)."""
    deadline = asyncio.get_running_loop().time() + within
    while left := objects(fake, plural):
        assert asyncio.get_running_loop().time() < deadline, f"{plural} left: {[o['metadata']['name'] for o in left]}"
        await asyncio.sleep(0.1)


def project(tmp_path: Path) -> Path:
    """A notebook folder in the user's claim (tmp_path/home is what the node mounts for claim-<user>)."""
    d = tmp_path / "home" / "proj"
    d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(d, 1000, 100)
    return d


def objects(fake: FakeKube, plural: str) -> list[dict]:
    return [o for (p, _), o in fake.objects.items() if p == plural]


def script(folder: Path, name: str, body: str) -> str:
    (folder / name).write_text(body)
    return str(folder / name)


async def the_job(fake: FakeKube) -> dict:
    for _ in range(200):
        if jobs := objects(fake, "jobs"):
            return copy.deepcopy(jobs[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no Job created")


async def test_a_job_runs_as_a_kubernetes_job_with_its_log_exit_code_and_digest(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image) as (fake, mgr, proj):
        path = script(proj, "train.py", "import os, sys\nprint('epoch 1', flush=True)\n"
                      "print('uid', os.getuid(), 'out', os.environ['JUPYTER_PTCUDA_OUTPUT_DIR'])\n"
                      "open(os.path.join(os.environ['JUPYTER_PTCUDA_OUTPUT_DIR'], 'model.txt'), 'w').write('w')\n"
                      "import numpy\n")  # not asked of the image: the import check is skipped here
        job = await mgr.submit(JobRequest(path=path, gpus="none", timeout=600))
        assert job.state == "queued" and job.reason.startswith("pending: ")  # created, not waited for
        manifest = await the_job(fake)
        kubernetes_validate.validate(manifest, SCHEMA, strict=True)
        assert manifest["spec"]["backoffLimit"] == 0 and manifest["spec"]["activeDeadlineSeconds"] == 600
        assert manifest["spec"]["ttlSecondsAfterFinished"] == 3600
        pod_spec = manifest["spec"]["template"]["spec"]
        assert pod_spec["securityContext"]["runAsUser"] == 1000 and pod_spec["restartPolicy"] == "Never"
        assert "resources" not in pod_spec["containers"][0] or "nvidia.com/gpu" not in str(pod_spec["containers"][0])

        job = await finished(mgr, job.id)
        assert (job.state, job.reason, job.exit_code) == ("completed", "completed", 0), Path(job.log_path).read_text()
        log = Path(job.log_path).read_text()
        assert "epoch 1" in log and f"uid 1000 out {job.output_dir}/artifacts" in log
        assert (Path(job.output_dir) / "artifacts" / "model.txt").read_text() == "w"
        assert job.image == test_image and job.image_digest.startswith("sha256:")  # from the pod's imageID
        await manifest_says(job, "image_digest", job.image_digest)  # rewritten just after the job's row
        data, _ = await mgr.read_log(job.id)
        assert b"epoch 1" in data


async def test_a_failing_job_gives_its_exit_code_and_an_oom_killed_one_says_so(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image) as (fake, mgr, proj):
        bad = await mgr.submit(JobRequest(path=script(proj, "bad.py", "import sys\nprint('oops')\nsys.exit(3)\n"),
                                          gpus="none"))
        hog = await mgr.submit(JobRequest(path=script(proj, "hog.py", "print('allocating', flush=True)\n"
                                                      "b = bytearray(500 * 1024 * 1024)\nprint('survived')\n"),
                                          gpus="none", mem_limit="64m"))
        bad, hog = await finished(mgr, bad.id), await finished(mgr, hog.id)
        assert (bad.state, bad.reason, bad.exit_code) == ("failed", "failed", 3)
        assert "oops" in Path(bad.log_path).read_text()
        assert (hog.state, hog.reason, hog.exit_code) == ("failed", "OOMKilled", 137)
        assert "allocating" in Path(hog.log_path).read_text() and "survived" not in Path(hog.log_path).read_text()


async def test_a_job_past_its_timeout_is_timed_out_by_its_deadline(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image) as (fake, mgr, proj):
        path = script(proj, "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
        job = await mgr.submit(JobRequest(path=path, gpus="none", timeout=3))
        assert (await the_job(fake))["spec"]["activeDeadlineSeconds"] == 3
        job = await finished(mgr, job.id, within=30)
        assert (job.state, job.reason, job.exit_code) == ("timed_out", "timed out", DEADLINE_EXIT)
        assert "started" in Path(job.log_path).read_text()  # teed while it ran: its pod is gone


async def test_a_cancelled_job_deletes_its_job(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image) as (fake, mgr, proj):
        job = await mgr.submit(JobRequest(path=script(proj, "long.py", "import time\nprint('up', flush=True)\n"
                                                      "time.sleep(600)\n"), gpus="none"))
        deadline = time.monotonic() + 60
        while b"up" not in (await mgr.read_log(job.id))[0]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await mgr.get(job.id)).state == "running"
        job = await mgr.cancel(job.id)
        assert (job.state, job.reason) == ("cancelled", "cancelled")
        assert objects(fake, "jobs") == [] and "up" in Path(job.log_path).read_text()


async def test_a_pending_job_says_why_while_it_waits_and_fails_after_the_launch_timeout(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image, launch_timeout=4.0) as (fake, mgr, proj):
        job = await mgr.submit(JobRequest(path=script(proj, "gpu.py", "print('never')\n"), gpus=1))
        deadline = time.monotonic() + 30
        while not (await mgr.get(job.id)).reason.startswith("pending: FailedScheduling"):
            assert time.monotonic() < deadline, (await mgr.get(job.id)).reason
            await asyncio.sleep(0.1)
        job = await mgr.get(job.id)
        assert job.state == "queued"
        assert job.reason == ("pending: FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu. "
                              "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
        assert job.to_json()["reason"] == job.reason  # what GET jobs/<id> shows
        assert (await mgr.read_log(job.id))[0] == b""  # no log yet, and no error
        job = await finished(mgr, job.id, within=30)
        assert job.state == "failed" and job.reason.startswith("start failed: job ") and "stayed Pending for 4 s " \
            "(FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in job.reason


async def test_a_job_asks_for_a_mig_profile_and_a_refused_one_fails_before_it_exists(tmp_path, test_image):
    async with jobs_on_kube(tmp_path, test_image, capacity={MIG: "1"}, gpu_resources=("nvidia.com/gpu", MIG)) \
            as (fake, mgr, proj):
        path = script(proj, "mig.py", "print('on a MIG slice')\n")
        with pytest.raises(ConfigError, match=r"gpu_resource 'nvidia.com/mig-7g.141gb' is not one the operator allows"):
            await mgr.submit(JobRequest(path=path, gpus=1, gpu_resource="nvidia.com/mig-7g.141gb"))
        with pytest.raises(ConfigError, match=r"on Kubernetes the scheduler picks the devices; ask for a count"):
            await mgr.submit(JobRequest(path=path, gpus=["0"]))
        assert await mgr.list_jobs() == [] and objects(fake, "jobs") == []  # refused before anything existed
        with pytest.raises(Forbidden, match=r"on the Kubernetes backend the server cannot read an image's labels"):
            await mgr.submit(JobRequest(path=path, gpus=1, image="someone/else:1"))
        job = await mgr.submit(JobRequest(path=path, gpus=1, gpu_resource=MIG))
        limits = (await the_job(fake))["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits == {MIG: "1"}
        job = await finished(mgr, job.id)
        assert (job.state, job.exit_code, job.meta["gpu_resource"]) == ("completed", 0, MIG)
        assert "on a MIG slice" in Path(job.log_path).read_text()


async def test_a_health_check_runs_as_a_pod(tmp_path, test_image):
    async with node_cluster(tmp_path) as (fake, svc, node):
        c = Config()
        c.ContainerOptions.image = test_image
        from traitlets.config import Configurable

        parent = Configurable(config=c)
        await check_allowed(svc, test_image, gpus="none", parent=parent)
        with pytest.raises(Forbidden, match="cannot read an image's labels"):
            await check_allowed(svc, "someone/else:1", parent=parent)
        report = await check_image(svc, test_image, gpus="none", parent=parent, timeout=120)
        assert report["target"] == {"image": test_image, "gpus": "none"}
        assert next(c for c in report["checks"] if c["id"] == "torch_import")["status"] == "pass", report["checks"]
        assert any("cannot read its labels" in n for n in report["notes"])
        assert objects(fake, "pods") == []  # run_once deletes it
        # a check inside a kernel's pod would need pods/exec, which the Role does not grant
        with pytest.raises(ConfigError, match=r"pods/exec, which the Kubernetes backend's Role"):
            await svc.exec("ptcuda-kernel-0a1b2c3d-aaaaaa", ["true"])


async def test_a_job_nobody_watches_is_adopted_by_the_next_reconcile(tmp_path, test_image):
    """`jupyter ptcuda run` without --wait: the Job runs on its own; the server's reconcile watches it."""
    async with jobs_on_kube(tmp_path, test_image) as (fake, mgr, proj):
        job = await mgr.submit(JobRequest(path=script(proj, "quick.py", "print('alone')\n"), gpus="none"), watch=False)
        assert job.state == "queued" and job.container_id == (await the_job(fake))["metadata"]["name"]
        server = JobManager(service=mgr.service, config=mgr.config, db_path=mgr.db_path, poll_interval=0.2,
                            reconcile_interval=0)
        try:
            await server.start()  # reconcile(adopt=True)
            job = await finished(server, job.id)
        finally:
            await server.stop()
        assert (job.state, job.exit_code) == ("completed", 0) and "alone" in Path(job.log_path).read_text()


def cli_env(tmp_path, svc, test_image) -> dict[str, str]:
    """The environment of a CLI command whose jupyter_server_config.py selects the Kubernetes backend (a
    kubeconfig to the in-memory API server)."""
    import yaml

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "jupyter_server_config.py").write_text(
        "c.ContainerBackend.backend = 'kubernetes'\n"
        f"c.KubeBackend.namespace = 'hub'\nc.KubeBackend.notebook_root = {str(tmp_path / 'home')!r}\n"
        f"c.JobOptions.image = {test_image!r}\nc.JobOptions.gpus = 1\nc.ContainerOptions.image = {test_image!r}\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": svc._configuration.host}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": "hub"}}]}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(cfg), "KUBECONFIG": str(kubeconfig),
           "JUPYTER_PTCUDA_JOBS_DB": str(tmp_path / "cli-jobs.sqlite")}
    for var in ("JUPYTER_PTCUDA_BACKEND", "JUPYTER_PTCUDA_BROKER_URL", "KUBERNETES_SERVICE_HOST"):
        env.pop(var, None)
    return env


async def test_the_cli_runs_a_job_on_kubernetes_from_the_server_config(tmp_path, test_image):
    """`jupyter ptcuda run --wait` with c.ContainerBackend.backend = "kubernetes" in jupyter_server_config.py:
    the CLI makes the Kubernetes service from the config files (kubeconfig → the in-memory API server)."""
    import sys

    async with node_cluster(tmp_path) as (fake, svc, node):
        proj = project(tmp_path)
        env = cli_env(tmp_path, svc, test_image)
        path = script(proj, "cli.py", "print('from the cli', flush=True)\nraise SystemExit(5)\n")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "jupyter_ptcuda.cli", "run", path, "--gpus",
                                                    "none", "--timeout", "300", "--wait", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 5, err.decode()
        assert b"from the cli" in out and b"pending: " in err  # "job … pending: waiting for a node in …"
        assert b"failed, exit code 5" in err and b"Unclosed" not in err
        assert objects(fake, "jobs") == [] and objects(fake, "pods") == []


async def test_a_job_from_a_kernel_pod_runs_in_its_configuration(tmp_path, test_image, monkeypatch):
    """Run as job from a kernel (kernel_id): the kernel's image, user, GPU count and its kernelspec's
    gpu_resource (a MIG profile), from its provisioner in this server."""
    from jupyter_client.multikernelmanager import AsyncMultiKernelManager

    from jupyter_ptcuda.kernelspec import make_kernel_json

    root = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    (root / "kernels" / "ptcuda-mig").mkdir(parents=True)
    (root / "kernels" / "ptcuda-mig" / "kernel.json").write_text(json.dumps(make_kernel_json(
        "PyTorch (MIG)", {"image": test_image, "gpus": 1, "gpu_resource": MIG})))
    async with jobs_on_kube(tmp_path, test_image, capacity={MIG: "2"}, gpu_resources=("nvidia.com/gpu", MIG)) \
            as (fake, mgr, proj):
        mkm = AsyncMultiKernelManager()
        kid = await mkm.start_kernel(kernel_name="ptcuda-mig", cwd=str(proj))
        try:
            mgr._kernel_manager = mkm
            path = script(proj, "from_kernel.py", "import os\nprint('as', os.getuid(), flush=True)\n")
            job = await mgr.submit(JobRequest(path=path, kernel_id=kid))
            limits = (await the_job(fake))["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert limits == {MIG: "1"}
            job = await finished(mgr, job.id)
            assert (job.state, job.exit_code, job.image, job.kernel_id) == ("completed", 0, test_image, kid)
            assert "as 1000" in Path(job.log_path).read_text()
            # from a process that did not start the kernel (`jupyter ptcuda run --from-kernel` beside the
            # server: no kernel manager): the same configuration, from the kernel pod's own record
            mgr._kernel_manager = None
            for _ in range(200):  # the first job's Job is deleted once it is recorded
                if not objects(fake, "jobs"):
                    break
                await asyncio.sleep(0.05)
            assert objects(fake, "jobs") == []
            job = await mgr.submit(JobRequest(path=path, kernel_id=kid[:8]))
            limits = (await the_job(fake))["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert limits == {MIG: "1"}
            job = await finished(mgr, job.id)
            assert (job.state, job.exit_code, job.image, job.kernel_id) == ("completed", 0, test_image, kid[:8])
            assert "as 1000" in Path(job.log_path).read_text()
        finally:
            await mkm.shutdown_all(now=True)


async def test_the_cli_health_check_of_an_image_runs_as_a_pod(tmp_path, test_image):
    """`jupyter ptcuda health --image` (a CI gate) on the Kubernetes backend from the server config: the
    image policy and the check in one command; the report comes back and, no GPU having been asked for,
    CUDA is a skip (by choice: no red FAIL) and the gate passes; no pod and no open session left."""
    import sys

    async with node_cluster(tmp_path) as (fake, svc, node):
        env = cli_env(tmp_path, svc, test_image)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "jupyter_ptcuda.cli", "health", "--image",
                                                    test_image, "--gpus", "none", "--json", env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert out, err.decode()  # a report, not an error that stopped the check
        status = {c["id"]: c["status"] for c in json.loads(out)["checks"]}
        assert (status["torch_import"], status["cuda_available"]) == ("pass", "skip"), status
        assert "no GPU requested" in json.loads(out)["cuda"]["reason"]
        assert proc.returncode == 0, err.decode()
        assert b"Unclosed" not in err, err.decode()
        assert objects(fake, "pods") == []
