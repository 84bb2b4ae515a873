"""A notebook job through the REST API with MLflow tracking on (real server, auth on; real engine and MLflow)."""

from __future__ import annotations

import json

import nbformat
import pytest
from mlflow import MlflowClient

from tests.conftest import TEST_IMAGE
from tests.server.helpers import job_environment, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path):
    return "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")


@pytest.fixture
def jp_server_config(jp_server_config, store):
    return {**jp_server_config, "JobManager": {"poll_interval": 0.5, "mlflow_tracking": True,
                                               "mlflow_tracking_uri": store}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir):
    with job_environment(tmp_path, monkeypatch, jp_root_dir, TEST_IMAGE):
        yield


async def test_the_jobs_api_shows_its_run_and_the_executed_notebook_opens(api, jp_fetch, jp_root_dir, store):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("lr = 0.01", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(f'lr={lr}')")]
    nbformat.write(nb, jp_root_dir / "nb" / "sweep.ipynb")
    status, job, _ = await api("POST", "jobs", {"path": "nb/sweep.ipynb", "params": {"lr": 0.5}, "gpus": "none"})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", lambda s, b: s == 200 and b["state"] == "completed"
                          and ((b.get("meta") or {}).get("mlflow") or {}).get("status") == "FINISHED", timeout=90)
    run = MlflowClient(tracking_uri=store).get_run(done["meta"]["mlflow"]["run_id"])
    assert run.data.params["lr"] == "0.5" and run.info.status == "FINISHED"
    assert run.data.tags["jupyter_ptcuda.job_id"] == job["id"]

    reply = await jp_fetch("api", "contents", *done["output_path"].split("/"), "sweep.ipynb")  # opens in JupyterLab
    model = json.loads(reply.body)
    assert model["type"] == "notebook" and model["content"]["cells"][1]["outputs"][0]["text"] == "lr=0.5\n"

    status, body, _ = await api("POST", f"jobs/{job['id']}/register", {"name": "sweep"})
    assert status == 404 and "no MLflow model" in body["message"] and "job.log" in body["message"]
    status, body, _ = await api("POST", f"jobs/{job['id']}/register", {"name": "bad name!"})
    assert status == 400 and "model name" in body["message"]
