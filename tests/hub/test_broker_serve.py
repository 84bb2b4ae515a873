"""Serving a registered model under JupyterHub, through the broker (real Hub, real Unix users, real engine, real
MLflow in alice's server). alice trains a small PyTorch model as a job, registers it and serves it; her prediction
comes back through her own server. The serving container has no network (no bridge IP anyone could reach) and
answers on a Unix socket in alice's private folder at the broker; bob reaches it neither through his server,
nor through the broker with alice's container id, nor through the socket as a process of his own. Stopping it
leaves no container, no socket folder and no copy of the model."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.hub import harness as H
from tests.integration.test_tracking import mlflow_image  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.hub]

ALICE, BOB = H.USERS
TRAIN = """\
import mlflow, torch
model = torch.nn.Linear(2, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[2.0, 3.0]])); model.bias.fill_(1.0)
mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
"""
ROW = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}  # 2*1 + 3*2 + 1 = 9


@pytest.fixture(scope="module")
def hub(engine, mlflow_image):  # noqa: F811
    with H.hub_with_broker(mlflow_image, 'c.PtcudaBroker.nvml = "fake:2"\n') as hub:
        try:
            for user in H.USERS:
                hub.start_server(user)
            yield hub
        finally:
            for cid in _serve_containers():
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _serve_containers() -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=serve",
                           "--filter", "label=io.jupyter-ptcuda.owner=" + ALICE], capture_output=True, text=True).stdout.split()


def _inspect(cid: str) -> dict:
    return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]


def broker(hub, user: str, op: str, **body) -> requests.Response:
    token = hub.token(user, scopes=["access:services!service=ptcuda-broker"])
    return requests.post(f"{hub.broker_url}/v1/{op}", json=body, headers={"Authorization": f"token {token}"}, timeout=120)


def post(hub, user: str, route: str, body: dict) -> requests.Response:
    """``POST /user/<user>/<route>`` with ``user``'s token and ``body`` as JSON (what JupyterLab sends)."""
    return requests.post(f"{hub.url}/user/{user}/{route}", json=body, headers={"Authorization": f"token {hub.token(user)}"},
                         timeout=120, allow_redirects=False)


def until(what, fn, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return got


def test_alice_serves_her_model_through_her_server_and_bob_cannot_reach_it(hub, mlflow_image):  # noqa: F811
    home = Path(hub.account(ALICE).pw_dir)
    hub.run_as(ALICE, ["sh", "-c", "cat > train_serve.py"], input=TRAIN)
    r = post(hub, ALICE, "jupyter-ptcuda/jobs", {"path": "train_serve.py", "image": mlflow_image, "gpus": "none"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def finished():
        j = hub.user_api(ALICE, "GET", f"jupyter-ptcuda/jobs/{job_id}").json()
        run = (j.get("meta") or {}).get("mlflow") or {}
        return j if j["state"] in ("completed", "failed") and run.get("status") in ("FINISHED", "FAILED") else None

    job = until("the training job", finished)
    assert job["state"] == "completed", (job, hub.user_api(ALICE, "GET", f"jupyter-ptcuda/jobs/{job_id}/log").text)
    name = f"hublinear-{uuid.uuid4().hex[:8]}"  # alice's own MLflow store (in her home) outlives this Hub
    r = hub.user_api(ALICE, "POST", f"jupyter-ptcuda/jobs/{job_id}/register", name=name, timeout=120)
    assert r.status_code == 201 and r.json()["uri"] == f"models:/{name}/1", r.text

    r = hub.user_api(ALICE, "POST", "jupyter-ptcuda/serve", model=f"models:/{name}/1", timeout=300)
    assert r.status_code == 201, r.text
    served = r.json()
    sid, cid = served["id"], served["container_id"]
    try:
        # the broker built it: the job's exact image (within the operator's policy), as alice, no network
        info = _inspect(cid)
        assert info["Image"] == job["image_digest"] == served["image"]
        assert info["Config"]["User"].split(":")[0] == str(hub.account(ALICE).pw_uid)
        assert info["HostConfig"]["CapDrop"] == ["ALL"] and not info["HostConfig"]["PortBindings"]
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert not any(n.get("IPAddress") for n in info["NetworkSettings"]["Networks"].values())  # no IP to reach
        assert not any("docker.sock" in m["Source"] for m in info["Mounts"])
        # the model folder went through the broker's mount rules: staged (not the path alice's server named)
        model = next(m for m in info["Mounts"] if m["Destination"] == "/opt/ptcuda-model")
        assert not model["RW"] and not model["Source"].startswith(str(home))
        logical = json.loads(info["Config"]["Labels"]["io.jupyter-ptcuda.mounts"])
        assert [t for _, t in logical] == ["/opt/ptcuda-model"] and logical[0][0].startswith(f"{home}/outputs/{job_id}/")
        private = info["Config"]["Labels"]["io.jupyter-ptcuda.kernel-dir"]
        st = os.stat(private)
        assert (st.st_uid, st.st_mode & 0o777) == (hub.account(ALICE).pw_uid, 0o700)

        # alice: a prediction through her own server
        r = hub.user_api(ALICE, "POST", f"jupyter-ptcuda/serve/{sid}/invocations", **ROW, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] in ([[9.0]], [{"0": 9.0}], [9.0]), r.text
        assert hub.user_api(ALICE, "GET", f"jupyter-ptcuda/serve/{sid}/ping").status_code == 200
        assert [s["id"] for s in hub.user_api(ALICE, "GET", "jupyter-ptcuda/serve").json()] == [sid]

        # bob, through his server: not his (the broker lists only bob's containers)
        r = hub.user_api(BOB, "POST", f"jupyter-ptcuda/serve/{sid}/invocations", **ROW)
        assert r.status_code == 404 and "serve list" in r.json()["message"], r.text
        assert hub.user_api(BOB, "GET", "jupyter-ptcuda/serve").json() == []
        assert hub.user_api(BOB, "DELETE", f"jupyter-ptcuda/serve/{sid}").status_code == 404
        # bob's token on alice's server: the Hub refuses
        r = hub.user_api(BOB, "POST", f"jupyter-ptcuda/serve/{sid}/invocations", server=ALICE, **ROW)
        assert r.status_code in (302, 403, 404), r.status_code
        # bob at the broker with alice's container id: every op refuses without saying whose it is
        assert broker(hub, BOB, "inspect", cid=cid).json()["result"] is None
        for op, extra in (("spec_of", {}), ("logs", {}), ("exec", {"cmd": ["cat", "/opt/ptcuda-model/MLmodel"]}),
                          ("signal", {"signal": "SIGKILL"})):
            r = broker(hub, BOB, op, cid=cid, **extra)
            assert r.status_code == 404 and "of yours" in r.json()["message"], (op, r.text)
        assert not [c for c in broker(hub, BOB, "list", kind="serve").json()["result"]]
        # bob starting a serve container on the network, or on alice's folder: refused
        r = broker(hub, BOB, "launch", request={"kind": "serve", "id": "b0b0b0b0b0b0", "image": mlflow_image,
                                                "command": ["true"], "network_mode": "bridge"})
        assert r.status_code == 403 and "no network" in r.json()["message"], r.text
        # bob as a process of his own uid on the host: the socket's folder is alice's, 0700
        sock = os.path.join(private, "scoring.sock")
        probe = hub.run_as(BOB, ["python", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                                                 f"s.connect({sock!r}); print('connected')"])
        assert probe.returncode != 0 and "PermissionError" in probe.stderr and "connected" not in probe.stdout
        # ...and alice's container is still serving her
        assert hub.user_api(ALICE, "GET", f"jupyter-ptcuda/serve/{sid}/ping").status_code == 200
    finally:
        r = hub.user_api(ALICE, "DELETE", f"jupyter-ptcuda/serve/{sid}", timeout=120)
    assert r.status_code == 200 and r.json()["id"] == sid, r.text
    assert cid not in subprocess.run(["docker", "ps", "-aq", "--no-trunc"], capture_output=True, text=True).stdout
    assert not os.path.exists(private)
    assert not [p for p in os.listdir(home / "outputs" / job_id) if p.startswith("served-model-")]
    r = hub.user_api(ALICE, "GET", f"jupyter-ptcuda/serve/{sid}/ping")
    assert r.status_code == 404
