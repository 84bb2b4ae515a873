"""The GPU ledger is rebuilt from container labels: a restarted server sees who holds what."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.containers.spec import ContainerSpec, GpuRequest
from jupyter_ptcuda.errors import GpuUnavailable
from jupyter_ptcuda.nvml.sampler import GpuSampler
from jupyter_ptcuda_testing.nvml import make_fake_nvml
from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


async def test_ledger_rebuilt_from_labels(engine, test_image):
    sampler = GpuSampler(make_fake_nvml("3"), interval=0.1)
    sampler.ensure_started()
    assert sampler.wait_ready(5)
    held = []
    try:
        # containers left by "a previous server process": a kernel on GPU 0 and a job on GPU 2
        for labels in ({L.KIND: "kernel", L.KERNEL_ID: "k-before-restart", L.GPUS: "0"},
                       {L.KIND: "job", L.JOB_ID: "j-before-restart", L.GPUS: "2"}):
            labels |= {L.SERVER_ID: f"{socket.gethostname()}:{os.getpid()}:0", L.SERVER_PID: str(os.getpid())}
            spec = ContainerSpec(image=DEBIAN_BASE, command=("sleep", "600"), user="65534:65534", workdir="/tmp",
                                 labels=labels)
            held.append(await engine.run(spec))
        ledger = GpuLedger(DockerContainerService(engine), sampler.snapshot)  # a fresh ledger: nothing in memory
        holders = await ledger.holders()
        assert [h["id"] for h in holders["0"]] == ["k-before-restart"]
        assert [h["id"] for h in holders["2"]] == ["j-before-restart"]
        assert await ledger.assign("k-new", GpuRequest("count", count=1)) == GpuRequest("ids", ids=("1",))
        with pytest.raises(GpuUnavailable, match="j-before") as err:
            await ledger.assign("k-other", GpuRequest("ids", ids=("2",)))
        assert "GPU 2 is held by job" in str(err.value)
        shared = GpuLedger(DockerContainerService(engine), sampler.snapshot, sharing="shared")
        assert (await shared.assign("k-share", GpuRequest("ids", ids=("2",)))).ids == ("2",)
    finally:
        sampler.stop()
        for cid in held:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
