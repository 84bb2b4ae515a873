"""The job lifecycle (jupyter_ptcuda/jobs/lifecycle.py) on the in-memory backend with a fake clock: what a
user of `jupyter ptcuda run` / the Jobs API sees when a job completes, fails, runs past its timeout, ignores
a cancel's SIGTERM, waits for a node, or ended while nobody watched. No engine and no sleep: the test moves
the container (tests/fakes/backend.py) and the clock, and waits for the job's state with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_ptcuda.jobs import outputs as O
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from jupyter_ptcuda.jobs.store import Job
from tests.conftest import finished
from tests.fakes.backend import FakeBackend, FakeClock, Program

PENDING = "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


@pytest.fixture
def script(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "train.py"
    path.write_text("print('training')\n")
    return path


@contextlib.asynccontextmanager
async def jobs(tmp_path: Path, program: Program | None = None, **fake_kw: Any) -> AsyncIterator[tuple[JobManager, FakeBackend]]:
    """A JobManager over a fake backend whose containers run ``program``, both on one fake clock."""
    clock = FakeClock(time.time())
    fake = FakeBackend(clock, programs=lambda spec: program or Program(), **fake_kw)
    mgr = JobManager(service=fake, db_path=str(tmp_path / "jobs.sqlite"), poll_interval=0.01, cancel_grace=10.0,
                     reconcile_interval=0, import_check=False)
    mgr.clock, mgr.monotonic = clock.time, clock.monotonic
    try:
        yield mgr, fake
    finally:
        await mgr.stop()


async def until(what: str, check: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := await check()):
        assert time.monotonic() < deadline, f"not {what} within {within:.0f} s"
        await asyncio.sleep(0.01)
    return got


async def in_state(mgr: JobManager, job_id: str, state: str, reason: str | None = None) -> Job:
    async def check() -> Job | None:
        job = await mgr.get(job_id)
        return job if job.state == state and (reason is None or job.reason == reason) else None

    return await until(f"job {job_id} {state} ({reason})", check)


async def test_a_job_that_exits_0_is_completed_keeps_its_whole_output_and_frees_its_container(tmp_path, script):
    async with jobs(tmp_path, Program(output=b"epoch 1\n")) as (mgr, fake):
        job = await mgr.submit(JobRequest(path=str(script), gpus="none"))
        assert job.state == "running" and job.container_id in fake.boxes
        fake.write(job.container_id, b"epoch 2\n")
        fake.exit(job.container_id, 0)
        done = await finished(mgr, job.id, within=10)
        assert (done.state, done.reason, done.exit_code) == ("completed", "completed", 0)
        assert O.read_log(done, 0) == b"epoch 1\nepoch 2\n"
        assert fake.boxes == {} and fake.released == [job.id]


async def test_a_job_killed_for_its_memory_fails_saying_oomkilled(tmp_path, script):
    async with jobs(tmp_path) as (mgr, fake):
        job = await mgr.submit(JobRequest(path=str(script), gpus="none"))
        fake.exit(job.container_id, 137, oom=True)
        done = await finished(mgr, job.id, within=10)
        assert (done.state, done.reason, done.exit_code) == ("failed", "OOMKilled", 137)


async def test_a_job_past_its_timeout_is_stopped_and_reads_timed_out(tmp_path, script):
    async with jobs(tmp_path) as (mgr, fake):
        job = await mgr.submit(JobRequest(path=str(script), gpus="none", timeout=60))
        fake.clock.advance(59)
        looked = fake.looks
        await until("the watcher's next looks", lambda: _true(fake.looks >= looked + 3))
        assert (await mgr.get(job.id)).state == "running" and fake.signals == []
        fake.clock.advance(2)
        done = await finished(mgr, job.id, within=10)
        assert (done.state, done.reason, done.exit_code) == ("timed_out", "timed out", 143)
        assert fake.signals == [(job.container_id, "SIGTERM")]


async def _true(value: bool) -> bool:
    return value


async def test_a_cancel_that_the_job_ignores_is_a_sigkill_after_the_grace(tmp_path, script):
    async with jobs(tmp_path, Program(ignores=frozenset({"SIGTERM"}))) as (mgr, fake):
        job = await mgr.submit(JobRequest(path=str(script), gpus="none"), watch=False)
        cancel = asyncio.ensure_future(mgr.cancel(job.id))
        await until("SIGTERM sent", lambda: _said(fake, "SIGTERM"))
        assert not cancel.done() and (await mgr.get(job.id)).state == "running"
        fake.clock.advance(10.5)  # past cancel_grace
        done = await asyncio.wait_for(cancel, 10)
        assert (done.state, done.reason, done.exit_code) == ("cancelled", "cancelled", 137)
        assert [s for _, s in fake.signals] == ["SIGTERM", "SIGKILL"]


async def _said(fake: FakeBackend, signal: str) -> bool:
    return any(s == signal for _, s in fake.signals)


async def test_a_job_waiting_for_a_node_says_why_then_runs_once_scheduled(tmp_path, script):
    async with jobs(tmp_path, waits_for_scheduler=True) as (mgr, fake):
        fake.hold = PENDING
        job = await mgr.submit(JobRequest(path=str(script), gpus="none"))
        assert job.state == "queued"
        await in_state(mgr, job.id, "queued", f"pending: {PENDING}")
        fake.schedule(job.container_id)
        running = await in_state(mgr, job.id, "running")
        assert running.reason is None and running.started
        fake.exit(job.container_id, 0)
        assert (await finished(mgr, job.id, within=10)).state == "completed"


async def test_reconcile_records_a_job_that_ended_unwatched_and_one_whose_container_vanished(tmp_path, script):
    async with jobs(tmp_path) as (mgr, fake):
        ended = await mgr.submit(JobRequest(path=str(script), gpus="none"), watch=False)
        lost = await mgr.submit(JobRequest(path=str(script), gpus="none"), watch=False)
        fake.exit(ended.container_id, 2)
        await fake.remove(lost.container_id)
        await mgr.reconcile(adopt=False)
        e, g = await mgr.get(ended.id), await mgr.get(lost.id)
        assert (e.state, e.reason, e.exit_code) == ("failed", "failed", 2)
        assert (g.state, g.reason) == ("failed", "container lost")
        assert fake.boxes == {}
