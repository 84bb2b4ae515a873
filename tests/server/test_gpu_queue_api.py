"""The GPU queue through a real Jupyter server (auth on), the real engine with the stand-in NVIDIA hook and the
fake two-GPU NVML: two 1-GPU jobs hold both GPUs, a third waits (queued, with its reason and place, not a
409) and starts by itself when the first ends; cancel while queued; metrics; a request that can never be met
is refused at once."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_IMAGE
from tests.integration.conftest import hook_engine
from tests.server.helpers import job_environment, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")]

#: A job that runs until its release file appears in its folder (the test ends it; no timing).
HOLD = ("import os, pathlib, sys, time\n"
        "name = sys.argv[1]\nprint('started', name, os.environ.get('NVIDIA_VISIBLE_DEVICES'), flush=True)\n"
        "while not pathlib.Path(f'release-{name}').exists():\n    time.sleep(0.1)\nprint('released', name)\n")


@pytest.fixture
def jp_server_config(jp_server_config):
    return {**jp_server_config, "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.5}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir):
    with job_environment(tmp_path, monkeypatch, jp_root_dir, TEST_IMAGE):
        (jp_root_dir / "nb" / "hold.py").write_text(HOLD)
        yield


async def job(api, id):
    return (await api("GET", f"jobs/{id}"))[1]


async def submit(api, name):
    status, body, _ = await api("POST", "jobs", {"path": "nb/hold.py", "gpus": 1, "name": name, "args": [name],
                                                 "import_check": False})
    assert status == 201, body
    return body


def release(root, name):
    path = root / "nb" / f"release-{name}"
    path.write_text("")
    return path


async def gpus_known(api):
    """The sampler (started with the server) has looked: GPUs are assigned from then on (before it, on a busy
    host, a count goes to the engine as it is, as the ledger has always done without an NVML view)."""
    await wait_for(api, "gpus", lambda s, b: s == 200 and b["snapshot"]["state"] == "ok")


async def test_a_third_gpu_job_waits_with_its_reason_and_starts_when_the_first_ends(api, jp_root_dir):
    await gpus_known(api)
    first = await submit(api, "train-lr0.1")
    second = await submit(api, "train-lr0.2")
    try:
        for j in (first, second):
            await wait_for(api, f"jobs/{j['id']}/log", lambda s, text: "started" in str(text))
        assert {first["gpus"], second["gpus"]} == {"0", "1"}
        third = await submit(api, "train-lr0.3")  # before the queue: 409 and a failed row
        assert third["state"] == "queued" and third["place"] == 1
        holders = " and ".join(f"your job {j['name']}" for j in sorted((first, second), key=lambda j: j["gpus"]))
        assert third["reason"] == f"waiting for 1 GPU: next in line; GPUs held by {holders}"
        fourth = await submit(api, "train-lr0.4")
        assert fourth["place"] == 2 and "1 request ahead of you" in fourth["reason"]
        status, jobs, _ = await api("GET", "jobs")
        listed = {j["id"]: j for j in jobs}
        assert listed[third["id"]]["place"] == 1 and listed[third["id"]]["waited_s"] >= 0
        assert listed[first["id"]]["place"] is None and listed[first["id"]]["state"] == "running"
        status, text, _ = await api("GET", "metrics")
        assert "ptcuda_gpu_queue_length 2" in text and "ptcuda_gpu_queue_wait_seconds_count 2" in text
        status, queue, _ = await api("GET", "queue")  # the GPU panel's "waiting" list
        assert status == 200 and queue["enabled"] is True
        assert [(w["id"], w["what"], w["place"], w["gpus"]) for w in queue["waiting"]] == [
            (third["id"], "job train-lr0.3", 1, "count:1"), (fourth["id"], "job train-lr0.4", 2, "count:1")]
        assert queue["waiting"][0]["reason"] == third["reason"]

        status, body, _ = await api("DELETE", f"jobs/{fourth['id']}")  # cancel while queued
        assert status == 202
        gone = await wait_for(api, f"jobs/{fourth['id']}", lambda s, b: b["state"] == "cancelled")
        assert gone["container_id"] is None and gone["place"] is None

        release(jp_root_dir, "train-lr0.1")  # the first ends: its GPU goes to the third, by itself
        await wait_for(api, f"jobs/{first['id']}", lambda s, b: b["state"] == "completed")
        running = await wait_for(api, f"jobs/{third['id']}", lambda s, b: b["state"] == "running", timeout=30)
        assert running["gpus"] == first["gpus"] and running["place"] is None and running["reason"] is None
        log = await wait_for(api, f"jobs/{third['id']}/log", lambda s, text: "started" in str(text))
        assert f"started train-lr0.3 {first['gpus']}" in log  # on the GPU the first one held
        assert (await api("GET", "queue"))[1]["waiting"] == []
        status, text, _ = await api("GET", "metrics")
        assert "ptcuda_gpu_queue_length 0" in text and "ptcuda_gpu_queue_wait_seconds_count 3" in text
    finally:
        for name in ("train-lr0.1", "train-lr0.2", "train-lr0.3"):
            release(jp_root_dir, name)
        for j in (await api("GET", "jobs"))[1]:
            await wait_for(api, f"jobs/{j['id']}", lambda s, b: b["state"] not in ("queued", "running"))
    assert (await job(api, second["id"]))["state"] == (await job(api, third["id"]))["state"] == "completed"


@pytest.mark.parametrize("gpus,words", [(3, "this host has 2"), (["7"], "no GPU 7")])
async def test_a_request_that_can_never_be_met_is_refused_at_once(api, gpus, words):
    await gpus_known(api)
    status, body, _ = await api("POST", "jobs", {"path": "nb/hold.py", "gpus": gpus, "import_check": False})
    assert status == 400 and words in body["message"]
    assert (await api("GET", "jobs"))[1] == []  # not recorded, not queued
