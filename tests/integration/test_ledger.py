"""The GPU ledger is rebuilt from container labels: a restarted server sees who holds what."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from jupyter_ptcuda.errors import GpuUnavailable
from jupyter_ptcuda.ledger import GpuLedger
from jupyter_ptcuda.nvml.fake import make_fake_nvml
from jupyter_ptcuda.nvml.sampler import GpuSampler
from jupyter_ptcuda.spec import (
    LABEL_GPUS,
    LABEL_JOB_ID,
    LABEL_KERNEL_ID,
    LABEL_KIND,
    LABEL_SERVER_ID,
    LABEL_SERVER_PID,
    ContainerSpec,
    GpuRequest,
)
from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


async def test_ledger_rebuilt_from_labels(engine, test_image):
    sampler = GpuSampler(make_fake_nvml("3"), interval=0.1)
    sampler.ensure_started()
    assert sampler.wait_ready(5)
    held = []
    try:
        # containers left by "a previous server process": a kernel on GPU 0 and a job on GPU 2
        for labels in ({LABEL_KIND: "kernel", LABEL_KERNEL_ID: "k-before-restart", LABEL_GPUS: "0"},
                       {LABEL_KIND: "job", LABEL_JOB_ID: "j-before-restart", LABEL_GPUS: "2"}):
            labels |= {LABEL_SERVER_ID: f"{socket.gethostname()}:{os.getpid()}:0", LABEL_SERVER_PID: str(os.getpid())}
            spec = ContainerSpec(image=DEBIAN_BASE, command=("sleep", "600"), user="65534:65534", workdir="/tmp",
                                 labels=labels)
            held.append(await engine.run(spec))
        ledger = GpuLedger(engine, sampler.snapshot)  # a fresh ledger: nothing in memory
        holders = await ledger.holders()
        assert [h["id"] for h in holders["0"]] == ["k-before-restart"]
        assert [h["id"] for h in holders["2"]] == ["j-before-restart"]
        assert await ledger.assign("k-new", GpuRequest("count", count=1)) == GpuRequest("ids", ids=("1",))
        with pytest.raises(GpuUnavailable, match="j-before") as err:
            await ledger.assign("k-other", GpuRequest("ids", ids=("2",)))
        assert "GPU 2 is held by job" in str(err.value)
        shared = GpuLedger(engine, sampler.snapshot, sharing="shared")
        assert (await shared.assign("k-share", GpuRequest("ids", ids=("2",)))).ids == ("2",)
    finally:
        sampler.stop()
        for cid in held:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
