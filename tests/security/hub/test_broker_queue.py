"""The GPU queue under the Hub lives in the broker: fair across users, and private. alice fills both GPUs and
queues three more 1-GPU jobs; bob queues one, last. When one of alice's GPUs frees, bob's job starts first
(he has used no GPU time; she has), hers keep waiting; bob's view of the queue names none of her jobs."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.hub import harness as H
from tests.security.hub.conftest import ALICE, BOB, call

pytestmark = [pytest.mark.integration, pytest.mark.hub]



@pytest.fixture(scope="module")
def hub(engine, test_image):
    with H.hub_with_broker(test_image, H.QUEUE_BROKER) as hub:
        yield hub


def job(hub, user, id, **extra):
    return {"kind": "job", "id": id, "image": hub.test_image, "command": ["sleep", "900"], "gpus": "count:1", **extra}


def until(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return got


def test_when_a_gpu_frees_the_user_with_less_gpu_time_goes_first_and_sees_no_one_else_s_jobs(hub):
    holders = [call(hub, ALICE, "launch", request=job(hub, ALICE, f"hold{i}")) for i in range(2)]
    assert all(r.status_code == 200 for r in holders), [r.text for r in holders]
    started: list[tuple[str, str, int]] = []  # (user, job id, status) in the order the launches returned
    token = {u: hub.token(u, scopes=["access:services!service=ptcuda-broker"]) for u in (ALICE, BOB)}

    def queued(user, id):
        r = requests.post(f"{hub.broker_url}/v1/launch", json={"request": job(hub, user, id), "wait_for_gpus": True},
                          headers={"Authorization": f"token {token[user]}"}, timeout=300)
        started.append((user, id, r.status_code))

    waiters = []
    try:
        refused = call(hub, BOB, "launch", request=job(hub, BOB, "impatient"))  # not willing to wait: 409 at once
        assert refused.status_code == 409 and "another user" in refused.json()["message"]
        for user, id in [(ALICE, "a1"), (ALICE, "a2"), (ALICE, "a3"), (BOB, "b1")]:
            t = threading.Thread(target=queued, args=(user, id), daemon=True)
            t.start()
            waiters.append(t)
            until(f"{id} in the queue", lambda id=id: any(
                row["mine"] and row["claim"] == f"job/{id}" for row in call(hub, BOB if id == "b1" else ALICE, "queue").json()["result"]))
        view = call(hub, BOB, "queue").json()["result"]
        assert [r["what"] for r in view if not r["mine"]] == ["another user"] * 3
        text = str(view)
        assert not any(s in text for s in ("a1", "a2", "a3", "hold", ALICE)), view
        [mine] = [r for r in view if r["mine"]]
        assert mine["what"] == "job b1" and "waiting for 1 GPU" in mine["reason"], mine
        assert started == []  # all four wait
        call(hub, ALICE, "remove", cid=holders[0].json()["result"]["id"])  # one GPU frees
        until("a queued job to start", lambda: started)
        assert started[0][:2] == (BOB, "b1") and started[0][2] == 200, started
        # alice's three are still in line (both GPUs held: hold1 and b1)
        assert len([r for r in call(hub, ALICE, "queue").json()["result"] if r["mine"]]) == 3
    finally:
        def remove_all() -> None:
            for user in (ALICE, BOB):
                for c in call(hub, user, "list").json().get("result") or []:
                    call(hub, user, "remove", cid=c["id"])

        # each removal frees a GPU: the launches still waiting start, and are removed in turn
        deadline = time.monotonic() + 120
        while True:
            remove_all()
            if not any(t.is_alive() for t in waiters) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        remove_all()  # what the last launches started
