"""The MLflow UI through jupyter-server-proxy: an authenticated route of the Jupyter server, on the jobs' store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tornado.httpclient import HTTPClientError

from jupyter_ptcuda.jobs.mlflow_ui import setup_mlflow_ui


@pytest.fixture
def store(tmp_path):
    return "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")


@pytest.fixture
def jp_server_config(jp_server_config, store):
    return {**jp_server_config,
            "ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True, "jupyter_server_proxy": True}},
            "JobManager": {"mlflow_tracking": True, "mlflow_tracking_uri": store}}


async def test_the_mlflow_ui_shows_the_jobs_store_behind_the_servers_auth(jp_fetch, store):
    assert setup_mlflow_ui()["launcher_entry"]["title"] == "MLflow"
    Path(store[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(MlflowClient(tracking_uri=store).create_experiment, "from-a-job")
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("mlflow", "", headers={"Authorization": "token not-the-token"}, follow_redirects=False)
    assert err.value.code in (302, 401, 403)
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        reply = await jp_fetch("mlflow", "ajax-api", "2.0", "mlflow", "experiments", "search",
                               params={"max_results": "10"}, raise_error=False, follow_redirects=False,
                               request_timeout=150)  # the proxy waits for `mlflow ui` to listen
        if reply.code == 200:
            break
        assert asyncio.get_running_loop().time() < deadline, (reply.code, reply.body[:300])
        await asyncio.sleep(1)
    names = {e["name"] for e in json.loads(reply.body)["experiments"]}
    assert "from-a-job" in names  # what the UI's page asks for, answered from the jobs' store
