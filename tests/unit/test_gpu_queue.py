"""The GPU queue's scheduling decision (jupyter_ptcuda.containers.gpuqueue): table tests, time injected."""

from __future__ import annotations

import math
import random
import time

import pytest

from jupyter_ptcuda.containers.gpuqueue import Holder, Rules, Usage, Waiting, decide, order, refusal

T0 = 1_700_000_000.0
GPUS4 = ("0", "1", "2", "3")


def w(claim: str, owner: str = "alice", count: int = 1, at: float = 0.0, ids: tuple[str, ...] = ()) -> Waiting:
    return Waiting(claim=claim, owner=owner, count=0 if ids else count, ids=ids, submitted=T0 + at)


def held(**by_gpu: str) -> dict[str, list[Holder]]:
    """held(g0="alice:job a") -> {"0": [Holder("alice", "job a")]}."""
    out = {}
    for key, text in by_gpu.items():
        owner, what = text.split(":", 1)
        out[key[1:]] = [Holder(owner, what)]
    return out


def starts(decision) -> dict[str, tuple[str, ...]]:
    return {s.claim: s.ids for s in decision.starts}


# -- work-conserving, with backfill -----------------------------------------------------------------------
@pytest.mark.parametrize("name,waiting,holders,expect", [
    ("all free: the first fits", [w("a", count=2)], {}, {"a": ("0", "1")}),
    ("backfill: a 1-GPU request passes a waiting 4-GPU one",
     [w("big", count=4, at=0), w("small", count=1, at=5)], held(g0="bob:job x"), {"small": ("1",)}),
    ("backfill fills every free GPU", [w("big", count=4, at=0), w("s1", at=1), w("s2", at=2), w("s3", at=3), w("s4", at=4)],
     held(g0="bob:job x"), {"s1": ("1",), "s2": ("2",), "s3": ("3",)}),
    ("nothing free: nothing starts", [w("a")], held(g0="b:j", g1="b:j", g2="b:j", g3="b:j"), {}),
    ("explicit devices wait for exactly those", [w("a", ids=("0",)), w("b", at=1)], held(g0="bob:job x"), {"b": ("1",)}),
    ("explicit devices start when free", [w("a", ids=("2", "3"))], held(g0="bob:job x"), {"a": ("2", "3")}),
])
def test_work_conserving_with_backfill(name, waiting, holders, expect):
    decision = decide(waiting, GPUS4, holders, {}, T0 + 10)
    assert starts(decision) == expect, name
    free_left = [g for g in GPUS4 if not holders.get(g) and all(g not in s.ids for s in decision.starts)]
    for wait in decision.waits:  # a GPU is left idle only when no waiting request fits in it
        req = next(x for x in waiting if x.claim == wait.claim)
        assert (set(req.ids) - set(free_left)) if req.ids else req.count > len(free_left), name


def test_the_place_and_reason_a_user_reads():
    holders = {"0": [Holder("alice", "job train-lr0.1")], "1": [Holder("bob", "kernel bobs.ipynb")]}
    waiting = [w("x", "carol", at=0), w("y", "carol", at=1), w("mine", "alice", at=2)]
    rules = Rules(hide_others=True)
    decision = decide(waiting, ("0", "1"), holders, {"carol": 10.0, "alice": 50.0}, T0 + 3, rules)
    mine = next(x for x in decision.waits if x.claim == "mine")
    assert mine.ahead == 2
    assert mine.reason == ("waiting for 1 GPU: 2 requests ahead of you; "
                           "GPUs held by your job train-lr0.1 and another user")
    first = next(x for x in decision.waits if x.claim == "x")
    assert first.reason.startswith("waiting for 1 GPU: next in line; GPUs held by another user")
    shown = decide(waiting, ("0", "1"), holders, {}, T0 + 3, Rules())  # one user's server: names everything
    assert "kernel bobs.ipynb of bob" in shown.waits[0].reason


# -- no starvation ----------------------------------------------------------------------------------------
def test_a_request_past_the_wait_limit_gets_gpus_reserved_and_starts():
    """A 4-GPU job on a busy 4-GPU host: 1-GPU jobs keep coming; once it has waited reserve_after, the GPUs
    that free up are kept for it, and it starts."""
    rules = Rules(reserve_after=300)
    busy = {g: [Holder("bob", f"job b{g}")] for g in GPUS4}
    big = w("big", "alice", count=4, at=0)
    queue = [big]
    now = T0
    started_small = 0
    for step in range(40):  # every 30 s one of bob's jobs ends and a new 1-GPU job is submitted
        now = T0 + 30 * (step + 1)
        gone = GPUS4[step % 4]
        busy.pop(gone, None)
        queue.append(w(f"small{step}", "bob", at=now - T0))
        decision = decide(queue, GPUS4, busy, {}, now, rules)
        for s in decision.starts:
            for g in s.ids:
                busy[g] = [Holder("alice" if s.claim == "big" else "bob", s.claim)]
            queue = [q for q in queue if q.claim != s.claim]
            started_small += s.claim != "big"
        if any(s.claim == "big" for s in decision.starts):
            break
    else:
        pytest.fail("the 4-GPU request never started")
    assert now - big.submitted < 300 + 4 * 30 + 30  # reserved from 300 s on, started as the 4th GPU freed
    assert started_small >= 5  # before the limit, small ones backfilled (work-conserving)


def test_reserved_gpus_are_not_given_to_anyone_behind():
    rules = Rules(reserve_after=60)
    waiting = [w("big", count=3, at=0), w("small", "bob", at=50)]
    holders = held(g0="carol:job c", g1="carol:job d")
    early = decide(waiting, GPUS4, holders, {}, T0 + 55, rules)
    assert starts(early) == {"small": ("2",)}  # before the limit: backfill
    late = decide(waiting, GPUS4, holders, {}, T0 + 61, rules)
    assert starts(late) == {}  # after it: GPUs 2 and 3 are kept for the starving request
    big = next(x for x in late.waits if x.claim == "big")
    assert big.reserved == ("2", "3") and "2, 3 reserved for you" in big.reason


def test_starving_requests_go_oldest_first():
    rules = Rules(reserve_after=10)
    got = order([w("late", "a", at=5), w("early", "b", at=1), w("new", "c", at=100)], {"b": 1e6}, {}, T0 + 101, rules)
    assert [x.claim for x in got] == ["early", "late", "new"]


# -- fair share -------------------------------------------------------------------------------------------
def test_a_user_with_one_request_is_not_behind_another_users_ten():
    alice = [w(f"a{i}", "alice", at=i) for i in range(10)]
    bob = [w("b0", "bob", at=20)]
    holders = held(g0="alice:job a-running")  # alice runs one already; one GPU frees up
    decision = decide(alice + bob, ("0", "1"), holders, {"alice": 100.0, "bob": 0.0}, T0 + 30)
    assert starts(decision) == {"b0": ("1",)}
    # with equal recent usage (none), the user holding fewer GPUs now goes first
    decision = decide(alice + bob, ("0", "1"), holders, {}, T0 + 30)
    assert starts(decision) == {"b0": ("1",)}


@pytest.mark.parametrize("usage,first", [({"alice": 5.0, "bob": 50.0}, "alice"), ({"alice": 50.0, "bob": 5.0}, "bob"),
                                         ({}, "alice")])  # a tie: alice's request is older
def test_least_recent_gpu_time_first(usage, first):
    got = order([w("a", "alice", at=0), w("b", "bob", at=1)], usage, {}, T0 + 2)
    assert got[0].owner == first


def test_within_one_user_first_come_first_served_and_users_take_turns():
    waiting = [w("a2", "alice", at=2), w("b1", "bob", at=3), w("a1", "alice", at=1), w("b2", "bob", at=4),
               w("a3", "alice", at=5)]
    assert [x.claim for x in order(waiting, {}, {}, T0 + 10)] == ["a1", "b1", "a2", "b2", "a3"]


def test_usage_decays_with_the_half_life():
    usage = Usage(half_life=100)
    usage.advance(T0, {"alice": 2})
    usage.advance(T0 + 100, {})  # 2 GPUs for 100 s, decayed along the way
    expected = 2 * (1 - 0.5) / (math.log(2) / 100)
    assert usage.of("alice") == pytest.approx(expected)
    usage.advance(T0 + 200, {})
    assert usage.of("alice") == pytest.approx(expected / 2)  # one half-life later: half
    assert usage.of("bob") == 0.0
    usage.advance(T0 + 100_000, {})
    assert usage.snapshot() == {}  # long gone: forgotten


# -- never satisfiable ------------------------------------------------------------------------------------
@pytest.mark.parametrize("req,rules,words", [
    (w("a", count=5), Rules(), "asked for, but this host has 4: ask for at most 4"),
    (w("a", ids=("7",)), Rules(), "there is no GPU 7 on this host"),
    (w("a", ids=("1", "1")), Rules(), "the same GPU is asked for twice"),
    (w("a", count=3), Rules(max_gpus=2), "above the 2 one user may hold (max_gpus)"),
    (w("a", ids=("0", "1", "2")), Rules(max_gpus=2), "max_gpus"),
    (w("a", count=0), Rules(), "nothing to wait for"),
])
def test_never_satisfiable_requests_are_refused_with_the_reason(req, rules, words):
    why = refusal(req, GPUS4, rules)
    assert why is not None and words in why


@pytest.mark.parametrize("req", [w("a", count=4), w("a", ids=("3",)), w("a", count=1)])
def test_satisfiable_requests_are_not_refused(req):
    assert refusal(req, GPUS4, Rules(max_gpus=4)) is None


def test_a_user_at_max_gpus_waits_for_their_own_work_and_others_pass():
    rules = Rules(max_gpus=1)
    decision = decide([w("a", "alice", at=0), w("b", "bob", at=1)], GPUS4, held(g0="alice:job one"), {}, T0 + 2, rules)
    assert starts(decision) == {"b": ("1",)}
    assert "you hold 1 of the 1 GPUs one user may hold" in decision.waits[0].reason


def test_a_cancelled_request_simply_leaves_the_line():
    waiting = [w("a", at=0), w("b", at=1), w("c", at=2)]
    full = held(g0="x:j", g1="x:j", g2="x:j", g3="x:j")
    before = {x.claim: x.ahead for x in decide(waiting, GPUS4, full, {}, T0 + 3).waits}
    after = {x.claim: x.ahead for x in decide([x for x in waiting if x.claim != "b"], GPUS4, full, {}, T0 + 3).waits}
    assert before == {"a": 0, "b": 1, "c": 2} and after == {"a": 0, "c": 1}


# -- scale ------------------------------------------------------------------------------------------------
def test_a_thousand_requests_from_fifty_users():
    rng = random.Random(23)
    gpus = tuple(str(i) for i in range(8))
    waiting = [w(f"r{i}", f"user{rng.randrange(50)}", count=rng.choice((1, 1, 1, 2, 4)), at=i * 0.5)
               for i in range(1000)]
    usage = {f"user{u}": rng.uniform(0, 1e5) for u in range(50)}
    holders = {g: [Holder(f"user{rng.randrange(50)}", "job")] for g in gpus[:5]}
    began = time.perf_counter()
    decision = decide(waiting, gpus, holders, usage, T0 + 600)
    spent = time.perf_counter() - began
    assert len(decision.starts) + len(decision.waits) == 1000
    assert sum(len(s.ids) for s in decision.starts) <= 3 and decision.starts  # the 3 free GPUs, no more
    assert sorted(x.ahead for x in decision.waits) == list(range(len(decision.waits)))
    got = order(waiting, usage, {}, T0 + 1)
    for user in {x.owner for x in waiting}:  # FIFO within each user
        mine = [x.submitted for x in got if x.owner == user]
        assert mine == sorted(mine)
    least = min(usage, key=usage.__getitem__)
    assert got[0].owner == least
    print(f"decide(1000 requests, 50 users): {spent * 1000:.1f} ms")
