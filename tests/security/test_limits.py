"""Attack: ask the server for more than the operator allows (issue 9, the request part).

The operator's options are ceilings and allowlists: with ``c.JobOptions.mem_limit = "1g"`` a REST job
asking for no limit or 1 TiB, with ``c.JobOptions.gpus = "none"`` one asking for every GPU, a job or a
health check in an image the operator did not allow, or a job from a kernel asking for more than that
kernel has: each is a 403 whose message names the limit; what is within the limits runs, with the
limit the engine shows.

Through a real Jupyter server (auth on) on the real engine with the CPU test image, as root (CI).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json
from tests.conftest import DEBIAN_BASE, TEST_IMAGE
from tests.integration.conftest import hook_engine
from tests.security.conftest import server_job_root
from tests.server.conftest import api  # noqa: F401 - the REST client fixture (validates against openapi.yaml)
from tests.server.helpers import wait_for

pytestmark = pytest.mark.integration
MIB = 1024**2
MEM_SCRIPT = ("import time\nfor p in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):\n"
              "    try:\n        print('memory limit', open(p).read().strip())\n        break\n"
              "    except OSError:\n        pass\ntime.sleep(2)\n")


def server_config(**sections):
    """The server's config: the extension (fake two-GPU NVML), fast job polling, plus ``sections``."""
    config = {"ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True}},
              "PtcudaExtension": {"nvml": "fake:2:model=H100+L4", "sample_interval": 0.2, "freeze_gc": False,
                                  "health_timeout": 120.0},
              "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.5}}
    for name, traits in sections.items():
        config[name] = {**config.get(name, {}), **traits}
    return config


@pytest.fixture
def jp_server_config(request):
    """``server_config(...)`` of the test's ``indirect`` param (the plain server without one)."""
    return getattr(request, "param", None) or server_config()


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir, engine, test_image):
    """A private job store, the test image as the jobs' image, nb/ owned by the kernel/job uid; every job
    container of this root removed afterwards."""
    yield from server_job_root(jp_root_dir, tmp_path, monkeypatch, {"mem.py": MEM_SCRIPT, "hello.py": "print('hello from the job')\n"})


def terminal(status, body):
    return status == 200 and body["state"] not in ("queued", "running")


async def refused(api, path, body, *words):  # noqa: F811 - api is the fixture's callable
    status, reply, _ = await api("POST", path, body)
    assert status == 403, (body, status, reply)
    for w in words:
        assert w in reply["message"], (w, reply["message"])
    return reply["message"]


async def memory_of_job(api, job):  # noqa: F811
    """The memory limit the engine gave the job's container, and the one the job saw (its log)."""
    inspected = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.Memory}}", job["container_id"]],
                               capture_output=True, text=True).stdout.strip()
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=90)
    _, log, _ = await api("GET", f"jobs/{job['id']}/log")
    return int(inspected or 0), done, log


@pytest.mark.parametrize("jp_server_config", [server_config(JobOptions={"mem_limit": "1g"})], indirect=True)
async def test_memory_limit_is_a_ceiling(api):  # noqa: F811
    await refused(api, "jobs", {"path": "nb/mem.py", "gpus": "none", "mem_limit": "1t"},
                  "mem_limit '1t' is above the operator's limit c.JobOptions.mem_limit = '1g'", "ask for at most 1g")
    for no_limit in (0, ""):
        await refused(api, "jobs", {"path": "nb/mem.py", "gpus": "none", "mem_limit": no_limit},
                      "asks for no limit", "c.JobOptions.mem_limit = '1g'", "ask for at most 1g")
    status, jobs, _ = await api("GET", "jobs")
    assert status == 200 and jobs == []  # nothing was started or recorded

    status, job, _ = await api("POST", "jobs", {"path": "nb/mem.py", "gpus": "none", "mem_limit": "512m"})
    assert status == 201, job
    inspected, done, log = await memory_of_job(api, job)
    assert inspected == 512 * MIB and done["state"] == "completed", (inspected, done)
    assert f"memory limit {512 * MIB}" in log

    status, job, _ = await api("POST", "jobs", {"path": "nb/mem.py", "gpus": "none"})  # unset: the ceiling itself
    assert status == 201, job
    inspected, done, log = await memory_of_job(api, job)
    assert inspected == 1024 * MIB and f"memory limit {1024 * MIB}" in log


@pytest.mark.parametrize("jp_server_config", [server_config(JobOptions={"gpus": "none"})], indirect=True)
async def test_no_gpus_means_none(api):  # noqa: F811
    for gpus in ("all", 1, ["0"]):
        await refused(api, "jobs", {"path": "nb/hello.py", "gpus": gpus}, "c.JobOptions.gpus = 'none'",
                      "no GPU is allowed")
    status, job, _ = await api("POST", "jobs", {"path": "nb/hello.py", "gpus": "none"})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=90)
    assert done["state"] == "completed" and done["gpus"] == "none"


@pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")
@pytest.mark.parametrize("jp_server_config", [server_config(JobOptions={"gpus": 1})], indirect=True)
async def test_gpu_count_is_a_ceiling(api):  # noqa: F811
    for gpus in ("all", 2, ["0", "1"]):
        await refused(api, "jobs", {"path": "nb/hello.py", "gpus": gpus}, "c.JobOptions.gpus = 1",
                      "ask for at most 1 GPU(s)")
    status, job, _ = await api("POST", "jobs", {"path": "nb/hello.py", "gpus": 1})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=90)
    assert done["state"] == "completed" and done["gpus"] in ("0", "1")


@pytest.mark.parametrize("jp_server_config", [server_config()], indirect=True)
async def test_images_must_be_allowed(api, engine):  # noqa: F811
    """Default policy: the configured image and images built by `jupyter ptcuda image build` only. The Debian
    base is a local image too, but neither: refused for jobs and health checks."""
    await refused(api, "jobs", {"path": "nb/hello.py", "gpus": "none", "image": DEBIAN_BASE},
                  f"image '{DEBIAN_BASE}' is not allowed", "c.ContainerPolicy.allowed_images")
    await refused(api, "health", {"image": DEBIAN_BASE, "gpus": "none"}, f"image '{DEBIAN_BASE}' is not allowed")
    await refused(api, "jobs", {"path": "nb/hello.py", "gpus": "none", "image": "jupyter-ptcuda/absent:0"},
                  "is not allowed", "not present on this Docker engine")
    status, entries, _ = await api("GET", "health")
    assert status == 200 and entries == []  # nothing was started

    status, job, _ = await api("POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "image": TEST_IMAGE})
    assert status == 201, job  # the configured (and labelled) image runs
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=90)
    assert done["state"] == "completed"


@pytest.mark.parametrize("jp_server_config", [server_config(ContainerPolicy={"allowed_images": ["jupyter-ptcuda/debian-*"]})],
                         indirect=True)
async def test_allowed_images_pattern_lets_an_image_in(api):  # noqa: F811
    status, job, _ = await api("POST", "jobs", {"path": "nb/hello.py", "gpus": "none", "image": DEBIAN_BASE})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=90)
    _, log, _ = await api("GET", f"jobs/{job['id']}/log")
    assert done["state"] == "completed" and "hello from the job" in log, (done, log)


@pytest.fixture
def limited_kernelspec(jp_data_dir, test_image):
    d = jp_data_dir / "kernels" / "ptcuda-limited"
    d.mkdir(parents=True)
    spec = make_kernel_json("PyTorch (512m, no GPU)", {"image": test_image, "gpus": "none", "mem_limit": "512m"})
    (d / "kernel.json").write_text(json.dumps(spec))
    return "ptcuda-limited"


@pytest.mark.parametrize("jp_server_config", [server_config()], indirect=True)
async def test_job_from_a_kernel_only_narrows_the_kernel(api, jp_fetch, jp_serverapp, limited_kernelspec):  # noqa: F811
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": limited_kernelspec, "path": "nb"}),
                       request_timeout=120)
    kid = json.loads(r.body)["id"]
    try:
        await refused(api, "jobs", {"path": "nb/mem.py", "kernel_id": kid, "mem_limit": "1g"},
                      "mem_limit '1g' is above the memory limit of kernel", "(512m)", "ask for at most 512m")
        await refused(api, "jobs", {"path": "nb/mem.py", "kernel_id": kid, "mem_limit": 0}, "asks for no limit")
        await refused(api, "jobs", {"path": "nb/mem.py", "kernel_id": kid, "gpus": 1},
                      "beyond the GPUs of kernel", "no GPU is allowed")
        status, job, _ = await api("POST", "jobs", {"path": "nb/mem.py", "kernel_id": kid, "mem_limit": "256m"})
        assert status == 201, job
        inspected, done, log = await memory_of_job(api, job)
        assert inspected == 256 * MIB and f"memory limit {256 * MIB}" in log and done["state"] == "completed"
        status, job, _ = await api("POST", "jobs", {"path": "nb/mem.py", "kernel_id": kid})  # the kernel's own
        assert status == 201, job
        inspected, done, log = await memory_of_job(api, job)
        assert inspected == 512 * MIB and done["state"] == "completed"
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)
