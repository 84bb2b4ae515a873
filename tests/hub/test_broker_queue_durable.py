"""The GPU queue under the Hub is durable (the broker's waiting jobs, jupyter_ptcuda/broker/waiting.py): a real
Hub, the broker as a managed service (two fake GPUs), alice's real single-user server submitting real jobs that
run in the real engine. Each job appends its name to runs.txt in alice's folder when it starts, then holds its
GPU until the test releases it: runs.txt is the order and the count of starts.

- alice's server is stopped (culled) while three jobs wait, and the broker is SIGKILLed: the broker starts
  them by itself as GPUs free up, in order, each once (one container each); when her server starts again it
  shows each job once and follows it to its end.
- the broker is SIGKILLed while her server waits on it: the server asks again when the broker is back, keeps
  the jobs' places, and each runs once, in order."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.hub import harness as H

pytestmark = [pytest.mark.integration, pytest.mark.hub]

ALICE = H.USERS[0]
BROKER = "ptcuda-broker"
#: Records its start (runs.txt: order and count), then holds its GPU until release-<name> exists.
HOLD = ("import pathlib, sys, time\nname = sys.argv[1]\n"
        "with open('runs.txt', 'a') as f:\n    f.write(name + '\\n')\n"
        "while not pathlib.Path(f'release-{name}').exists():\n    time.sleep(0.1)\n")


@pytest.fixture(scope="module")
def hub(engine, test_image):
    with H.hub_with_broker(test_image, H.QUEUE_BROKER) as hub:
        yield hub


def until(what, check, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return got


def broker(hub, op: str, **body):
    token = hub.token(ALICE, scopes=[f"access:services!service={BROKER}"])
    r = requests.post(f"{hub.broker_url}/v1/{op}", json=body, headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def containers(job_id: str) -> list[str]:
    """Every container (running or not) of this job in the engine."""
    return subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.jupyter-ptcuda.job-id={job_id}"],
                          capture_output=True, text=True, check=True).stdout.split()


class Folder:
    """alice's folder for one test: hold.py, runs.txt, the release files."""

    def __init__(self, hub, name: str) -> None:
        name = f"{name}-{uuid.uuid4().hex[:8]}"  # a fresh one each run (no release file of an earlier run)
        self.path = Path(hub.account(ALICE).pw_dir) / name
        hub.run_as(ALICE, ["mkdir", "-p", str(self.path)])
        hub.run_as(ALICE, ["sh", "-c", f"cat > {self.path}/hold.py"], input=HOLD)
        self.rel = name

    def runs(self) -> list[str]:
        f = self.path / "runs.txt"
        return f.read_text().split() if f.exists() else []

    def release(self, name: str) -> None:
        (self.path / f"release-{name}").write_text("")


def submit(hub, folder: Folder, name: str) -> dict:
    r = requests.post(f"{hub.url}/user/{ALICE}/jupyter-ptcuda/jobs", timeout=120,
                      json={"path": f"{folder.rel}/hold.py", "gpus": 1, "name": name, "args": [name],
                            "import_check": False, "image": hub.test_image},
                      headers={"Authorization": f"token {hub.token(ALICE)}"})
    assert r.status_code == 201, r.text
    return r.json()


def job(hub, job_id: str) -> dict:
    r = hub.user_api(ALICE, "GET", f"jupyter-ptcuda/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def queued_in_broker(hub) -> list[str]:
    return [row["claim"].split("/", 1)[1] for row in broker(hub, "queue") if row["mine"]]


def fill_and_queue(hub, folder: Folder) -> dict[str, dict]:
    """hold0 and hold1 hold both GPUs; q0, q1, q2 wait, in that order, in the broker's line."""
    jobs = {}
    for name in ("hold0", "hold1", "q0", "q1", "q2"):
        jobs[name] = submit(hub, folder, name)
        if name.startswith("hold"):
            until(f"{name} started", lambda n=name: n in folder.runs())
    assert [jobs[n]["state"] for n in ("q0", "q1", "q2")] == ["queued"] * 3, [
        (n, j["state"], j["gpus"], j["reason"]) for n, j in jobs.items()]
    assert queued_in_broker(hub) == [jobs[n]["id"] for n in ("q0", "q1", "q2")]
    # what JupyterLab's GPU panel shows ("Waiting for GPUs"): the broker's line, through her own server
    seen = hub.user_api(ALICE, "GET", "jupyter-ptcuda/queue").json()
    assert seen["enabled"] and [(w["id"], w["place"]) for w in seen["waiting"]] == [
        (jobs[n]["id"], i + 1) for i, n in enumerate(("q0", "q1", "q2"))], seen
    assert all("waiting for 1 GPU" in w["reason"] for w in seen["waiting"]), seen
    listed = {j["id"]: j for j in hub.user_api(ALICE, "GET", "jupyter-ptcuda/jobs").json()}  # the Jobs view
    assert [listed[jobs[n]["id"]]["place"] for n in ("q0", "q1", "q2")] == [1, 2, 3], listed
    return jobs


def back_in_line(hub, jobs: dict[str, dict]) -> None:
    """The restarted broker has put the three back in line, in their order (it reloads them as it starts)."""
    want = [jobs[n]["id"] for n in ("q0", "q1", "q2")]
    until("the three back in the broker's line", lambda: len(got := queued_in_broker(hub)) == 3 and got, timeout=30)
    assert queued_in_broker(hub) == want


def release_in_turn(hub, folder: Folder, jobs: dict[str, dict]) -> None:
    """Release each holder in turn; the job two behind starts on the GPU it gave back, in order."""
    names = list(jobs)
    for i, name in enumerate(names):
        folder.release(name)
        if i + 2 < len(names):
            nxt = names[i + 2]
            until(f"{nxt} started", lambda n=nxt: n in folder.runs())
            assert folder.runs() == names[:i + 3], folder.runs()  # in order, each once


def finish(hub, folder: Folder, jobs: dict[str, dict]) -> None:
    for name in jobs:
        folder.release(name)
    for name, j in jobs.items():
        done = until(f"{name} completed", lambda j=j: (s := job(hub, j["id"]))["state"] == "completed" and s)
        assert done["exit_code"] == 0
    listed = [j["id"] for j in hub.user_api(ALICE, "GET", "jupyter-ptcuda/jobs").json()]
    assert all(listed.count(j["id"]) == 1 for j in jobs.values()), listed
    assert folder.runs() == list(jobs), folder.runs()  # each ran once, in order
    until("the finished jobs' containers removed", lambda: not any(containers(j["id"]) for j in jobs.values()))


def cleanup(hub, folder: Folder, jobs: dict[str, dict]) -> None:
    """Out of the broker's line first (so nothing starts behind the test's back), then every container removed."""
    for j in jobs.values():
        try:
            broker(hub, "dequeue", kind="job", id=j["id"])
        except (AssertionError, requests.RequestException):
            pass
    for name in jobs:
        folder.release(name)
    for j in jobs.values():
        for cid in containers(j["id"]):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    shutil.rmtree(folder.path, ignore_errors=True)


def test_a_culled_server_s_waiting_jobs_start_in_order_once_each_even_across_a_broker_sigkill(hub):
    hub.start_server(ALICE)
    folder = Folder(hub, "durable-culled")
    jobs = {}
    try:
        jobs = fill_and_queue(hub, folder)
        hub.stop_server(ALICE)  # culled: its calls to the broker hang up
        assert queued_in_broker(hub) == [jobs[n]["id"] for n in ("q0", "q1", "q2")]  # still in line
        hub.restart_service(BROKER, sig=signal.SIGKILL)
        back_in_line(hub, jobs)
        release_in_turn(hub, folder, {n: jobs[n] for n in ("hold0", "hold1", "q0", "q1", "q2")})  # nobody listens
        assert all(len(containers(j["id"])) == 1 for j in jobs.values())  # no second container of any job
        assert queued_in_broker(hub) == []
        hub.start_server(ALICE)  # comes back: adopts what the broker started while it was away
        until("the restarted server to adopt what the broker started", lambda: {
            job(hub, jobs[n]["id"])["state"] for n in ("q0", "q1", "q2")} <= {"running", "completed"}, timeout=60)
        finish(hub, folder, jobs)
    finally:
        cleanup(hub, folder, jobs)


def test_a_server_waiting_on_a_broker_that_is_sigkilled_keeps_its_jobs_places(hub):
    hub.start_server(ALICE)
    folder = Folder(hub, "durable-broker")
    jobs = {}
    try:
        jobs = fill_and_queue(hub, folder)
        hub.restart_service(BROKER, sig=signal.SIGKILL)  # the server's waiting calls break; it asks again
        back_in_line(hub, jobs)
        shown = [job(hub, jobs[n]["id"]) for n in ("q0", "q1", "q2")]
        assert all(s["state"] == "queued" and "waiting for 1 GPU" in s["reason"] for s in shown), shown
        release_in_turn(hub, folder, jobs)
        until("q2 shown started by the server", lambda: job(hub, jobs["q2"]["id"])["state"] in ("running", "completed"))
        assert all(len(containers(j["id"])) <= 1 for j in jobs.values())  # never two (finished ones are removed)
        finish(hub, folder, jobs)
    finally:
        cleanup(hub, folder, jobs)
