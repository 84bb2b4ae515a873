"""The GPU queue in the allocation layer, with jobs: a job whose GPUs are held waits (queued, with its reason
and place) and starts by itself when they free up; cancel while queued; never-satisfiable requests refused at
once; the line survives a restart of the job manager, in order, each job once. In-memory backend
(tests/fakes/backend.py), fake GPUs (a ledger snapshot), one fake clock; no sleep: states waited for with a
deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.allocating import AllocatingService
from jupyter_ptcuda.containers.dispatch import GpuQueue
from jupyter_ptcuda.containers.gpus import GpuRequest
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.containers.spec import ContainerSpec
from jupyter_ptcuda.errors import ConfigError, GpuUnavailable
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from jupyter_ptcuda.jobs.store import Job
from tests.fakes.backend import FakeBackend, FakeClock, Program


def snapshot(n: int) -> Callable[[], dict[str, Any]]:
    gpus = [{"index": i, "uuid": f"GPU-{i:08d}", "state": "ok", "utilization_gpu": 0, "memory_used": 0} for i in range(n)]
    return lambda: {"state": "ok", "gpus": gpus}


def layer(fake: FakeBackend, clock: FakeClock, gpus: int = 2) -> tuple[AllocatingService, GpuQueue]:
    ledger = GpuLedger(fake, snapshot(gpus))
    queue = GpuQueue(ledger, clock=clock.time, poll_interval=0.05)
    ledger.queue = queue
    return AllocatingService(fake, ledger), queue


@pytest.fixture
def script(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "train.py"
    path.write_text("print('training')\n")
    return path


@contextlib.asynccontextmanager
async def manager(tmp_path: Path, fake: FakeBackend, clock: FakeClock) -> AsyncIterator[tuple[JobManager, GpuQueue]]:
    service, queue = layer(fake, clock)
    mgr = JobManager(service=service, db_path=str(tmp_path / "jobs.sqlite"), poll_interval=0.01, cancel_grace=1.0,
                     reconcile_interval=0, import_check=False)
    mgr.clock, mgr.monotonic = clock.time, clock.monotonic
    try:
        yield mgr, queue
    finally:
        await mgr.stop()
        await queue.close()


async def until(what: str, check: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := await check()):
        assert time.monotonic() < deadline, f"not {what} within {within:.0f} s"
        await asyncio.sleep(0.01)
    return got


async def in_state(mgr: JobManager, job_id: str, state: str) -> Job:
    async def check() -> Job | None:
        job = await mgr.get(job_id)
        return job if job.state == state else None

    return await until(f"job {job_id} {state}", check)


def submit(mgr: JobManager, script: Path, name: str, gpus: Any = 1) -> Any:
    return mgr.submit(JobRequest(path=str(script), gpus=gpus, name=name))


async def test_a_job_whose_gpus_are_held_waits_with_its_place_and_starts_when_they_free_up(tmp_path, script):
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        first = await submit(mgr, script, "train-lr0.1")
        second = await submit(mgr, script, "train-lr0.2")
        assert (first.state, second.state) == ("running", "running")
        assert {first.gpus, second.gpus} == {"0", "1"}  # each its own GPU of the two
        third = await submit(mgr, script, "train-lr0.3")  # not a 409: it waits
        assert third.state == "queued" and third.container_id is None
        assert third.reason == ("waiting for 1 GPU: next in line; "
                                "GPUs held by your job train-lr0.1 and your job train-lr0.2")
        fourth = await submit(mgr, script, "train-lr0.4")
        assert fourth.reason.startswith("waiting for 1 GPU: 1 request ahead of you;")
        assert {k: v["place"] for k, v in queue.view().items()} == {third.id: 1, fourth.id: 2}
        clock.advance(30)
        fake.exit(first.container_id, 0)  # the first job ends: its GPU goes to the third, by itself
        started = await in_state(mgr, third.id, "running")
        assert started.gpus == first.gpus and started.waited() == pytest.approx(30, abs=1)
        job = await mgr.get(fourth.id)
        assert job.state == "queued" and job.reason.startswith("waiting for 1 GPU: next in line;")
        assert queue.waited.count == 3 and queue.waited.sum == pytest.approx(30, abs=1)  # two at once, one 30 s
        fake.exit(second.container_id, 0)
        assert (await in_state(mgr, fourth.id, "running")).gpus == second.gpus
        assert len(queue) == 0


async def test_cancel_while_queued_leaves_the_line(tmp_path, script):
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        a = await submit(mgr, script, "a", gpus=2)
        waiting = await submit(mgr, script, "waits")
        behind = await submit(mgr, script, "behind")
        assert (waiting.state, behind.state) == ("queued", "queued")
        cancelled = await mgr.cancel(waiting.id)
        assert (cancelled.state, cancelled.reason, cancelled.container_id) == ("cancelled", "cancelled", None)
        assert list(queue.view()) == [behind.id] and queue.view()[behind.id]["place"] == 1
        fake.exit(a.container_id, 0)
        assert (await in_state(mgr, behind.id, "running")).container_id
        assert (await mgr.get(waiting.id)).state == "cancelled"
        assert not await fake.list(L.JOB, id=waiting.id)  # it never got a container
        assert await mgr._db(mgr.store.launch_of, waiting.id) is None


async def test_a_job_cancelled_by_another_process_leaves_this_servers_line(tmp_path, script):
    """`jupyter ptcuda jobs cancel` (its own JobManager on the same store) cancels a queued job: the server's
    next reconcile takes it out of its line, so it never gets a container."""
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        holder = await submit(mgr, script, "holder", gpus=2)
        waiting = await submit(mgr, script, "waits")
        cli = JobManager(service=fake, db_path=str(tmp_path / "jobs.sqlite"), reconcile_interval=0, import_check=False)
        assert (await cli.cancel(waiting.id)).state == "cancelled"
        await mgr.reconcile(adopt=True)
        assert len(queue) == 0
        fake.exit(holder.container_id, 0)
        await in_state(mgr, holder.id, "completed")
        assert not await fake.list(L.JOB, id=waiting.id) and (await mgr.get(waiting.id)).state == "cancelled"


@pytest.mark.parametrize("gpus,words", [(3, r"3 GPU\(s\) asked for, but this host has 2: ask for at most 2"),
                                        (["5"], "no GPU 5 on this host")])
async def test_a_request_that_can_never_be_met_is_refused_at_once(tmp_path, script, gpus, words):
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        with pytest.raises(ConfigError, match=words) as err:
            await submit(mgr, script, "too-big", gpus=gpus)
        assert err.value.status == 400
        assert await mgr.list_jobs() == [] and len(queue) == 0  # not recorded, not queued


async def test_callers_that_cannot_wait_are_still_refused_at_once():
    """A health check or probe passes no on_pending: a held GPU is a 409 naming the holder, as before."""
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    service, queue = layer(fake, clock, gpus=1)
    spec = ContainerSpec(image="img", command=("sleep",), user="1000:100", workdir="/tmp",
                         labels={L.KIND: L.JOB, L.JOB_ID: "holder", L.NAME: "holder"}, gpus=GpuRequest("count", count=1))
    await service.launch(spec, claim="holder", on_pending=lambda r: None)
    with pytest.raises(GpuUnavailable, match="GPU 0 is held by job holder"):
        await service.launch(dataclasses_replace(spec, "other"), claim="other")
    told: list[str] = []
    waiter = asyncio.ensure_future(service.launch(dataclasses_replace(spec, "waiter"), claim="waiter", on_pending=told.append))
    await until("told", lambda: asyncio.sleep(0, told))
    waiter.cancel()  # a kernel start given up: it leaves the line, nothing held
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert len(queue) == 0 and told == ["waiting for 1 GPU: next in line; GPU held by your job holder"]
    await queue.close()


def dataclasses_replace(spec: ContainerSpec, claim: str) -> ContainerSpec:
    import dataclasses

    return dataclasses.replace(spec, labels={**spec.labels, L.JOB_ID: claim, L.NAME: claim})


async def test_the_line_survives_a_restart_in_order_and_each_job_runs_once(tmp_path, script):
    """The manager goes away with three jobs waiting (their launch records stay in the store); a new one
    (a new queue, a new ledger: nothing in memory) puts them back in line, in their order."""
    clock = FakeClock(time.time())
    launched: list[str] = []
    fake = FakeBackend(clock, programs=lambda spec: (launched.append(spec.labels[L.NAME]), Program())[1])
    async with manager(tmp_path, fake, clock) as (mgr, _):
        holders = [await submit(mgr, script, f"hold{i}") for i in range(2)]
        queued = []
        for i in range(3):
            clock.advance(1)
            queued.append(await submit(mgr, script, f"q{i}"))
        assert [j.state for j in queued] == ["queued"] * 3
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        await mgr.start()
        await until("all back in line", lambda: asyncio.sleep(0, len(queue) == 3))
        assert [queue.view()[j.id]["place"] for j in queued] == [1, 2, 3]
        await until("its place in the store", lambda: _reason_starts(mgr, queued[2].id, "waiting for 1 GPU: 2 requests ahead"))
        fake.exit(holders[0].container_id, 0)
        await mgr.reconcile(adopt=True)  # the holder's job is finalised (its watcher went with the old manager)
        assert (await in_state(mgr, queued[0].id, "running")).container_id
        assert [(await mgr.get(j.id)).state for j in queued[1:]] == ["queued", "queued"]
        fake.exit(holders[1].container_id, 0)
        await mgr.reconcile(adopt=True)
        await in_state(mgr, queued[1].id, "running")
        fake.exit((await mgr.get(queued[0].id)).container_id, 0)
        await in_state(mgr, queued[2].id, "running")
        await mgr.reconcile(adopt=True)  # again: nothing is started twice
        await mgr.start()
    assert launched == ["hold0", "hold1", "q0", "q1", "q2"]  # in order, each once


async def _reason_starts(mgr: JobManager, job_id: str, text: str) -> bool:
    return ((await mgr.get(job_id)).reason or "").startswith(text)


def gpu_spec(claim: str, owner: str, gpus: GpuRequest) -> ContainerSpec:
    return ContainerSpec(image="img", command=("sleep",), user="1000:100", workdir="/tmp", gpus=gpus,
                         labels={L.KIND: L.JOB, L.JOB_ID: claim, L.NAME: claim, L.OWNER: owner})


async def test_when_a_gpu_frees_the_user_with_less_recent_gpu_time_goes_next():
    """alice holds both GPUs and queues five more 1-GPU jobs; bob queues one after all of hers. When one of
    alice's jobs ends, bob's starts next (fair share), then alice's in her own order."""
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    service, queue = layer(fake, clock)
    one = GpuRequest("count", count=1)
    running = [await service.launch(gpu_spec(f"alice-run{i}", "alice", one), claim=f"alice-run{i}", on_pending=lambda r: None)
               for i in range(2)]
    clock.advance(600)  # alice has used 2 GPUs for 10 minutes
    waiters = {}
    for i in range(5):
        clock.advance(1)
        waiters[f"alice-q{i}"] = asyncio.ensure_future(
            service.launch(gpu_spec(f"alice-q{i}", "alice", one), claim=f"alice-q{i}", on_pending=lambda r: None))
        await until("queued", lambda n=i + 1: asyncio.sleep(0, len(queue) == n))
    clock.advance(1)
    waiters["bob-q0"] = asyncio.ensure_future(
        service.launch(gpu_spec("bob-q0", "bob", one), claim="bob-q0", on_pending=lambda r: None))
    await until("bob queued", lambda: asyncio.sleep(0, len(queue) == 6))
    assert queue.view()["bob-q0"]["place"] == 1  # ahead of alice's five
    order = []
    for launched in running:
        await service.remove(launched.id)  # one of the GPUs frees up
        done, _ = await asyncio.wait(list(waiters.values()), return_when=asyncio.FIRST_COMPLETED, timeout=5)
        assert len(done) == 1
        claim = next(c for c, t in waiters.items() if t in done)
        order.append(claim)
        running.append(waiters.pop(claim).result())
        if len(order) == 3:
            break
    assert order == ["bob-q0", "alice-q0", "alice-q1"]
    for t in waiters.values():
        t.cancel()
    await asyncio.gather(*waiters.values(), return_exceptions=True)
    await queue.close()


async def test_gpus_all_shares_and_never_waits():
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    service, queue = layer(fake, clock)
    await service.launch(gpu_spec("holder", "u", GpuRequest("count", count=2)), claim="holder", on_pending=lambda r: None)
    told: list[str] = []
    launched = await service.launch(gpu_spec("shares", "u", GpuRequest("all")), claim="shares", on_pending=told.append)
    assert launched.spec.gpus.mode == "all" and told == [] and len(queue) == 0
    await queue.close()


async def test_the_cli_without_a_server_queues_a_job_for_the_server_s_line_not_a_409(tmp_path, script):
    """`jupyter ptcuda run` (a JobManager with no GPU queue of its own, as jobs/cli.py makes it) while both GPUs are
    held: the job is kept queued with its launch record and says what starts it; a server's reconcile puts it in
    its line at its first time, and it starts once when a GPU frees."""
    clock = FakeClock(time.time())
    fake = FakeBackend(clock)
    async with manager(tmp_path, fake, clock) as (mgr, queue):
        holders = [await submit(mgr, script, f"hold{i}") for i in range(2)]
        cli = JobManager(service=AllocatingService(fake, GpuLedger(fake, snapshot(2))),  # no queue: a CLI process
                         db_path=str(tmp_path / "jobs.sqlite"), reconcile_interval=0, import_check=False)
        cli.queue_for_server = True
        cli.clock = clock.time
        job = await submit(cli, script, "from-the-cli")
        assert (job.state, job.container_id) == ("queued", None)
        assert job.reason.startswith("waiting for GPUs (1 GPU(s) requested") and "GPU queue of the Jupyter server" \
            in job.reason and "c.JobManager.reconcile_interval" in job.reason, job.reason
        assert await cli._db(cli.store.launch_of, job.id) is not None
        await cli.stop()
        await mgr.reconcile(adopt=True)  # the server's next look
        await until("in the server's line", lambda: asyncio.sleep(0, job.id in queue.view()))
        fake.exit(holders[0].container_id, 0)
        started = await in_state(mgr, job.id, "running")
        assert len(await fake.list(L.JOB, id=job.id)) == 1 and started.gpus == holders[0].gpus
