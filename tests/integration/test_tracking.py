"""Every job an MLflow run (real MLflow, embedded SQLite store; jobs in the real engine).

The jobs' image is the CPU test image plus the `serve` preset (``mlflow_image``: built once from it, reused by
tag; scripts/test builds it). A script's ``mlflow.log_metric`` writes the file store in the job's own
artifacts folder; the server copies it into the job's run in the user's store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient  # the [mlflow] extra, in the test extras: never skipped

from jupyter_ptcuda.jobs.request import JobRequest
from jupyter_ptcuda.jobs.runstore import Limits
from jupyter_ptcuda.nvml.sampler import GpuSampler
from jupyter_ptcuda_testing.nvml import make_fake_nvml
from tests.integration.conftest import hook_engine
from tests.integration.test_jobs import cli, image_id, jobs_db, jobs_manager, script  # noqa: F401

pytestmark = pytest.mark.integration
MLFLOW_IMAGE = os.environ.get("JUPYTER_PTCUDA_MLFLOW_TEST_IMAGE", "jupyter-ptcuda-test:mlflow")


@pytest.fixture(scope="session")
def mlflow_image(engine, test_image):
    """The CPU test image with the `serve` preset (mlflow-skinny, pandas): what a user's
    `jupyter ptcuda image build --base IMG --preset serve` gives."""
    if subprocess.run(["docker", "image", "inspect", MLFLOW_IMAGE], capture_output=True).returncode != 0:
        from jupyter_ptcuda.images import build_image

        build_image(engine, base=test_image, tag=MLFLOW_IMAGE, preset="serve", pull=False, progress=lambda s: None)
    return MLFLOW_IMAGE


@pytest.fixture
def store(tmp_path):
    return "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")


@pytest.fixture
def team_server(tmp_path):
    """`mlflow server` on loopback (a team's tracking server): its own SQLite store and artifact root."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "team").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path}/team/mlflow.db",
                             "--artifacts-destination", str(tmp_path / "team" / "artifacts"), "--workers", "1"],
                            cwd=tmp_path / "team", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "mlflow server exited"
        assert time.monotonic() < deadline, "mlflow server did not answer in 120 s"
        time.sleep(0.5)
    try:
        yield url
    finally:  # the server and the uvicorn workers it started
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


async def until(what, check, within: float = 90):
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.3)


TRAIN = """\
import os, sys, time
import mlflow, torch
mlflow.log_param("epochs", 5)
mlflow.set_tag("stage", "demo")
for step in range(3):
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
while not os.path.exists("go"):  # the test lets it finish once it has seen the first values in the run
    time.sleep(0.1)
for step in range(3, 5):
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
out = os.environ["JUPYTER_PTCUDA_OUTPUT_DIR"]
os.makedirs(out + "/figures", exist_ok=True)
open(out + "/figures/cell-1-1.png", "wb").write(b"\\x89PNG\\r\\n\\x1a\\nfake")
model = torch.nn.Linear(2, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[2.0, 3.0]])); model.bias.fill_(1.0)
mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
print("args", sys.argv[1:])
"""


@pytest.mark.parametrize("where", ["embedded", "team-server"])
async def test_script_metrics_land_live_in_the_jobs_run_and_the_model_registers(engine, mlflow_image, notebook_dir,
                                                                                 request, monkeypatch, tmp_path, where):
    """A job with -p lr=0.1 whose train.py logs metrics and a model: one run in the user's store (embedded
    SQLite, or `mlflow server` on loopback) with the parameter, the image digest/GPU/job tags, the metric
    history while it runs and complete at the end, the artifacts and the model; `register` makes a model
    version tagged with the image digest."""
    store = request.getfixturevalue("store" if where == "embedded" else "team_server")
    path = script(notebook_dir, "train.py", TRAIN)
    monkeypatch.chdir(tmp_path)  # nothing lands in the working folder
    gpus = "device=1" if hook_engine() else "none"
    async with jobs_manager(engine, mlflow_tracking=True, mlflow_tracking_uri=store) as mgr:
        mgr.tracker.sync_interval = 0.3
        sampler = GpuSampler(make_fake_nvml("2"), interval=0.2)
        sampler.sample_once()
        mgr.tracker.sampler = sampler
        job = await mgr.submit(JobRequest(path=str(path), image=mlflow_image, gpus=gpus, params={"lr": 0.1}))
        client = MlflowClient(tracking_uri=store)
        run_id = (await until("the job's run", lambda: (mgr.store.get(job.id).meta.get("mlflow") or {}).get("run_id")))
        history = await until("3 values of loss in the run, live",
                              lambda: len(client.get_metric_history(run_id, "loss")) >= 3)
        assert history and (await mgr.get(job.id)).state == "running"
        assert "MLFLOW_TRACKING_URI" not in os.environ or os.environ["MLFLOW_TRACKING_URI"] != store
        env = (await engine.inspect(job.container_id))["Config"]["Env"]
        assert f"MLFLOW_TRACKING_URI=file://{job.output_dir}/mlflow/mlruns" in env
        assert not [e for e in env if store.split("://")[1] in e]  # the user's store never enters the container
        sampler.sample_once()
        (notebook_dir / "go").write_text("")
        job = await mgr.watch(job.id)
    assert job.state == "completed", Path(job.log_path).read_text()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert client.get_experiment(run.info.experiment_id).name == "train.py"
    if where == "embedded":  # beside the store; a team server says where its artifacts go
        assert run.info.artifact_uri.startswith(Path(store[len("sqlite:///"):]).parent.as_uri() + "/mlartifacts/")
    else:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == \
        [(s, 1.0 / (s + 1)) for s in range(5)]
    assert run.data.params["lr"] == "0.1" and run.data.params["epochs"] == "5"
    assert run.data.params["job.args"] == "--lr 0.1"
    tags = run.data.tags
    assert tags["jupyter_ptcuda.image_digest"] == image_id(mlflow_image) == job.image_digest
    assert tags["jupyter_ptcuda.job_id"] == job.id and tags["stage"] == "demo"
    assert tags["jupyter_ptcuda.torch"].startswith("2.13.0")
    if gpus != "none":
        assert tags["jupyter_ptcuda.gpus"] == "1" and tags["jupyter_ptcuda.gpu_count"] == "1"
        assert tags["jupyter_ptcuda.gpu_model"] and tags["jupyter_ptcuda.gpu_driver"]
        assert client.get_metric_history(run_id, "system/gpu_1_utilization_percentage")
    files = {f.path for f in client.list_artifacts(run_id)}
    assert {"job.log", "manifest.json", "figures", "model"} <= files
    assert "model/MLmodel" in {f.path for f in client.list_artifacts(run_id, "model")}
    assert (await mgr.get(job.id)).meta["mlflow"]["metrics"]["loss"] == 0.2
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # what the CLI reads, like the server's config
    monkeypatch.setenv("JUPYTER_PTCUDA_MLFLOW", "1")
    bad = cli("jobs", "register", job.id, "--name", "linear", "--artifact", "nothing-here")
    assert bad.returncode != 0 and "no artifact 'nothing-here'" in bad.stderr, bad.stderr
    done = cli("jobs", "register", job.id, "--name", "linear", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["uri"] == "models:/linear/1"
    mv = client.get_model_version("linear", "1")
    assert mv.tags["jupyter_ptcuda.image_digest"] == job.image_digest and mv.run_id == run_id


HOSTILE = """\
import os
store = os.environ["MLFLOW_TRACKING_URI"][len("file://"):]
victim, secret = VICTIM, SECRET  # another run of the user's store; a host folder the job cannot read
run = os.path.join(store, "0", victim)
for sub in ("metrics", "params", "tags"):
    os.makedirs(os.path.join(run, sub), exist_ok=True)
os.symlink(secret + "/metrics.txt", os.path.join(run, "metrics", "stolen"))       # a link to another file
os.symlink(secret, os.path.join(run, "params", "linked_dir"))               # a link to a folder
with open(os.path.join(run, "metrics", "huge"), "w") as f:                      # a huge history
    f.write("".join(f"1700000000000 {i} {i}\\n" for i in range(50000)))
open(os.path.join(run, "tags", "jupyter_ptcuda.image_digest"), "w").write("sha256:forged")
open(os.path.join(run, "tags", "mlflow.user"), "w").write("someone-else")
other = os.path.join(store, "1")
os.makedirs(other, exist_ok=True)
os.symlink(secret, os.path.join(other, "0123456789abcdef0123456789abcdef"))  # a run folder that is a link
out = os.environ["JUPYTER_PTCUDA_OUTPUT_DIR"]
os.symlink(secret + "/metrics.txt", os.path.join(out, "leak.txt"))                # an artifact that is a link
print("planted")
"""


async def test_a_hostile_job_changes_nothing_outside_its_own_run(engine, mlflow_image, notebook_dir, store, tmp_path):
    """Links in its store, a huge history, another run's id, forged server tags: the other run is unchanged,
    nothing is read through a link, the history is cut at the limit (and the run says so)."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "metrics.txt").write_text("1700000000000 42.0 0\n")
    client = MlflowClient(tracking_uri=store)  # artifacts beside it, as the tracker keeps them
    Path(store[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    victim = client.create_run(client.create_experiment("other", artifact_location=(tmp_path / "other").as_uri())).info.run_id
    client.log_metric(victim, "loss", 7.0)
    path = script(notebook_dir, "hostile.py", f"VICTIM, SECRET = {victim!r}, {str(secret)!r}\n" + HOSTILE)
    async with jobs_manager(engine, mlflow_tracking=True, mlflow_tracking_uri=store) as mgr:
        mgr.tracker.limits = Limits(values=1000, chunk=64 << 10)
        job = await mgr.submit(JobRequest(path=str(path), image=mlflow_image, gpus="none"), watch=False)
        job = await mgr.watch(job.id)
    assert job.state == "completed" and "planted" in Path(job.log_path).read_text()
    run_id = job.meta["mlflow"]["run_id"] if "mlflow" in job.meta else (await mgr.get(job.id)).meta["mlflow"]["run_id"]
    assert run_id != victim
    assert [m.value for m in client.get_metric_history(victim, "loss")] == [7.0]
    assert client.get_run(victim).data.params == {} and not client.get_metric_history(victim, "huge")
    run = client.get_run(run_id)
    assert "stolen" not in run.data.metrics and "linked_dir" not in run.data.params
    assert len(client.get_metric_history(run_id, "huge")) == 1000
    assert "metric values" in run.data.tags["jupyter_ptcuda.truncated"]
    assert run.data.tags["jupyter_ptcuda.image_digest"] == job.image_digest != "sha256:forged"
    assert run.data.tags["mlflow.user"] == job.owner
    assert "leak.txt" not in {f.path for f in client.list_artifacts(run_id)}
