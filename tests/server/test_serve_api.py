"""Register and serve (real server with auth, real engine, real MLflow; the CPU test image with the `serve`
preset): a job logs a small PyTorch model, `register` makes a version, `serve` runs MLflow's scoring server in
the job's own image digest, as the user, without the Docker socket; a prediction comes back through the
Jupyter server only; stopping leaves no container and no copy of the model."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.test_jobs import cli
from tests.integration.test_tracking import mlflow_image  # noqa: F401 - the fixture
from tests.server.helpers import job_environment, wait_for

pytestmark = pytest.mark.integration

TRAIN = """\
import mlflow, torch
model = torch.nn.Linear(2, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[2.0, 3.0]])); model.bias.fill_(1.0)
mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
"""


@pytest.fixture
def store(tmp_path):
    return "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")


@pytest.fixture
def jp_server_config(jp_server_config, store):
    return {**jp_server_config, "JobManager": {"poll_interval": 0.5, "mlflow_tracking": True,
                                               "mlflow_tracking_uri": store}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir, mlflow_image):  # noqa: F811
    before = set(_serve_containers())
    with job_environment(tmp_path, monkeypatch, jp_root_dir, mlflow_image):
        yield
    for cid in set(_serve_containers()) - before:  # a test that failed half-way: its model servers go too
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _inspect(cid: str) -> dict:
    return json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout)[0]


def _serve_containers() -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=serve"],
                          capture_output=True, text=True).stdout.split()


async def test_a_registered_model_answers_through_the_server_in_its_own_image(api, jp_fetch, jp_root_dir, store,
                                                                              monkeypatch):
    (jp_root_dir / "nb" / "train.py").write_text(TRAIN)
    status, job, _ = await api("POST", "jobs", {"path": "nb/train.py", "gpus": "none"})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", lambda s, b: s == 200 and b["state"] in ("completed", "failed")
                          and ((b.get("meta") or {}).get("mlflow") or {}).get("status") in ("FINISHED", "FAILED"),
                          timeout=180)
    assert done["state"] == "completed", done
    status, version, _ = await api("POST", f"jobs/{job['id']}/register", {"name": "linear"})
    assert status == 201 and version["uri"] == "models:/linear/1", version

    before = set(_serve_containers())
    status, bad, _ = await api("POST", "serve", {"model": "models:/linear/9"})
    assert status == 404 and "not in the model registry" in bad["message"], bad
    status, served, _ = await api("POST", "serve", {"model": "models:/linear/1"}, request_timeout=300)
    assert status == 201, served
    try:
        info = _inspect(served["container_id"])
        assert info["Image"] == done["image_digest"] == served["image"]  # the exact image the model was trained in
        assert info["Config"]["User"] == done["meta"]["user"] and not info["Config"]["User"].startswith("0")
        assert info["HostConfig"]["CapDrop"] == ["ALL"] and not info["HostConfig"]["Privileged"]
        assert not info["HostConfig"]["PortBindings"]  # reachable only through the Jupyter server
        # no network at all (no bridge IP another local user could reach): a Unix socket in a private folder
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert not any(n.get("IPAddress") for n in info["NetworkSettings"]["Networks"].values())
        mounts = info["Mounts"]
        assert not any("docker.sock" in m["Source"] for m in mounts)
        private = next(m["Source"] for m in mounts if m["Destination"] != "/opt/ptcuda-model")
        assert sorted((m["Destination"], m["RW"]) for m in mounts) == sorted([("/opt/ptcuda-model", False),
                                                                              (private, True)])
        assert os.stat(private).st_mode & 0o077 == 0 and os.path.exists(os.path.join(private, "scoring.sock"))

        monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what the CLI reads, like the server's config
        monkeypatch.setenv("JUPYTER_PTCUDA_MLFLOW", "1")
        listed = cli("serve", "list", "--json")
        assert listed.returncode == 0 and [s["model"] for s in json.loads(listed.stdout)
                                           if s["id"] == served["id"]] == ["models:/linear/1"], listed.stderr

        reply = await jp_fetch("jupyter-ptcuda", "serve", served["id"], "invocations", method="POST",
                               body=json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}),
                               headers={"Content-Type": "application/json"})
        assert json.loads(reply.body)["predictions"] in ([[9.0]], [{"0": 9.0}], [9.0]), reply.body
        status, _, _ = await api("GET", f"serve/{served['id']}/ping")
        assert status == 200
    finally:
        status, gone, _ = await api("DELETE", f"serve/{served['id']}")
    assert status == 200 and gone["id"] == served["id"]
    assert set(_serve_containers()) <= before and not os.path.exists(private)
    assert not [p for p in os.listdir(jp_root_dir / done["output_path"]) if p.startswith("served-model-")]
    status, body, _ = await api("GET", f"serve/{served['id']}/ping")
    assert status == 404 and "serve list" in body["message"]

    started = cli("serve", "models:/linear/1", "--json", timeout=300)  # the CLI, beside the server
    assert started.returncode == 0, started.stderr
    again = json.loads(started.stdout)
    status, _, _ = await api("GET", f"serve/{again['id']}/ping")
    assert status == 200 and again["image"] == done["image_digest"]
    stopped = cli("serve", "stop", again["id"])
    assert stopped.returncode == 0 and again["id"] in stopped.stdout, stopped.stderr
    assert set(_serve_containers()) <= before
    missing = cli("serve", "stop", again["id"])
    assert missing.returncode != 0 and "serve list" in missing.stderr
