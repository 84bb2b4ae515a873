"""Images through a real registry (Debian's docker-registry on loopback, htpasswd auth; tests/registry.py):
push with the CLI, remove the local copy, install a ``--pin``ned kernelspec, start a kernel from it (pulled
with this process's Docker login) and a job from that kernel: both run the pushed digest. A wrong
password, an unknown name and an unreachable registry each end in one sentence with the fix, and no
kernelspec is written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.errors import ImageNotFound
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.registry import Registry, bridge_gateway, free_port, fresh_image, start_registry, tiny_kernel_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg, proc = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def tiny_image(engine):
    return tiny_kernel_image(engine)


@pytest.fixture
def pushed_ref(engine, tiny_image, registry):
    """REGISTRY/ptcuda/kernel-XXXX:v1, a fresh image (its own id: the tiny image plus a label) tagged here;
    removed from the engine afterwards, by id, with every name it got."""
    ref = f"{registry.host}/ptcuda/kernel-{uuid.uuid4().hex[:8]}:v1"
    image_id = fresh_image(engine, tiny_image, ref)
    yield ref
    subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)


def cli(*args: str, docker_config, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "DOCKER_CONFIG": str(docker_config), **env})


def present(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def remove_everywhere(ref: str) -> None:
    """Remove the image ``ref`` names from the engine, with all its tags and digests (by id)."""
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True)
    if out.returncode == 0:
        subprocess.run(["docker", "rmi", "-f", out.stdout.strip()], capture_output=True, check=True)
    assert not present(ref)


async def test_push_pin_then_a_kernel_and_its_job_run_the_pushed_digest(engine, registry: Registry, pushed_ref,
                                                                         tmp_path, monkeypatch, notebook_dir):
    login = registry.docker_config(tmp_path / "docker")
    monkeypatch.setenv("DOCKER_CONFIG", str(login))  # the pull at kernel start: this process's login
    pushed = cli("image", "push", pushed_ref, docker_config=login, CI="true")
    assert pushed.returncode == 0, pushed.stderr
    repo = pushed_ref.rsplit(":", 1)[0]
    pinned = pushed.stdout.strip().splitlines()[-1]
    assert pinned.startswith(repo + "@sha256:") and len(pinned) == len(repo) + 1 + 71
    assert "layer" in pushed.stderr and "\r" not in pushed.stderr  # CI: plain lines, no bar
    assert f"digest {pinned.split('@')[1]}" in pushed.stderr
    assert repo.split("/", 1)[1] in registry.catalog()
    status, _ = registry.get(f"/v2/{repo.split('/', 1)[1]}/manifests/{pinned.split('@')[1]}")
    assert status == 200  # the registry serves what was printed

    remove_everywhere(pushed_ref)
    prefix = tmp_path / "prefix"
    installed = cli("kernelspec", "install", "--pin", "--image", pushed_ref, "--name", "pinned", "--gpus", "none",
                    "--prefix", str(prefix), docker_config=login)
    assert installed.returncode == 0, installed.stderr
    spec = json.loads((prefix / "share/jupyter/kernels/pinned/kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["config"]["image"] == pinned

    remove_everywhere(pinned)  # the check pulled it: gone again, so the kernel's start must pull it
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share/jupyter"))
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    km = AsyncKernelManager(kernel_name="pinned")
    await km.start_kernel(cwd=str(notebook_dir))
    try:
        kernel = await engine.inspect(km.provisioner.container_id)
        assert kernel["Config"]["Image"] == pinned
        assert pinned in (await engine.image(kernel["Image"]))["RepoDigests"]

        (notebook_dir / "train.py").write_text("print('trained')\n")

        class KernelManagers:
            def get_kernel(self, kernel_id):
                return km

        mgr = JobManager(service=DockerContainerService(engine), kernel_manager=KernelManagers(), poll_interval=0.5)
        try:
            job = await mgr.submit(JobRequest(path=str(notebook_dir / "train.py"), kernel_id=km.kernel_id), watch=False)
            info = await engine.inspect(job.container_id)
            assert info["Config"]["Image"] == pinned and info["Image"] == kernel["Image"]
            job = await mgr.watch(job.id)
            assert job.state == "completed", job.reason
            assert job.image_digest == pinned
        finally:
            with contextlib.suppress(Exception):
                await mgr.stop()
    finally:
        await km.shutdown_kernel(now=True)
        remove_everywhere(pinned)


@pytest.mark.parametrize("login", ["wrong-password", "none"])
def test_a_refused_login_is_one_sentence_and_no_kernelspec(engine, registry, pushed_ref, tmp_path, login):
    good = registry.docker_config(tmp_path / "good")
    assert cli("image", "push", pushed_ref, docker_config=good).returncode == 0
    if login == "none":
        docker_config = tmp_path / "empty"
        docker_config.mkdir()
    else:
        docker_config = registry.docker_config(tmp_path / "bad", password="not-" + registry.password)
    prefix = tmp_path / "prefix"
    for args in (["kernelspec", "install", "--pin", "--image", pushed_ref, "--name", "pinned", "--prefix", str(prefix)],
                 ["image", "push", pushed_ref]):
        done = cli(*args, docker_config=docker_config)
        assert done.returncode == 1
        *progress, line = done.stderr.strip().splitlines()  # the push's progress lines, then one sentence
        assert all(p.startswith("pushing ") for p in progress) and "Traceback" not in done.stderr, done.stderr
        assert line.startswith("jupyter ptcuda: error: the registry " + registry.host + " did not accept the credentials")
        assert f"run `docker login {registry.host}`" in line
        assert registry.password not in line
    assert not (prefix / "share/jupyter/kernels/pinned").exists()  # nothing half-written


def test_an_unknown_name_and_an_unreachable_registry_say_what_to_check(registry, tmp_path, engine):
    good = registry.docker_config(tmp_path / "good")
    prefix = tmp_path / "prefix"
    unknown = f"{registry.host}/ptcuda/never-pushed:v1"
    done = cli("kernelspec", "install", "--pin", "--image", unknown, "--prefix", str(prefix), docker_config=good)
    assert done.returncode == 1
    assert "does not know " + unknown in done.stderr and f"jupyter ptcuda image push {unknown}" in done.stderr
    nowhere = f"127.0.0.1:{free_port()}/ptcuda/x:v1"
    done = cli("kernelspec", "install", "--pin", "--image", nowhere, "--prefix", str(prefix), docker_config=good)
    assert done.returncode == 1
    assert "is unreachable" in done.stderr and "check the registry address" in done.stderr
    assert not (prefix / "share/jupyter/kernels").exists()


def test_a_registry_whose_ca_the_engine_does_not_know_is_one_sentence_until_its_ca_is_installed(
        engine, tiny_image, tmp_path):
    """A real TLS registry (a CA the test makes) on the engine's bridge address, which the engine does not
    treat as insecure as it does loopback: the push fails with the sentence naming where the CA goes; with
    the CA there (the engine reads /etc/docker/certs.d at each push) the same command pushes."""
    if os.geteuid() != 0:
        pytest.skip("installs a CA in /etc/docker/certs.d: run as root (CI does)")
    reg, proc = start_registry(tmp_path / "tls", tls_ip=bridge_gateway(engine))
    certs = Path("/etc/docker/certs.d") / reg.host
    ref = f"{reg.host}/ptcuda/tls-{uuid.uuid4().hex[:8]}:v1"
    image_id = fresh_image(engine, tiny_image, ref)
    try:
        login = reg.docker_config(tmp_path / "docker", password=reg.password)  # `docker login` would fail on TLS too
        done = cli("image", "push", ref, docker_config=login, CI="true")
        assert done.returncode == 1, done.stdout
        assert f"a TLS connection to the registry {reg.host} failed while pushing {ref}" in done.stderr, done.stderr
        assert f"/etc/docker/certs.d/{reg.host}/ca.crt" in done.stderr and "Traceback" not in done.stderr
        assert reg.password not in done.stderr
        certs.mkdir(parents=True)
        shutil.copy(reg.root / "ca.crt", certs / "ca.crt")
        done = cli("image", "push", ref, docker_config=login, CI="true")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1].startswith(ref.rsplit(":", 1)[0] + "@sha256:")
    finally:
        shutil.rmtree(certs, ignore_errors=True)
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)
        proc.terminate()
        proc.wait(10)


class RecordedNotices:
    """The server's notices, and every version of each as it was posted (the board keeps only the last)."""

    def __init__(self):
        from jupyter_ptcuda import notices as N

        self.board, self.posted = N.Notices(), []

    def post(self, notice):
        self.posted.append(dict(notice))
        return self.board.post(notice)


@pytest.fixture
def big_pushed(engine, tiny_image, registry, tmp_path, monkeypatch):
    """REGISTRY/ptcuda/progress-XXXX:v1: the tiny image plus one layer of 96 MB of random bytes (nothing
    compresses it, so a pull downloads ~96 MB), pushed with a Docker login of this process, then removed here."""
    from jupyter_ptcuda.images import _docker_build

    monkeypatch.setenv("DOCKER_CONFIG", str(registry.docker_config(tmp_path / "docker")))
    ref = f"{registry.host}/ptcuda/progress-{uuid.uuid4().hex[:8]}:v1"
    _docker_build(engine, f"FROM {tiny_image}\nRUN head -c 96000000 /dev/urandom > /tmp/blob\n", ref, "t",
                  lambda line: None)
    digest = engine.push_sync(ref)
    remove_everywhere(ref)
    yield ref, f"{ref.rsplit(':', 1)[0]}@{digest}"
    remove_everywhere(ref)


async def test_a_kernel_start_shows_the_pull_progress_then_pulled(big_pushed, kernelspec, notebook_dir, engine,
                                                                  monkeypatch):
    from jupyter_ptcuda import notices as N

    ref, _ = big_pushed
    recorded = RecordedNotices()
    monkeypatch.setattr(N, "_active", recorded)
    km = AsyncKernelManager(kernel_name=kernelspec(image=ref, pull_policy="missing", pull_progress_interval=0.05))
    await km.start_kernel(cwd=str(notebook_dir))
    try:
        assert (await engine.inspect(km.provisioner.container_id))["Config"]["Image"] == ref
    finally:
        await km.shutdown_kernel(now=True)
    told = [n for n in recorded.posted if n["kind"] == "kernel_image"]
    assert [n["state"] for n in told][0] == "waiting" and told[-1]["state"] == "started", told
    assert all(n["state"] == "waiting" for n in told[:-1])
    assert "is being pulled" in told[0]["message"]
    assert told[-1]["message"].startswith(f"Kernel {km.kernel_id[:8]}: image {ref} pulled in ")
    shown = [n for n in told if "progress" in n]
    percents = [n["progress"]["percent"] for n in shown]
    assert percents == sorted(percents) and len(set(percents)) >= 2, percents  # it moved, never back
    assert any(0 < p < 100 for p in percents), percents
    for n in shown:
        assert n["message"].startswith(f"Kernel {km.kernel_id[:8]} waits for its image: pulling {ref}: "
                                       f"{n['progress']['percent']}% ("), n["message"]
    last = shown[-1]["progress"]
    assert last["total"] > 90 * 10**6 and last["layers"] == 1  # the new layer only; the base layers were here
    assert len({n["at"] for n in told}) == 1 and all(n["kernel_id"] == km.kernel_id for n in told)  # one notice
    assert recorded.board.since(0)[-1]["state"] == "started"


async def test_a_rerun_pulls_the_digest_its_job_ran(big_pushed, engine, notebook_dir, tmp_path, monkeypatch):
    """The job ran REPO@sha256 (its tag's digest); that image is gone from the host; the rerun pulls it."""
    from traitlets.config import Config

    ref, pinned = big_pushed
    engine.pull_sync(ref)
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    (notebook_dir / "train.py").write_text("import sys\nprint('trained', sys.argv[1:])\n")
    config = Config({"JobOptions": {"image": ref, "gpus": "none"}, "JobManager": {"poll_interval": 0.5,
                                                                                   "import_check": False}})
    mgr = JobManager(service=DockerContainerService(engine), config=config)
    try:
        job = await mgr.submit(JobRequest(path=str(notebook_dir / "train.py"), params={"lr": 0.5}), watch=False)
        job = await mgr.watch(job.id)
        assert job.state == "completed" and job.image_digest == pinned, job
        remove_everywhere(ref)

        again = await mgr.rerun(job.id, watch=False)
        info = await engine.inspect(again.container_id)
        assert info["Config"]["Image"] == pinned and pinned in (await engine.image(info["Image"]))["RepoDigests"]
        again = await mgr.watch(again.id)
        assert again.state == "completed" and again.meta["rerun_of"] == job.id
        log, _ = await mgr.read_log(again.id)
        assert b"trained ['--lr', '0.5']" in log

        remove_everywhere(pinned)
        mgr.pull_policy = "never"
        with pytest.raises(ImageNotFound, match="pull_policy='never'"):
            await mgr.rerun(job.id, watch=False)
    finally:
        await mgr.stop()
