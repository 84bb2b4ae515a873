"""Idle GPU reclamation on the in-memory backend with a fake clock: which kernels count as idle
(jupyter_ptcuda/containers/idle.py) and what the broker's reclaimer (jupyter_ptcuda/broker/idle.py) does with
them — asks the kernel's user's server, removes the container past the grace, says done. Minutes pass in
microseconds: the test moves the clock, the containers' CPU time and the GPUs' utilisation."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_ptcuda.broker.idle import Reclaimer
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.idle import IdleWatch
from jupyter_ptcuda.containers.spec import ContainerSpec
from tests.fakes.backend import FakeBackend, FakeClock


class Gpus:
    """The NVML sampler's snapshot, three GPUs whose utilisation the test sets."""

    def __init__(self) -> None:
        self.util: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        return {"state": "ok", "gpus": [{"index": i, "state": "ok", "utilization_gpu": self.util.get(str(i), 0)}
                                        for i in range(3)]}


async def kernel(fake: FakeBackend, kid: str, gpus: str, owner: str = "alice") -> str:
    labels = {L.KIND: L.KERNEL, L.KERNEL_ID: kid, L.GPUS: gpus, L.OWNER: owner, L.NOTEBOOK: f"{kid}.ipynb"}
    return (await fake.launch(ContainerSpec(image="img", command=("python",), user="1000:100", workdir="/tmp",
                                            labels=labels))).id


async def idle_times(watch: IdleWatch) -> dict[str, float]:
    return {k.state.tag.id: k.idle_s for k in await watch.check()}


async def test_a_gpu_kernel_that_does_nothing_grows_idle_and_one_using_cpu_or_its_gpu_does_not():
    fake, gpus = FakeBackend(), Gpus()
    watch = IdleWatch(fake, gpus.snapshot, clock=fake.clock.monotonic)
    busy_cpu = await kernel(fake, "k-cpu", "1")
    for kid, held in (("k-idle", "0"), ("k-gpu", "2"), ("k-none", "none"), ("k-all", "all")):
        await kernel(fake, kid, held)
    assert await idle_times(watch) == {"k-idle": 0, "k-cpu": 0, "k-gpu": 0}  # first sight counts as active
    fake.clock.advance(60)
    fake.use_cpu(busy_cpu, 30)  # half a core
    gpus.util["2"] = 90
    assert await idle_times(watch) == {"k-idle": 60, "k-cpu": 0, "k-gpu": 0}
    fake.clock.advance(60)
    fake.use_cpu(busy_cpu, 0.6)  # 1 % of a core: below the 2 % threshold
    gpus.util["2"] = 3  # below 5 %
    assert await idle_times(watch) == {"k-idle": 120, "k-cpu": 60, "k-gpu": 60}
    [idle] = [k for k in await watch.check() if k.state.tag.id == "k-idle"]
    assert idle.gpus == ("0",)


async def test_a_kernel_that_stops_is_forgotten_and_starts_from_zero_if_it_runs_again():
    fake, gpus = FakeBackend(), Gpus()
    watch = IdleWatch(fake, gpus.snapshot, clock=fake.clock.monotonic)
    cid = await kernel(fake, "k-1", "0")
    await watch.check()
    fake.clock.advance(300)
    assert await idle_times(watch) == {"k-1": 300}
    fake.exit(cid, 0)
    assert await idle_times(watch) == {}
    await kernel(fake, "k-1", "0")
    assert await idle_times(watch) == {"k-1": 0}


@pytest.fixture
def reclaim():
    """(reclaimer, fake backend): timeout 600 s, grace 60 s, all on one fake clock."""
    fake = FakeBackend(FakeClock())
    watch = IdleWatch(fake, Gpus().snapshot, clock=fake.clock.monotonic)

    async def remove(state: Any) -> None:  # the one broker operation the reclaimer uses (as op remove)
        await fake.remove(state.id)

    return Reclaimer(remove, watch, timeout=600, grace=60, clock=fake.clock.monotonic, wall=fake.clock.time), fake


async def test_the_reclaimer_asks_the_owner_then_removes_the_kernel_past_the_grace(reclaim):
    reclaimer, fake = reclaim
    forgotten = await kernel(fake, "k-forgotten", "0")
    working = await kernel(fake, "k-working", "1")
    await reclaimer.step()
    fake.clock.advance(599)
    fake.use_cpu(working, 100)
    await reclaimer.step()
    assert reclaimer.since("alice", 0) == []  # not yet
    fake.clock.advance(1)
    await reclaimer.step()
    [notice] = reclaimer.since("alice", 0)
    assert notice["state"] == "requested" and notice["kernel_id"] == "k-forgotten" and notice["gpus"] == ["0"]
    assert "Kernel k-forgot (k-forgotten.ipynb) held GPU 0 without using it for 10 min" in notice["message"]
    assert "c.PtcudaBroker.idle_gpu_timeout = 600 s" in notice["message"]
    assert reclaimer.since("bob", 0) == []
    fake.clock.advance(59)
    await reclaimer.step()
    assert reclaimer.since("alice", 0)[0]["state"] == "requested" and forgotten in fake.boxes  # within the grace
    fake.clock.advance(1)
    await reclaimer.step()
    assert reclaimer.since("alice", 0)[0]["state"] == "enforced"
    assert forgotten not in fake.boxes and working in fake.boxes  # the working kernel is left alone
    await reclaimer.step()
    assert reclaimer.since("alice", 0)[0]["state"] == "enforced"  # gone now; it stays 'enforced'


async def test_a_kernel_its_server_shut_down_within_the_grace_reads_done(reclaim):
    reclaimer, fake = reclaim
    cid = await kernel(fake, "k-1", "0")
    await reclaimer.step()
    fake.clock.advance(600)
    await reclaimer.step()
    asked = reclaimer.since("alice", 0)[0]["updated"]
    await fake.remove(cid)  # the user's server shut the kernel down
    fake.clock.advance(5)
    await reclaimer.step()
    [notice] = reclaimer.since("alice", asked)
    assert notice["state"] == "done"
