"""The broker's waiting jobs are durable and keyed (jupyter_ptcuda/broker/waiting.py): saved before the caller
hears it waits, started by the broker when the GPUs free even if the caller hung up, back in line in the same
order after a restart of the broker, and a second launch with the same job id joins the same place or gets the
same container: each job starts exactly once. The broker's operations run for real (ops.Broker) over the
in-memory backend (tests/fakes/backend.py) and fake GPUs (a ledger snapshot); no sleep: states are waited for
with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_ptcuda.broker.ops import Broker
from jupyter_ptcuda.broker.policy import BrokerPolicy
from jupyter_ptcuda.broker.waiting import WaitingStore
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.dispatch import GpuQueue
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.errors import ConfigError, TooBusy
from tests.fakes.backend import FakeBackend, FakeClock

IMAGE = "jupyter-ptcuda/test:cpu"


def snapshot(n: int) -> Callable[[], dict[str, Any]]:
    gpus = [{"index": i, "uuid": f"GPU-{i:08d}", "state": "ok", "utilization_gpu": 0, "memory_used": 0} for i in range(n)]
    return lambda: {"state": "ok", "gpus": gpus}


def request(id: str, gpus: str = "count:1") -> dict[str, Any]:
    return {"kind": "job", "id": id, "image": IMAGE, "command": ["python", "train.py"], "gpus": gpus}


@contextlib.asynccontextmanager
async def broker(tmp_path: Path, fake: FakeBackend, clock: FakeClock, gpus: int = 2) -> AsyncIterator[Broker]:
    """A broker (as the app makes it) over ``fake``, its waiting jobs in tmp_path/queue.sqlite; a second one over
    the same file and backend is the same broker after a restart."""
    policy = BrokerPolicy(images=("jupyter-ptcuda/*",), user_map={"alice": "1000:100", "bob": "1001:100"},
                          private_root=str(tmp_path / "private"))
    ledger = GpuLedger(fake, snapshot(gpus))
    ledger.hide_others = True
    b = Broker(policy, fake, ledger)  # type: ignore[arg-type]
    b.queue = GpuQueue(ledger, clock=clock.time, poll_interval=0.05)
    ledger.queue = b.queue
    b.keep_waiting_jobs(WaitingStore(str(tmp_path / "queue.sqlite")))
    b.jobs.clock = clock.time
    try:
        yield b
    finally:
        await b.jobs.close()
        await b.queue.close()


async def until(what: str, check: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while not (got := await check()):
        assert time.monotonic() < deadline, f"not {what} within {within:.0f} s"
        await asyncio.sleep(0.01)
    return got


async def forgotten(b: Broker) -> None:
    await until("the broker's file empty", lambda: asyncio.to_thread(lambda: b.jobs.store.all() == []))


async def containers(fake: FakeBackend, id: str | None = None) -> list[Any]:
    return await fake.list(L.JOB, id=id)


async def fill(b: Broker, clock: FakeClock) -> list[str]:
    """Both GPUs held by alice's two running jobs; their container ids."""
    held = []
    for i in range(2):
        r = await b.call("alice", "enqueue", {"request": request(f"hold{i}")})
        held.append(r["id"])
        clock.advance(1)
    return held


def test_the_store_keeps_each_key_once_with_its_first_time_and_gives_them_back_in_order(tmp_path):
    store = WaitingStore(str(tmp_path / "state" / "queue.sqlite"))
    assert store.add("alice", "j2", {"request": request("j2")}, 20.0) == 20.0
    assert store.add("bob", "j1", {"request": request("j1")}, 10.0) == 10.0
    assert store.add("alice", "j2", {"request": request("other")}, 30.0) == 20.0  # a second launch keeps its place
    again = WaitingStore(store.path)  # a new process
    assert [(u, k, b["request"]["id"], s) for u, k, b, s in again.all()] == [("bob", "j1", "j1", 10.0),
                                                                              ("alice", "j2", "j2", 20.0)]
    assert again.drop("alice", "j2") and not again.drop("alice", "j2")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert Path(store.path).stat().st_mode & 0o777 == 0o600


def test_a_folder_the_broker_cannot_write_is_refused_naming_the_option(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="c.PtcudaBroker.queue_db"):
        WaitingStore(str(tmp_path / "file" / "queue.sqlite"))


async def test_a_job_whose_caller_hangs_up_keeps_its_place_and_the_broker_starts_it(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        held = await fill(b, clock)
        assert await b.call("alice", "enqueue", {"request": request("q0")}) == {"queued": True}
        waiter = asyncio.ensure_future(b.call("alice", "launch", {"request": request("q0"), "wait_for_gpus": True}))
        await asyncio.sleep(0)
        waiter.cancel()  # the user's server is culled: its call is cancelled (the handler's on_connection_close)
        await asyncio.gather(waiter, return_exceptions=True)
        rows = await b.call("alice", "queue", {})
        assert [(r["claim"], r["place"]) for r in rows] == [("job/q0", 1)]
        assert "waiting for 1 GPU" in rows[0]["reason"]
        await b.call("alice", "remove", {"cid": held[0]})  # a GPU frees: nobody is listening, it starts all the same
        [started] = await until("q0 started", lambda: containers(fake, "q0"))
        assert started.tag.owner == "alice" and started.tag.owner_uid == 1000
        assert await b.call("alice", "queue", {}) == []
        await forgotten(b)  # once its container exists
        # the user's server comes back and asks again (its launch record): the same container, not a second
        again = await b.call("alice", "launch", {"request": request("q0"), "wait_for_gpus": True})
        assert again["id"] == started.id
        assert len(await containers(fake, "q0")) == 1


async def test_asking_again_joins_the_same_place(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        held = await fill(b, clock)
        for id in ("q0", "q1"):
            assert await b.call("alice", "enqueue", {"request": request(id)}) == {"queued": True}
            clock.advance(1)
        assert await b.call("alice", "enqueue", {"request": request("q0")}) == {"queued": True}  # asked again
        assert [(r["claim"], r["place"]) for r in await b.call("alice", "queue", {})] == [("job/q0", 1), ("job/q1", 2)]
        joined = [asyncio.ensure_future(b.call("alice", "launch", {"request": request("q0"), "wait_for_gpus": True}))
                  for _ in range(2)]
        await b.call("alice", "remove", {"cid": held[0]})
        first, second = await asyncio.wait_for(asyncio.gather(*joined), 10)
        assert first["id"] == second["id"]
        assert len(await containers(fake, "q0")) == 1 and await containers(fake, "q1") == []


async def test_a_restarted_broker_puts_them_back_in_order_and_starts_each_once(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        held = await fill(b, clock)
        for id in ("q0", "q1", "q2"):
            assert await b.call("alice", "enqueue", {"request": request(id)}) == {"queued": True}
            clock.advance(1)
    # the broker stopped (its runs cancelled, as a SIGKILL ends them); its containers and its file remain
    async with broker(tmp_path, fake, clock) as b:
        assert await b.jobs.reload() == 3
        rows = await b.call("alice", "queue", {})
        assert [(r["claim"], r["place"]) for r in rows] == [("job/q0", 1), ("job/q1", 2), ("job/q2", 3)]
        order = []
        for i, id in enumerate(("q0", "q1", "q2")):
            await b.call("alice", "remove", {"cid": held[i] if i < 2 else order[0]})
            [c] = await until(f"{id} started", lambda id=id: containers(fake, id))
            order.append(c.id)
            assert [len(await containers(fake, q)) for q in ("q0", "q1", "q2")[i + 1:]] == [0] * (2 - i)  # in order
        assert [[s.id for s in await containers(fake, q)] for q in ("q1", "q2")] == [order[1:2], order[2:]]  # once each
        await forgotten(b)


async def test_a_broker_killed_after_the_container_was_made_does_not_make_a_second(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        held = await fill(b, clock)
        assert await b.call("alice", "enqueue", {"request": request("q0")}) == {"queued": True}
        await b.call("alice", "remove", {"cid": held[0]})
        [c] = await until("q0 started", lambda: containers(fake, "q0"))
        b.jobs.store.add("alice", "q0", {"request": request("q0"), "wait_for_gpus": True}, clock.time())  # the row
        # of a broker killed between the container's creation and the row's removal
    async with broker(tmp_path, fake, clock) as b:
        await b.jobs.reload()
        await forgotten(b)
        assert [s.id for s in await containers(fake, "q0")] == [c.id]


async def test_cancel_takes_the_owner_s_job_out_of_line_and_no_one_else_can(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        held = await fill(b, clock)
        assert await b.call("alice", "enqueue", {"request": request("q0")}) == {"queued": True}
        assert await b.call("bob", "dequeue", {"kind": "job", "id": "q0"}) == {"removed": False}  # not his
        assert len(await b.call("alice", "queue", {})) == 1
        assert await b.call("alice", "dequeue", {"kind": "job", "id": "q0"}) == {"removed": True}
        assert await b.call("alice", "queue", {}) == [] and b.jobs.store.all() == []
        await b.call("alice", "remove", {"cid": held[0]})
        await b.queue._pass()
        assert await containers(fake, "q0") == []


async def test_a_request_that_can_never_be_met_is_refused_and_not_kept(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        await b.ledger.ready()
        with pytest.raises(ConfigError, match="gpus"):
            await b.call("alice", "enqueue", {"request": request("big", gpus="count:3")})
        with pytest.raises(ConfigError, match="job id"):
            await b.call("alice", "enqueue", {"request": request("../x")})
        assert b.jobs.store.all() == [] and len(b.jobs) == 0


async def test_a_user_may_keep_only_so_many_jobs_waiting(tmp_path):
    clock, fake = FakeClock(), FakeBackend()
    async with broker(tmp_path, fake, clock) as b:
        b.jobs.max_per_user = 2
        await fill(b, clock)
        for id in ("q0", "q1"):
            assert await b.call("alice", "enqueue", {"request": request(id)}) == {"queued": True}
        with pytest.raises(TooBusy, match="c.PtcudaBroker.max_queued_jobs"):
            await b.call("alice", "enqueue", {"request": request("q2")})
        assert await b.call("alice", "enqueue", {"request": request("q0")}) == {"queued": True}  # asking again is fine
        assert await b.call("bob", "enqueue", {"request": request("b0")}) == {"queued": True}  # another user's own
        assert [k for _, k, _, _ in b.jobs.store.all()] == ["q0", "q1", "b0"]
