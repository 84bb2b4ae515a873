"""GET jobs' JSON text (jobs/listing.py): the same JSON as encoding each job's dict, with a finished job's text
kept only while its stored row is unchanged, and queued/running jobs made at every call (their clocks move)."""

from __future__ import annotations

import json
import types

from jupyter_ptcuda.jobs import store as store_module
from jupyter_ptcuda.jobs.listing import JobListing, job_json
from jupyter_ptcuda.jobs.outputs import relative_to_root
from jupyter_ptcuda.jobs.store import COMPLETED, FAILED, QUEUED, RUNNING, Job, JobStore

NOW = 1_800_000_000.0


def old_reply(store: JobStore, root: str, waiting: dict) -> str:
    """What the handler answered before the listing kept anything: each job's dict, encoded whole."""
    out = []
    for job in store.list_jobs():
        data = job.to_json()
        live = waiting.get(job.id) if job.state == QUEUED else None
        if live is not None:
            data["place"], data["reason"] = live["place"], live["reason"] or data["reason"]
        for key, path in (("notebook_path", job.notebook), ("script_path", job.script), ("output_path", job.output_dir)):
            data[key] = relative_to_root(root, path)
        out.append(data)
    return json.dumps(out, default=str)


def fill(store: JobStore, root) -> None:
    for i, state in enumerate([COMPLETED, FAILED, RUNNING, QUEUED, COMPLETED]):
        meta = {"mlflow": {"run_id": f"{i:032x}", "status": "RUNNING", "metrics": {"loss": 1.0 / (i + 1)}}}
        store.insert(Job(id=f"job{i:09d}", name=f"j{i}", notebook=f"{root}/nb/n{i}.ipynb", script=f"{root}/nb/t{i}.py",
                         output_dir=f"{root}/nb/outputs/job{i}", parameters={"lr": 0.1 * i}, state=state,
                         created=NOW - 100 + i, started=None if state == QUEUED else NOW - 90 + i,
                         finished=NOW - 10 + i if state in (COMPLETED, FAILED) else None, meta=meta,
                         reason="waiting for 1 GPU" if state == QUEUED else None))


def test_the_reply_is_the_same_json_and_follows_every_change(tmp_path, monkeypatch):
    clock = types.SimpleNamespace(time=lambda: NOW)
    monkeypatch.setattr(store_module, "time", clock)
    root = tmp_path / "root"
    (root / "nb").mkdir(parents=True)
    store = JobStore(tmp_path / "jobs.sqlite")
    fill(store, root)
    listing = JobListing()
    waiting = {"job000000003": {"place": 2, "reason": "waiting for 1 GPU: 1 request ahead of you"}}

    first = listing.render(store.list_rows(), str(root), waiting)
    assert first == old_reply(store, str(root), waiting)
    shown = {j["id"]: j for j in json.loads(first)}
    assert shown["job000000003"]["place"] == 2 and shown["job000000000"]["output_path"] == "nb/outputs/job0"
    assert listing.render(store.list_rows(), str(root), waiting) == first  # kept: the same text

    clock.time = lambda: NOW + 5  # a running job's duration and a queued job's wait move; finished ones do not
    moved = {j["id"]: j for j in json.loads(listing.render(store.list_rows(), str(root), {}))}
    assert moved["job000000002"]["duration_s"] == shown["job000000002"]["duration_s"] + 5
    assert moved["job000000003"]["waited_s"] == shown["job000000003"]["waited_s"] + 5
    assert moved["job000000003"]["place"] is None  # no longer in the queue's view
    assert moved["job000000000"] == shown["job000000000"]

    # a finished job's run gets its status and a metric later: its row changed, so does its JSON
    store.merge_meta("job000000000", "mlflow", {"run_id": "0" * 32, "status": "FINISHED", "metrics": {"loss": 0.5}})
    after = listing.render(store.list_rows(), str(root), {})
    assert after == old_reply(store, str(root), {})
    assert {j["id"]: j for j in json.loads(after)}["job000000000"]["meta"]["mlflow"]["status"] == "FINISHED"

    # another server root: other relative paths; a forgotten job is gone
    store.delete("job000000004")
    elsewhere = listing.render(store.list_rows(), str(tmp_path), {})
    assert elsewhere == old_reply(store, str(tmp_path), {})
    assert [j["output_path"] for j in json.loads(elsewhere)][-1] == "root/nb/outputs/job0"
    assert "job000000004" not in elsewhere


def test_one_job_and_a_filtered_list(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "time", types.SimpleNamespace(time=lambda: NOW))
    root = tmp_path
    store = JobStore(tmp_path / "jobs.sqlite")
    fill(store, root)
    listing = JobListing()
    done = listing.render(store.list_rows((COMPLETED,)), str(root), complete=False)
    assert [j["id"] for j in json.loads(done)] == ["job000000004", "job000000000"]
    full = listing.render(store.list_rows(), str(root))
    assert full == old_reply(store, str(root), {})
    job = store.get("job000000001")
    assert json.loads(full)[3] == json.loads(json.dumps(job_json(job, str(root.resolve())), default=str))
    assert listing.render([], str(root)) == "[]"
