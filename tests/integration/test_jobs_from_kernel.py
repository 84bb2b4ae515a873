"""A job from a running kernel gets the kernel's environment and nothing private: not its connection
file, not its ipc sockets (with which a job could drive the kernel), not its shared namespace."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest

pytestmark = pytest.mark.integration

PROBE = """import os, sys
conn = os.environ.get("PROBE_DIR", "")
print("key-file", os.path.exists("/run/ptcuda/kernel.json"))
print("ipc-dir", os.path.exists(conn) and bool(os.listdir(conn)))
print("uid", os.getuid())
"""


@pytest.fixture(autouse=True)
def jobs_db(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))


@pytest.mark.parametrize("config", [{}, {"network_mode": "shared"}], ids=["ipc-default", "shared"])
@pytest.mark.parametrize("via", ["cli", "server"])
async def test_a_job_from_a_kernel_gets_nothing_private(engine, kernelspec, notebook_dir, config, via):
    km = AsyncKernelManager(kernel_name=kernelspec(**config))
    await km.start_kernel(cwd=str(notebook_dir))
    try:
        kernel = await engine.inspect(km.provisioner.container_id)
        private = kernel["Config"]["Labels"]["io.jupyter-ptcuda.kernel-dir"]
        assert any(b.startswith(private + ":") for b in kernel["HostConfig"]["Binds"])
        (notebook_dir / "probe.py").write_text(PROBE.replace('os.environ.get("PROBE_DIR", "")', repr(private)))
        path = str(notebook_dir / "probe.py")
        if via == "cli":
            done = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "run", path, "--from-kernel",
                                   km.kernel_id, "--wait"], capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stderr
            out = done.stdout
        else:
            class KernelManagers:  # what the server's MultiKernelManager offers
                def get_kernel(self, kernel_id):
                    return km

            mgr = JobManager(service=DockerContainerService(engine), kernel_manager=KernelManagers(), poll_interval=0.5)
            try:
                job = await mgr.submit(JobRequest(path=path, kernel_id=km.kernel_id), watch=False)
                info = await engine.inspect(job.container_id)
                assert not any(private in b or ":/run/ptcuda" in b for b in info["HostConfig"]["Binds"])
                assert info["HostConfig"]["NetworkMode"] == "bridge"
                job = await mgr.watch(job.id)
                assert job.state == "completed", job.reason
                out = (await mgr.read_log(job.id))[0].decode()
            finally:
                with contextlib.suppress(Exception):
                    await mgr.stop()
        assert "key-file False" in out and "ipc-dir False" in out, out
        assert f"uid {kernel['Config']['User'].split(':')[0]}" in out  # same user as the kernel
    finally:
        await km.shutdown_kernel(now=True)
        if config.get("network_mode") == "shared":
            from jupyter_ptcuda.containers.docker.netns import remove_holder

            await remove_holder(DockerContainerService(engine))
