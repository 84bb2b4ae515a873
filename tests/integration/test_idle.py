"""The idle measure behind reclamation, on real containers: CPU time from the engine, GPU utilisation from
the (fake) NVML sampler; and the broker's reclaimer asking, then enforcing, then marking done."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time

import pytest

from jupyter_ptcuda.broker.idle import Reclaimer
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.containers.idle import IdleWatch
from jupyter_ptcuda.containers.spec import ContainerSpec
from jupyter_ptcuda.nvml.sampler import GpuSampler
from jupyter_ptcuda_testing.nvml import make_fake_nvml
from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


async def _kernel(engine, kid: str, gpus: str, command: tuple[str, ...]) -> str:
    labels = {L.KIND: "kernel", L.KERNEL_ID: kid, L.GPUS: gpus, L.OWNER: "alice", L.NOTEBOOK: f"{kid}.ipynb",
              L.SERVER_ID: f"{socket.gethostname()}:{os.getpid()}:0", L.SERVER_PID: str(os.getpid())}
    return await engine.run(ContainerSpec(image=DEBIAN_BASE, command=command, user="65534:65534", workdir="/tmp",
                                          labels=labels))


@pytest.fixture
def sampler():
    s = GpuSampler(make_fake_nvml("3:idle=0+1,busy=2"), interval=0.2)  # GPU 2 at 80-100 %
    s.ensure_started()
    assert s.wait_ready(5)
    yield s
    s.stop()


async def test_only_kernels_that_do_nothing_with_their_gpus_count_as_idle(engine, sampler):
    made = []
    try:
        made.append(await _kernel(engine, "k-idle", "0", ("sleep", "600")))
        made.append(await _kernel(engine, "k-cpu", "1", ("sh", "-c", "while :; do :; done")))
        made.append(await _kernel(engine, "k-gpu", "2", ("sleep", "600")))  # asleep, but its GPU works
        made.append(await _kernel(engine, "k-none", "none", ("sleep", "600")))  # holds no GPU: never reclaimed
        watch = IdleWatch(DockerContainerService(engine), sampler.snapshot)
        first = {k.state.tag.id: k.idle_s for k in await watch.check()}
        assert set(first) == {"k-idle", "k-cpu", "k-gpu"} and all(v == 0 for v in first.values())  # first sight: active
        deadline = time.monotonic() + 30
        while True:  # checks, as the reclaimer makes them, until the idle one has been idle 2.5 s
            await asyncio.sleep(0.5)
            idle = {k.state.tag.id: k for k in await watch.check()}
            if idle["k-idle"].idle_s >= 2.5:
                break
            assert time.monotonic() < deadline, f"k-idle not idle for 2.5 s in 30 s: {idle}"
        assert idle["k-idle"].gpus == ("0",)
        assert idle["k-cpu"].idle_s == 0 and idle["k-gpu"].idle_s == 0
    finally:
        for cid in made:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


async def test_the_reclaimer_asks_then_removes_then_says_done(engine, sampler):
    service = DockerContainerService(engine)
    made = [await _kernel(engine, "k-forgotten", "0", ("sleep", "600")),
            await _kernel(engine, "k-busy", "1", ("sh", "-c", "while :; do :; done"))]
    try:
        async def remove(state) -> None:  # the one broker operation the reclaimer uses (as op remove)
            await service.remove(state.id)

        reclaimer = Reclaimer(remove, IdleWatch(service, sampler.snapshot), timeout=1.5, grace=1.5)
        await reclaimer.step()
        assert reclaimer.since("alice", 0) == []
        for _ in range(10):
            await asyncio.sleep(0.5)
            await reclaimer.step()
            if reclaimer.since("alice", 0):
                break
        [notice] = reclaimer.since("alice", 0)
        assert notice["state"] == "requested" and notice["kernel_id"] == "k-forgotten" and notice["gpus"] == ["0"]
        assert "Kernel k-forgot (k-forgotten.ipynb) held GPU 0 without using it" in notice["message"]
        assert "c.PtcudaBroker.idle_gpu_timeout" in notice["message"] and "start the kernel again" in notice["message"]
        assert reclaimer.since("bob", 0) == []  # another user sees nothing of it
        asked_at = notice["updated"]
        deadline = time.monotonic() + 30
        while not reclaimer.since("alice", asked_at):  # nobody shuts it down within the grace: the broker removes it
            assert time.monotonic() < deadline, "the reclaimer did not enforce within 30 s"
            await asyncio.sleep(0.2)
            await reclaimer.step()
        assert reclaimer.since("alice", asked_at)[0]["state"] == "enforced"
        assert await service.inspect(made[0]) is None
        assert (await service.inspect(made[1])).running  # the busy kernel is left alone
        await reclaimer.step()
        assert reclaimer.since("alice", 0)[0]["state"] == "enforced"  # gone now; it stays 'enforced'
    finally:
        for cid in made:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
