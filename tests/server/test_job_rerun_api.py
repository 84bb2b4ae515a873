"""Rerunning a job (``POST jobs/<id>/rerun``) through a real Jupyter server and the real engine: the rerun's
container runs the original's image digest, arguments, GPUs and mounts, and a notebook job reruns its
exported snapshot, not the notebook as edited since."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import nbformat
import pytest

from tests.conftest import TEST_IMAGE
from tests.integration.conftest import hook_engine
from tests.server.helpers import job_environment, wait_for

pytestmark = pytest.mark.integration

#: Prints what it was given, then waits (at most 2 min) for the test to drop ``go-<job id>`` in its folder:
#: the test inspects the container while it runs.
SCRIPT = """\
import os, pathlib, sys, time
print('args', sys.argv[1:], 'gpus', os.environ.get('NVIDIA_VISIBLE_DEVICES'), 'data', sorted(os.listdir('/data')),
      flush=True)
go, deadline = pathlib.Path('go-' + os.environ['JUPYTER_PTCUDA_JOB_ID']), time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
"""


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n")
    data.chmod(0o755)
    return data


@pytest.fixture
def jp_server_config(jp_server_config, data_dir):
    return {**jp_server_config, "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.5},
            "JobOptions": {"mounts": [f"{data_dir}:/data:ro"]}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir):
    with job_environment(tmp_path, monkeypatch, jp_root_dir, TEST_IMAGE):
        yield


def terminal(status, body):
    return status == 200 and body["state"] not in ("queued", "running")


def running(status, body):
    return status == 200 and body["state"] == "running" and body.get("container_id")


def inspect(cid: str) -> dict:
    out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


async def run_and_inspect(api, root, job: dict) -> tuple[dict, dict]:
    """The job's container while it runs (inspected), then the job once it has ended."""
    job = await wait_for(api, f"jobs/{job['id']}", running, timeout=60)
    info = await asyncio.to_thread(inspect, job["container_id"])
    (root / "nb" / f"go-{job['id']}").write_text("")
    return info, await wait_for(api, f"jobs/{job['id']}", terminal, timeout=60)


@pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")
async def test_a_rerun_runs_the_same_digest_parameters_gpus_and_mounts(api, jp_root_dir, jp_base_url):
    (jp_root_dir / "nb" / "train.py").write_text(SCRIPT)
    status, first, _ = await api("POST", "jobs", {"path": "nb/train.py", "gpus": 1, "params": {"lr": 0.5},
                                                  "args": ["--epochs", "2"], "name": "sweep"})
    assert status == 201, first
    status, body, _ = await api("POST", f"jobs/{first['id']}/rerun")
    assert status == 409 and "still running" in body["message"]  # not while it runs
    was, first = await run_and_inspect(api, jp_root_dir, first)
    assert first["state"] == "completed", first

    status, again, resp = await api("POST", f"jobs/{first['id']}/rerun")
    assert status == 201, again
    assert resp.headers["Location"] == f"{jp_base_url}jupyter-ptcuda/jobs/{again['id']}"
    assert again["id"] != first["id"] and again["meta"]["rerun_of"] == first["id"] and again["name"] == "sweep"
    now, again = await run_and_inspect(api, jp_root_dir, again)
    assert again["state"] == "completed", again
    # the same image digest, by name and by content; the same command line (parameters then arguments)
    assert now["Config"]["Image"] == was["Config"]["Image"] == first["image_digest"] == again["image_digest"]
    assert now["Image"] == was["Image"]
    assert now["Config"]["Cmd"] == was["Config"]["Cmd"] and now["Config"]["Cmd"][-4:] == ["--lr", "0.5", "--epochs", "2"]
    assert {(m["Source"], m["Destination"], m["RW"]) for m in now["Mounts"]} == \
        {(m["Source"], m["Destination"], m["RW"]) for m in was["Mounts"]}
    assert again["gpus"] in ("0", "1") and again["parameters"] == {"lr": 0.5}
    _, log, _ = await api("GET", f"jobs/{again['id']}/log")
    assert f"args ['--lr', '0.5', '--epochs', '2'] gpus {again['gpus']} data ['train.csv']" in log
    manifest = json.loads((jp_root_dir / again["output_path"] / "manifest.json").read_text())
    assert manifest["rerun_of"] == first["id"] and manifest["image_digest"] == first["image_digest"]

    # a script changed since is not "the same code": refused, nothing recorded
    (jp_root_dir / "nb" / "train.py").write_text(SCRIPT + "print('edited')\n")
    status, body, _ = await api("POST", f"jobs/{first['id']}/rerun")
    assert status == 409 and "has changed since job" in body["message"], body
    _, jobs, _ = await api("GET", "jobs")
    assert len(jobs) == 2
    status, body, _ = await api("POST", "jobs/nosuchjob/rerun")
    assert status == 404
    status, body, _ = await api("POST", f"jobs/{first['id']}/rerun", {"gpus": 2})
    assert status == 400 and "takes no fields" in body["message"]


async def test_a_notebook_rerun_runs_its_exported_snapshot(api, jp_root_dir):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("lr = 0.01", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(f'first version lr={lr}')")]
    nbformat.write(nb, jp_root_dir / "nb" / "train.ipynb")
    status, first, _ = await api("POST", "jobs", {"path": "nb/train.ipynb", "params": {"lr": 0.5}, "gpus": "none"})
    assert status == 201, first
    first = await wait_for(api, f"jobs/{first['id']}", terminal, timeout=60)
    assert first["state"] == "completed", first
    nb.cells[1].source = "print('edited since')"
    nbformat.write(nb, jp_root_dir / "nb" / "train.ipynb")

    status, again, _ = await api("POST", f"jobs/{first['id']}/rerun")
    assert status == 201, again
    again = await wait_for(api, f"jobs/{again['id']}", terminal, timeout=60)
    _, log, _ = await api("GET", f"jobs/{again['id']}/log")
    assert again["state"] == "completed" and "first version lr=0.5" in log and "edited since" not in log
    assert again["script_path"] == f"{again['output_path']}/train.py"
    assert again["script_sha256"] == first["script_sha256"] and again["notebook_sha256"] == first["notebook_sha256"]

    # the same from the CLI beside the server (one job store): `jobs rerun JOB --wait` follows it to its end
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "jupyter_ptcuda.cli", "jobs", "rerun", first["id"], "--wait"],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "first version lr=0.5" in done.stdout and f"reruns job {first['id']}" in done.stderr
