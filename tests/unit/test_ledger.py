"""The GPU ledger and the allocation layer on the in-memory backend (no engine, no NVML): which devices a
request gets, who is named in a refusal, the one GPU vocabulary, and a claim that lives exactly as long as
its container."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.allocating import AllocatingService
from jupyter_ptcuda.containers.build import Policy, Request, build
from jupyter_ptcuda.containers.gpus import GpuRequest, parse_gpus
from jupyter_ptcuda.containers.identity import Identity
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.errors import ConfigError, GpuUnavailable
from tests.fakes.backend import FakeBackend

ALICE = Identity(uid=1001, gid=100, name="alice", server_id="s-a", server_pid=1)
BOB = Identity(uid=1002, gid=100, name="bob", server_id="s-b", server_pid=2)


def gpus(*loads: int) -> dict:
    """A sampler snapshot: one healthy GPU per load (utilisation %), UUIDs GPU-0000..."""
    return {"state": "ok", "gpus": [{"index": i, "uuid": f"GPU-{i:04d}", "state": "ok", "utilization_gpu": u,
                                     "memory_used": 0} for i, u in enumerate(loads)]}


def spec(who: Identity, id: str, want: str | int, kind: str = L.JOB):
    return build(Request(kind=kind, image="img:1", command=("sleep",), run_as=f"{who.uid}:{who.gid}", workdir="/tmp",
                         mount_workdir=False, gpus=parse_gpus(want), id=id, shm_size=None),
                 Policy(images=("img:1",)), who)


def run(coro):
    return asyncio.run(coro)


def test_a_count_gets_the_least_loaded_free_gpus_and_a_held_one_is_refused_naming_its_holder():
    async def go():
        fake = FakeBackend()
        ledger = GpuLedger(fake, lambda: gpus(90, 10, 50))
        svc = AllocatingService(fake, ledger)
        first = await svc.launch(spec(ALICE, "job-a", 2), claim="job-a")
        assert first.spec.gpus.ids == ("1", "2")  # 10 % and 50 % before 90 %
        assert (await fake.inspect(first.id)).tag.gpus == "1,2"  # the label holds them from now on
        with pytest.raises(GpuUnavailable, match=r"GPU 1 is held by job job-a") as refused:
            await svc.launch(spec(BOB, "job-b", ["1"]), claim="job-b")
        assert "Choose another device" in refused.value.message
        third = await svc.launch(spec(BOB, "job-c", 1), claim="job-c")
        assert third.spec.gpus.ids == ("0",)
        with pytest.raises(GpuUnavailable, match="1 GPU\\(s\\) requested but only 0 of 3 are free"):
            await svc.launch(spec(BOB, "job-d", 1), claim="job-d")
        assert sorted(c.tag.id for c in await fake.list(L.JOB)) == ["job-a", "job-c"]  # nothing started for a refusal

    run(go())


def test_under_the_broker_another_user_s_holder_is_not_named():
    async def go():
        fake = FakeBackend()
        ledger = GpuLedger(fake, lambda: gpus(0, 0))
        ledger.hide_others = True
        svc = AllocatingService(fake, ledger)
        await svc.launch(spec(ALICE, "secret-job", ["0"]), claim="alice/secret-job")
        with pytest.raises(GpuUnavailable) as refused:
            await svc.launch(spec(BOB, "mine", ["0"]), claim="bob/mine")
        assert "another user" in refused.value.message and "secret-job" not in refused.value.message

    run(go())


def test_device_ids_are_canonical_or_refused():
    ledger = GpuLedger(FakeBackend(), lambda: gpus(0, 0))
    assert ledger.canonical(GpuRequest("ids", ids=("GPU-0001", "0"))) == GpuRequest("ids", ids=("1", "0"))
    for bad in (("7",), ("GPU-9999",), ("all",), ("0,1",)):
        with pytest.raises(ConfigError, match="no GPU"):
            ledger.canonical(GpuRequest("ids", ids=bad))
    with pytest.raises(ConfigError, match="listed twice"):
        ledger.canonical(GpuRequest("ids", ids=("0", "GPU-0000")))
    with pytest.raises(ConfigError, match="this host has 2"):
        ledger.canonical(GpuRequest("count", count=3))


def test_a_health_check_s_all_means_every_gpu_nobody_holds():
    async def go():
        fake = FakeBackend()
        svc = AllocatingService(fake, GpuLedger(fake, lambda: gpus(0, 0, 0)))
        await svc.launch(spec(ALICE, "job-a", ["1"]), claim="job-a")
        check = await svc.launch(spec(ALICE, "chk", "all", kind=L.HEALTH), claim="chk")
        assert check.spec.gpus.ids == ("0", "2")
        kernel = await svc.launch(spec(ALICE, "k", "all", kind=L.KERNEL), claim="k")
        assert kernel.spec.gpus.mode == "all"  # a kernel's 'all' shares every GPU: it claims none

    run(go())


def test_a_claim_lives_exactly_as_long_as_its_container():
    async def go():
        fake = FakeBackend()
        ledger = GpuLedger(fake, lambda: gpus(0))
        svc = AllocatingService(fake, ledger)
        first = await svc.launch(spec(ALICE, "a", 1), claim="a")
        assert ledger._pending == {}  # dropped as the container started: its label holds the GPU
        with pytest.raises(GpuUnavailable):
            await svc.launch(spec(BOB, "b", 1), claim="b")
        await fake.remove(first.id)  # removed without anybody calling release()
        again = await svc.launch(spec(BOB, "b", 1), claim="b")
        assert again.spec.gpus.ids == ("0",)
        fake.exit(again.id, 0)  # ended (not removed): no longer holds it either
        assert (await svc.launch(spec(ALICE, "c", 1), claim="c")).spec.gpus.ids == ("0",)

    run(go())
