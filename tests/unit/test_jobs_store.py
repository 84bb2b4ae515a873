"""The SQLite job store: records, state transitions, and one winner when several processes finalise."""

from __future__ import annotations

import threading

import pytest

from jupyter_ptcuda.errors import NotFound
from jupyter_ptcuda.jobs.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    TIMED_OUT,
    Job,
    JobStore,
)


@pytest.fixture
def store(tmp_path):
    return JobStore(tmp_path / "sub" / "jobs.sqlite")


def make(job_id: str = "abc123def456", **kw) -> Job:
    fields = dict(owner="ann", name="train", script="/nb/train.py", workdir="/nb", output_dir="/nb/outputs/x",
                  parameters={"lr": 0.5, "layers": [64, 32]}, args=["--lr", "0.5"], image="img:tag",
                  image_digest="sha256:" + "0" * 64, created=1000.0, requirements=["torch>=2.1"],
                  meta={"torch": "2.13.0"})
    return Job(id=job_id, **{**fields, **kw})


def test_insert_get_roundtrip(store, tmp_path):
    job = store.insert(make())
    assert (tmp_path / "sub" / "jobs.sqlite").exists()
    got = store.get(job.id)
    assert got == job
    assert got.parameters == {"lr": 0.5, "layers": [64, 32]} and got.requirements == ["torch>=2.1"]
    assert store.get("abc1").id == job.id  # unique prefix, as the CLI accepts
    with pytest.raises(NotFound, match="jobs list"):
        store.get("nope")


def test_ambiguous_prefix_is_not_found(store):
    store.insert(make("abcd00000001"))
    store.insert(make("abcd00000002"))
    with pytest.raises(NotFound):
        store.get("abcd")


def test_lifecycle_transitions(store):
    store.insert(make())
    assert store.transition("abc123def456", RUNNING, container_id="c1", started=1001.0)
    job = store.get("abc123def456")
    assert (job.state, job.container_id, job.started) == (RUNNING, "c1", 1001.0)
    assert store.transition(job.id, COMPLETED, exit_code=0, reason="completed", finished=1011.0)
    done = store.get(job.id)
    assert done.terminal and done.exit_code == 0 and done.duration() == 10.0
    # terminal states never change again: a second finaliser loses
    assert not store.transition(job.id, FAILED, reason="container lost")
    assert store.get(job.id).state == COMPLETED
    assert not store.transition(job.id, RUNNING)


def test_queued_may_fail_or_be_cancelled_but_not_complete(store):
    store.insert(make("q1q1q1q1q1q1"))
    assert not store.transition("q1q1q1q1q1q1", COMPLETED)  # a queued job never ran
    assert store.transition("q1q1q1q1q1q1", CANCELLED, reason="cancelled")
    with pytest.raises(ValueError):
        store.transition("q1q1q1q1q1q1", QUEUED)
    with pytest.raises(ValueError):
        store.transition("q1q1q1q1q1q1", "exploded")


def test_update_fields_and_refuses_state(store):
    store.insert(make())
    job = store.update("abc123def456", cancel_reason=TIMED_OUT, meta={"git_commit": "f" * 40})
    assert job.cancel_reason == TIMED_OUT and job.meta == {"git_commit": "f" * 40}
    with pytest.raises(ValueError):
        store.update(job.id, state=COMPLETED)
    with pytest.raises(ValueError):
        store.update(job.id, colour="red")
    with pytest.raises(NotFound):
        store.update("missing00000", reason="x")


def test_list_filter_order_and_counts(store):
    for i, state in enumerate([QUEUED, RUNNING, RUNNING]):
        store.insert(make(f"job{i:09d}", created=1000.0 + i))
        if state == RUNNING:
            store.transition(f"job{i:09d}", RUNNING)
    store.transition("job000000002", FAILED, reason="OOMKilled", exit_code=137)
    assert [j.id for j in store.list_jobs()] == ["job000000002", "job000000001", "job000000000"]
    assert [j.id for j in store.list_jobs((QUEUED, RUNNING))] == ["job000000001", "job000000000"]
    assert len(store.list_jobs(limit=1)) == 1
    counts = store.count_by_state()
    assert counts[QUEUED] == 1 and counts[RUNNING] == 1 and counts[FAILED] == 1 and counts[COMPLETED] == 0


def test_two_finalisers_one_winner(tmp_path):
    """Two stores on the same file (two processes): exactly one transition to a final state wins."""
    a, b = JobStore(tmp_path / "jobs.sqlite"), JobStore(tmp_path / "jobs.sqlite")
    a.insert(make())
    a.transition("abc123def456", RUNNING)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def finalise(store: JobStore, state: str) -> None:
        barrier.wait()
        results.append(store.transition("abc123def456", state, reason=state))

    threads = [threading.Thread(target=finalise, args=(s, st))
               for s, st in [(a, COMPLETED), (b, CANCELLED)] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert a.get("abc123def456").reason == b.get("abc123def456").state


def test_to_json_is_iso_and_has_paths(store):
    store.insert(make())
    data = store.get("abc123def456").to_json()
    assert data["created"] == "1970-01-01T00:16:40Z"
    assert data["started"] is None and data["duration_s"] is None
    assert data["log_path"] == "/nb/outputs/x/job.log" and data["manifest_path"] == "/nb/outputs/x/manifest.json"
