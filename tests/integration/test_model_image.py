"""`jupyter ptcuda image build --model` (real engine, real MLflow with its embedded SQLite store): a job logs a
small PyTorch model, `jobs register` makes a version, and the build bakes it into an image on the job's own
image digest; that image, run hardened (its own non-root user, no capabilities, no-new-privileges, a read-only
root), answers POST /invocations with the model's prediction, and so does `serve --image` of it (our own serve
path). An unknown version, and a version with no image digest (registered some other way) without --base, are
refused with what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from mlflow import MlflowClient

from jupyter_ptcuda.jobs.request import JobRequest
from tests.integration.test_jobs import cli, image_id, jobs_db, jobs_manager, script  # noqa: F401
from tests.integration.test_tracking import mlflow_image  # noqa: F401 - the fixture
from tests.registry import start_registry

pytestmark = pytest.mark.integration

TRAIN = """\
import mlflow, torch
model = torch.nn.Linear(2, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[2.0, 3.0]])); model.bias.fill_(1.0)
mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
"""
ROW = {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}  # 2*1 + 3*2 + 1 = 9


@pytest.fixture
def store(tmp_path):
    return "sqlite:///" + str(tmp_path / "mlflow" / "mlflow.db")


@pytest.fixture
def tags():
    """Image tags the test makes; removed at the end (with what a failed build left)."""
    made: list[str] = []
    yield made
    for tag in made:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry on loopback with a password (tests/registry.py), and a Docker login to it."""
    reg, proc = start_registry(tmp_path / "registry")
    try:
        yield reg, reg.docker_config(tmp_path / "docker-config")
    finally:
        proc.terminate()
        proc.wait(10)


def docker(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=300,
                          env={**os.environ, **env})


def inspect_image(ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]


def answer(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as reply:  # noqa: S310 - the container's own address
        return reply.status, reply.read()


def serving(cid: str, within: float = 180) -> str:
    """``http://IP:5000`` of container ``cid`` once its scoring server answers /ping (its log if it exits)."""
    deadline = time.monotonic() + within
    while True:
        state = json.loads(docker("inspect", cid).stdout)[0]
        assert state["State"]["Running"], docker("logs", cid, check=False).stderr[-3000:]
        ip = next(iter(state["NetworkSettings"]["Networks"].values()))["IPAddress"]
        try:
            if answer(f"http://{ip}:5000/ping")[0] == 200:
                return f"http://{ip}:5000"
        except OSError:
            pass
        assert time.monotonic() < deadline, docker("logs", cid, check=False).stderr[-3000:]
        time.sleep(0.5)


async def test_a_registered_model_becomes_an_image_that_answers_on_its_own(engine, mlflow_image, notebook_dir,  # noqa: F811
                                                                           store, monkeypatch, tags, registry):
    path = script(notebook_dir, "train.py", TRAIN)
    async with jobs_manager(engine, mlflow_tracking=True, mlflow_tracking_uri=store) as mgr:
        job = await mgr.submit(JobRequest(path=str(path), image=mlflow_image, gpus="none"))
        job = await mgr.watch(job.id)
    assert job.state == "completed", open(job.log_path).read()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the user's store, as the server's config names it
    monkeypatch.setenv("JUPYTER_PTCUDA_MLFLOW", "1")
    registered = cli("jobs", "register", job.id, "--name", "linear", "--json")
    assert registered.returncode == 0, registered.stderr
    run_id = json.loads(registered.stdout)["run_id"]

    tag = f"ptcuda-test-model-{uuid.uuid4().hex[:8]}:1"
    tags.append(tag)
    built = cli("image", "build", "--model", "models:/linear/1", "--tag", tag, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr
    image, base = inspect_image(tag), inspect_image(job.image_digest)
    labels = image["Config"]["Labels"]
    assert labels["io.jupyter-ptcuda.model.uri"] == "models:/linear/1" and labels["io.jupyter-ptcuda.model.version"] == "1"
    assert labels["io.jupyter-ptcuda.model.run-id"] == run_id and labels["io.jupyter-ptcuda.model.job-id"] == job.id
    assert labels["io.jupyter-ptcuda.model.trained-in"] == job.image_digest == image_id(mlflow_image)
    assert labels["org.opencontainers.image.base.digest"] == base["Id"] and len(labels["io.jupyter-ptcuda.model.sha256"]) == 64
    layers = image["RootFS"]["Layers"]
    assert layers[: len(base["RootFS"]["Layers"])] == base["RootFS"]["Layers"]  # on the very image it was trained in
    assert len(layers) == len(base["RootFS"]["Layers"]) + 1  # + the model, nothing else
    assert image["Config"]["User"] == "65532:65532"
    assert image["Config"]["Cmd"][-8:] == ["serve", "-m", "/opt/ptcuda-model", "--env-manager", "local", "-h",
                                           "0.0.0.0", "-p", "5000"][-8:]
    assert not [t for t in docker("images", "-q", "ptcuda-model-base").stdout.split()]  # the build's own tag is gone

    cid = docker("run", "-d", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--read-only",
                 "--tmpfs", "/tmp", tag).stdout.strip()
    try:
        url = serving(cid)
        status, body = answer(f"{url}/invocations", ROW)
        assert status == 200 and json.loads(body)["predictions"] in ([[9.0]], [{"0": 9.0}], [9.0]), body
        whoami = docker("exec", cid, "python", "-c", "import os; print(os.getuid())").stdout.strip()
        assert whoami == "65532"
        write = docker("exec", cid, "python", "-c", "open('/opt/ptcuda-model/MLmodel', 'a')", check=False)
        assert write.returncode != 0 and "PermissionError" in write.stderr  # the model is read-only to the server
    finally:
        docker("rm", "-f", cid, check=False)

    # the same image through our own serve path: kind serve, the user's uid, hardened, no model mounted, no
    # network: it answers on a Unix socket in its private folder (the only mount)
    started = cli("serve", "--image", tag, "--json", timeout=300)
    assert started.returncode == 0, started.stderr
    served = json.loads(started.stdout)
    try:
        info = json.loads(docker("inspect", served["container_id"]).stdout)[0]
        assert served["model"] == "models:/linear/1" and info["Config"]["Image"] == tag
        assert not info["Config"]["User"].startswith("0") and info["HostConfig"]["CapDrop"] == ["ALL"]
        private = info["Config"]["Labels"]["io.jupyter-ptcuda.kernel-dir"]
        assert [(m["Source"], m["RW"]) for m in info["Mounts"]] == [(private, True)]
        assert info["HostConfig"]["NetworkMode"] == "none" and not info["HostConfig"]["PortBindings"]
        from jupyter_ptcuda.jobs.serving import Endpoint, _request

        _, _, body = _request(Endpoint(socket=os.path.join(private, "scoring.sock")), "POST", "invocations",
                              json.dumps(ROW).encode(), "application/json", 30)
        assert json.loads(body)["predictions"] in ([[9.0]], [{"0": 9.0}], [9.0])
    finally:
        stopped = cli("serve", "stop", served["id"])
    assert stopped.returncode == 0, stopped.stderr
    plain = cli("serve", "--image", mlflow_image)
    assert plain.returncode != 0 and "holds no model" in plain.stderr and "image build --model" in plain.stderr

    # --push, as for any build: what another team pulls is the same model on the same base
    reg, login = registry
    remote = f"{reg.host}/ptcuda/linear-{uuid.uuid4().hex[:8]}:1"
    tags.append(remote)
    pushed = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "image", "build", "--model", "models:/linear/1",
                             "--tag", remote, "--push"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "DOCKER_CONFIG": str(login), "CI": "true"})
    assert pushed.returncode == 0, pushed.stdout[-3000:] + pushed.stderr
    pinned = pushed.stdout.strip().splitlines()[-1]
    assert pinned.startswith(remote.rsplit(":", 1)[0] + "@sha256:") and remote.split("/", 1)[1].split(":")[0] in reg.catalog()
    docker("rmi", remote)
    docker("pull", pinned, DOCKER_CONFIG=str(login))
    tags.append(pinned)
    assert inspect_image(pinned)["Config"]["Labels"]["io.jupyter-ptcuda.model.sha256"] == labels["io.jupyter-ptcuda.model.sha256"]

    unknown = cli("image", "build", "--model", "models:/linear/7", "--tag", tag + "7")
    assert unknown.returncode != 0 and "not in the model registry" in unknown.stderr, unknown.stderr
    assert "linear has version 1" in unknown.stderr and "jobs register" in unknown.stderr
    assert docker("image", "inspect", tag + "7", check=False).returncode != 0

    client = MlflowClient(tracking_uri=store, registry_uri=store)  # a version registered without our tags
    client.create_registered_model("bare")
    client.create_model_version("bare", source=client.get_model_version("linear", "1").source, run_id=run_id)
    bare = cli("image", "build", "--model", "models:/bare/1", "--tag", tag + "b")
    assert bare.returncode != 0 and "--base IMAGE" in bare.stderr and "image_digest" in bare.stderr, bare.stderr
    tags.append(tag + "b")
    based = cli("image", "build", "--model", "models:/bare/1", "--base", mlflow_image, "--tag", tag + "b", timeout=600)
    assert based.returncode == 0, based.stdout[-3000:] + based.stderr
    labels = inspect_image(tag + "b")["Config"]["Labels"]
    assert labels["io.jupyter-ptcuda.model.base"] == mlflow_image and labels["io.jupyter-ptcuda.model.trained-in"] == ""
    assert labels["io.jupyter-ptcuda.model.sha256"] == inspect_image(tag)["Config"]["Labels"]["io.jupyter-ptcuda.model.sha256"]
