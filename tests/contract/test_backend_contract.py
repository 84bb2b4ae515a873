"""The container backend's contract, the same tests for every backend (tests/contract/conftest.py: the
in-memory fake, Docker on the real engine, Kubernetes against the in-memory API server): launch, inspect,
labels (owner, kind, id, GPUs), logs and follow, wait, signal, remove, list by owner and kind, find; exec,
deadlines and waiting for a scheduler where the backend declares them (skipped with its reason where not).

Docker and Kubernetes need the engine and the test image: in CI their absence fails, never skips."""

from __future__ import annotations

import asyncio

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.gpus import GpuRequest
from jupyter_ptcuda.containers.types import DEADLINE_STATUS

from .conftest import Leg, Workload

RUNS = Workload(("ready",))  # prints, then runs until signalled
ENDS = Workload(("one", "two"), exit=3)


async def running(svc, cid):
    state = await svc.inspect(cid)
    return state if state is not None and state.running else None


async def ended(svc, cid):
    state = await svc.inspect(cid)
    return state is None or (not state.running and state.status != "created")


async def test_a_launched_container_runs_and_its_labels_say_whose_it_is(backend: Leg):
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(RUNS, id="c0ffee000001"))
        state = await backend.until("the container runs", lambda: running(svc, cid))
        assert state.tag.kind == L.JOB and state.tag.id == "c0ffee000001"
        assert state.tag.owner_uid == backend.uid and state.tag.server_id == backend.identity.server_id
        assert state.exit_code is None and state.image == backend.image
        assert await svc.inspect("0" * 12 + "contract-gone") is None


async def test_its_exit_code_and_output_are_read_after_it_ends(backend: Leg):
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(ENDS))
        assert await asyncio.wait_for(svc.wait(cid), backend.within) == 3
        state = await svc.inspect(cid)
        assert state is not None and not state.running and state.exit_code == 3
        assert await backend.until("its whole log", lambda: _logs_are(svc, cid, "one\ntwo\n"))
        assert (await svc.logs(cid, tail=1)).strip() == "two"
        assert await svc.log_bytes(cid) == b"one\ntwo\n"


async def _logs_are(svc, cid, text):
    return await svc.logs(cid) == text


async def test_follow_streams_the_output_to_its_end_and_to_a_sink(backend: Leg):
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(ENDS))
        sunk: list[bytes] = []

        async def collect() -> bytes:
            return b"".join([chunk async for chunk in svc.follow(cid, sunk.append)])

        assert await asyncio.wait_for(collect(), backend.within) == b"one\ntwo\n"
        assert b"".join(sunk) == b"one\ntwo\n"


async def test_sigterm_ends_a_running_container(backend: Leg):
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(RUNS))
        await backend.until("the container runs", lambda: running(svc, cid))
        await svc.signal(cid, "SIGTERM")
        await backend.until("SIGTERM ended it", lambda: ended(svc, cid))
        await svc.signal(cid, "SIGTERM")  # ended (or gone) already: fine


async def test_a_removed_container_is_gone_and_no_longer_listed_as_running(backend: Leg):
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(RUNS))
        await backend.until("the container runs", lambda: running(svc, cid))
        await svc.remove(cid)
        assert cid not in [s.id for s in await svc.list(owner_uid=backend.uid, running=True)]
        await backend.until("it is gone", lambda: _gone(svc, cid))
        await svc.remove(cid)  # gone already: fine


async def _gone(svc, cid):
    return await svc.inspect(cid) is None


async def test_containers_are_listed_and_found_by_owner_kind_and_id(backend: Leg):
    async with backend.session() as svc:
        job = await backend.launch(backend.spec(RUNS, id="aaaa00000001"))
        check = await backend.launch(backend.spec(RUNS, kind=L.HEALTH, id="bbbb00000002"))
        await backend.until("both run", lambda: _all_running(svc, [job, check]))
        assert [s.id for s in await svc.list(L.JOB, owner_uid=backend.uid)] == [job]
        assert sorted(s.id for s in await svc.list(owner_uid=backend.uid, running=True)) == sorted([job, check])
        assert [s.id for s in await svc.list(L.HEALTH, id="bbbb00000002")] == [check]
        assert await svc.list(owner_uid=backend.uid + 1) == []
        assert (await svc.find(L.JOB, "aaaa0000")).id == job


async def _all_running(svc, cids):
    return all([await running(svc, c) for c in cids])


async def test_the_gpus_a_container_was_started_with_are_on_its_labels(backend: Leg):
    backend.require("gpus")
    async with backend.session() as svc:
        cid = await backend.launch(backend.spec(RUNS, gpus=GpuRequest("count", 1)))
        state = await backend.until("the container runs", lambda: running(svc, cid))
        started = backend.started_with[cid].gpus  # a count, or the device an allocating backend gave it
        assert state.tag.gpus == started.label() and (started.count if started.mode == "count" else len(started.ids)) == 1


async def test_a_command_runs_in_a_running_container(backend: Leg):
    async with backend.session() as svc:
        backend.require("exec")
        spec = backend.spec(RUNS)
        cid = await backend.launch(spec)
        await backend.until("the container runs", lambda: running(svc, cid))
        assert await svc.exec(cid, ["sh", "-c", "echo $((6*7))"], user=spec.user) == (0, b"42\n")


async def test_the_backend_ends_a_job_at_its_deadline(backend: Leg):
    async with backend.session() as svc:
        backend.require("deadlines")
        cid = await backend.launch(backend.spec(RUNS), **backend.launch_kw(timeout=1))
        backend.advance(2)
        state = await backend.until("the deadline ended it", lambda: _deadline(svc, cid))
        assert not state.running and state.exit_code is not None


async def _deadline(svc, cid):
    state = await svc.inspect(cid)
    return state if state is not None and state.status == DEADLINE_STATUS else None


async def test_a_container_that_waits_for_the_scheduler_says_why(backend: Leg):
    async with backend.session() as svc:
        backend.require("scheduler")
        async with backend.unschedulable() as make:
            cid = await backend.launch(make(backend.spec(RUNS)), **backend.launch_kw(wait=False))
            reason = await backend.until("the scheduler's reason", lambda: svc.pending(cid))
        assert "Insufficient nvidia.com/gpu" in reason
        state = await svc.inspect(cid)
        assert state is not None and not state.running and state.exit_code is None and state.status == "created"
