"""Batch jobs against the real engine and the CPU test image: what a user of `jupyter ptcuda run` sees."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.conftest import finished
from tests.integration.conftest import hook_engine

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def jobs_db(tmp_path, monkeypatch):
    """A private job store (the CLI subprocesses inherit it through the environment)."""
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    return tmp_path / "jobs.sqlite"


@contextlib.asynccontextmanager
async def jobs_manager(engine, **kwargs):
    """A JobManager as the server would have one; stopped (watching only) at the end."""
    mgr = JobManager(service=DockerContainerService(engine), **{"cancel_grace": 2.0, "poll_interval": 0.5, **kwargs})
    try:
        yield mgr
    finally:
        await mgr.stop()


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


async def exited(engine, cid: str, within: float = 60) -> None:
    """Until container ``cid`` has exited (AssertionError after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while (info := await engine.inspect(cid)) is not None and info["State"]["Running"]:
        assert time.monotonic() < deadline, f"container {cid[:12]} still runs after {within:.0f} s"
        await asyncio.sleep(0.1)


def read(path: str | Path) -> str:
    return Path(path).read_text()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image_id(ref: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True,
                          text=True).stdout.strip()


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body)
    return path


async def output_contains(mgr: JobManager, job_id: str, text: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while text.encode() not in (await mgr.read_log(job_id))[0]:
        assert time.monotonic() < deadline, f"{text!r} never appeared in the output of job {job_id}"
        await asyncio.sleep(0.2)


def magic_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A training notebook"),
        nbformat.v4.new_code_cell("%load_ext autoreload\n%autoreload 2\nimport os\nimport sys"),
        nbformat.v4.new_code_cell("lr = 0.01\nepochs = 2", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("!pip install -q tqdm"),
        nbformat.v4.new_code_cell('greeting = "hello"\n!echo "shell says {greeting}"\nfiles = !ls\nprint("files:", len(files) > 0)'),
        nbformat.v4.new_code_cell('%%bash\necho "bash says $((6 * 7))"'),
        nbformat.v4.new_code_cell("%env RUN_MODE=batch\nprint('mode:', os.environ['RUN_MODE'])"),
        nbformat.v4.new_code_cell("import torch\nprint(f'lr={lr} epochs={epochs} torch={torch.__version__}')"),
    ]
    path = folder / "train.ipynb"
    nbformat.write(nb, path)
    return path


async def test_notebook_with_magics_runs_with_overridden_parameter(engine, test_image, notebook_dir):
    """`run train.ipynb --wait -- --lr 0.5`: exported, run, 0.5 in the log, exit 0, manifest, no container."""
    nb = magic_notebook(notebook_dir)
    done = cli("run", str(nb), "--image", test_image, "--gpus", "none", "--wait", "--", "--lr", "0.5")
    assert done.returncode == 0, done.stderr
    for line in ("lr=0.5 epochs=2 torch=2.13.0", "shell says hello", "files: True", "bash says 42", "mode: batch"):
        assert line in done.stdout, (line, done.stdout, done.stderr)
    jobs = json.loads(cli("jobs", "list", "--json").stdout)
    assert len(jobs) == 1
    job = jobs[0]
    assert (job["state"], job["exit_code"], job["reason"]) == ("completed", 0, "completed")
    assert job["requirements"] == ["tqdm"]
    out = Path(job["output_dir"])
    assert out.parent == notebook_dir / "outputs"
    assert "lr=0.5" in read(out / "job.log")
    m = json.loads(read(out / "manifest.json"))
    assert m["notebook_sha256"] == sha256(nb) and m["script_sha256"] == sha256(out / "train.py")
    assert m["args"] == ["--lr", "0.5"] and m["image"] == test_image
    assert m["image_digest"] == image_id(test_image)  # a local image has no RepoDigest: pinned to its id
    assert m["torch"].startswith("2.13.0") and m["exit_code"] == 0 and m["timings"]["duration_s"] > 0
    assert await engine.containers({"io.jupyter-ptcuda.job-id": job["id"]}) == []


async def test_cli_wait_exits_with_the_scripts_exit_code(test_image, notebook_dir):
    script(notebook_dir, "fail.py", "import sys\nprint('about to fail', sys.argv[1:])\nsys.exit(3)\n")
    done = cli("run", str(notebook_dir / "fail.py"), "--image", test_image, "--gpus", "none", "--wait", "--name",
               "failing", "--", "--epochs", "1")
    assert done.returncode == 3, done.stderr
    assert "about to fail ['--epochs', '1']" in done.stdout
    assert "failed" in done.stderr and "exit code 3" in done.stderr
    listing = cli("jobs", "list")
    assert "failing" in listing.stdout and "failed" in listing.stdout


async def test_cli_jobs_follow_the_servers_jupyter_config(test_image, notebook_dir, tmp_path, monkeypatch):
    """An operator's c.JobOptions / c.ContainerOptions in jupyter_server_config apply to jobs run from a
    terminal or CI as they do to the server's: here a memory limit and an allowlisted variable."""
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.py").write_text(
        'c.JobOptions.mem_limit = "300m"\n'
        'c.ContainerOptions.env_allowlist = ["LANG", "TEAM_DATASET"]\n')
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("TEAM_DATASET", "imagenet-mini")
    script(notebook_dir, "env.py", "import os, pathlib\n"
           "print('dataset', os.environ.get('TEAM_DATASET'))\n"
           "v2, v1 = pathlib.Path('/sys/fs/cgroup/memory.max'), pathlib.Path('/sys/fs/cgroup/memory/memory.limit_in_bytes')\n"
           "print('memory.max', (v2 if v2.exists() else v1).read_text().strip())\n")
    done = cli("run", str(notebook_dir / "env.py"), "--image", test_image, "--gpus", "none", "--wait")
    assert done.returncode == 0, done.stderr
    assert "dataset imagenet-mini" in done.stdout
    assert f"memory.max {300 * 1024 * 1024}" in done.stdout

    (config_dir / "jupyter_server_config.py").write_text("c.JobOptions.mem_limit = \n")  # a broken file
    broken = cli("jobs", "list")
    assert broken.returncode != 0 and "jupyter_server_config.py" in broken.stderr and "Traceback" not in broken.stderr


async def test_memory_limit_exceeded_is_oomkilled(engine, test_image, notebook_dir):
    async with jobs_manager(engine) as manager:
        script(notebook_dir, "hog.py", "print('allocating', flush=True)\nb = bytearray(500 * 1024 * 1024)\nprint('survived')\n")
        job = await manager.submit(JobRequest(path=str(notebook_dir / "hog.py"), image=test_image, gpus="none",
                                              mem_limit="64m"))
        job = await finished(manager, job.id)
        assert (job.state, job.reason, job.exit_code) == ("failed", "OOMKilled", 137)
        assert "allocating" in read(job.log_path) and "survived" not in read(job.log_path)
        assert json.loads(read(job.manifest_path))["reason"] == "OOMKilled"


@pytest.mark.parametrize("ignores_sigterm", [False, True])
async def test_cancel_stops_a_running_job(engine, test_image, notebook_dir, ignores_sigterm):
    async with jobs_manager(engine) as manager:
        trap = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_sigterm else ""
        script(notebook_dir, "long.py", f"{trap}import time\nprint('started', flush=True)\ntime.sleep(600)\n")
        job = await manager.submit(JobRequest(path=str(notebook_dir / "long.py"), image=test_image, gpus="none"))
        await output_contains(manager, job.id, "started")
        t0 = time.monotonic()
        job = await manager.cancel(job.id)
        took = time.monotonic() - t0
        assert (job.state, job.reason) == ("cancelled", "cancelled")
        assert took >= 2.0 if ignores_sigterm else took < 2.0  # SIGKILL only after the grace period
        assert await engine.inspect(job.container_id) is None
        assert "started" in read(job.log_path)
        from jupyter_ptcuda.errors import Conflict

        with pytest.raises(Conflict, match="already finished"):
            await manager.cancel(job.id)


async def test_timeout_ends_the_job_timed_out(engine, test_image, notebook_dir):
    async with jobs_manager(engine) as manager:
        script(notebook_dir, "slow.py", "import time\ntime.sleep(600)\n")
        job = await manager.submit(JobRequest(path=str(notebook_dir / "slow.py"), image=test_image, gpus="none",
                                              timeout=1.5))
        job = await finished(manager, job.id, within=30)
        assert (job.state, job.reason) == ("timed_out", "timed out")
        assert job.duration() < 10


async def test_jobs_survive_a_server_restart(engine, test_image, notebook_dir):
    """Manager A starts jobs and goes away (server stop); B reconciles: running ones are watched again and
    finish correctly, one is cancelled through B, one that ended meanwhile and one whose container vanished
    are recorded."""
    script(notebook_dir, "steady.py", "import time\nprint('begin', flush=True)\ntime.sleep(4)\nprint('end')\n")
    script(notebook_dir, "forever.py", "import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    script(notebook_dir, "quick.py", "print('quick')\n")
    a = JobManager(service=DockerContainerService(engine), poll_interval=0.5)
    req = {"image": test_image, "gpus": "none"}
    steady = await a.submit(JobRequest(path=str(notebook_dir / "steady.py"), **req))
    forever = await a.submit(JobRequest(path=str(notebook_dir / "forever.py"), **req))
    quick = await a.submit(JobRequest(path=str(notebook_dir / "quick.py"), **req), watch=False)
    lost = await a.submit(JobRequest(path=str(notebook_dir / "forever.py"), **req), watch=False)
    await output_contains(a, forever.id, "up")
    await a.stop()
    await engine.remove(lost.container_id)
    await exited(engine, quick.container_id)  # nobody recorded it

    b = JobManager(service=DockerContainerService(engine), poll_interval=0.5, cancel_grace=2.0, reconcile_interval=0)
    try:
        await b.start()
        assert {j.id for j in await b.list_jobs()} == {steady.id, forever.id, quick.id, lost.id}
        assert (await b.get(steady.id)).state == "running"
        q = await b.get(quick.id)
        assert (q.state, q.exit_code, read(q.log_path)) == ("completed", 0, "quick\n")
        gone = await b.get(lost.id)
        assert (gone.state, gone.reason) == ("failed", "container lost")

        cancelled = await b.cancel(forever.id)
        assert cancelled.state == "cancelled" and await engine.inspect(cancelled.container_id) is None

        done = await finished(b, steady.id, within=30)
        assert (done.state, done.exit_code) == ("completed", 0)
        assert read(done.log_path) == "begin\nend\n"
        # the finaliser records the outcome first, then removes the container: give it a moment
        for _ in range(50):
            if await engine.containers({"io.jupyter-ptcuda.kind": "job"}) == []:
                break
            await asyncio.sleep(0.2)
        assert await engine.containers({"io.jupyter-ptcuda.kind": "job"}) == []
    finally:
        await b.stop()


async def test_follow_streams_the_output_then_ends(engine, test_image, notebook_dir):
    async with jobs_manager(engine) as manager:
        script(notebook_dir, "ticks.py", "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n")
        job = await manager.submit(JobRequest(path=str(notebook_dir / "ticks.py"), image=test_image, gpus="none"))
        chunks = [c async for c in manager.follow(job.id)]
        assert b"".join(chunks) == b"tick 0\ntick 1\ntick 2\n"
        assert b"".join([c async for c in manager.follow(job.id, offset=7)]) == b"tick 1\ntick 2\n"
        assert (await manager.get(job.id)).state == "completed"


@pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")
@pytest.mark.parametrize("via", ["cli-label-lookup", "server-provisioner-spec"])
async def test_from_kernel_runs_in_the_kernels_configuration(engine, kernelspec, notebook_dir, tmp_path, via):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("from the data mount\n")
    script(notebook_dir, "check.py", "import os\nprint('NVIDIA_VISIBLE_DEVICES=' + os.environ.get('NVIDIA_VISIBLE_DEVICES', ''))\n"
           "print('ids', os.getuid(), os.getgid())\nprint(open('/data/input.txt').read().strip())\n"
           "import time\ntime.sleep(1.5)\n")
    km = AsyncKernelManager(kernel_name=kernelspec(gpus=["1"], mounts=[f"{data}:/data:ro"]))
    await km.start_kernel(cwd=str(notebook_dir))
    try:
        kernel = await engine.inspect(km.provisioner.container_id)
        path = str(notebook_dir / "check.py")
        if via == "cli-label-lookup":
            done = cli("run", path, "--from-kernel", km.kernel_id, "--wait")
            assert done.returncode == 0, done.stderr
            out = done.stdout
        else:
            class KernelManagers:  # what the server's MultiKernelManager offers
                def get_kernel(self, kernel_id):
                    assert kernel_id == km.kernel_id
                    return km

            mgr = JobManager(service=DockerContainerService(engine), kernel_manager=KernelManagers())
            try:
                job = await mgr.submit(JobRequest(path=path, kernel_id=km.kernel_id), watch=False)
                info = await engine.inspect(job.container_id)
                assert info["Image"] == kernel["Image"]
                assert info["Config"]["User"] == kernel["Config"]["User"]
                private = kernel["Config"]["Labels"].get("io.jupyter-ptcuda.kernel-dir", "/run/ptcuda")
                assert set(info["HostConfig"]["Binds"]) == {b for b in kernel["HostConfig"]["Binds"]
                                                             if f":{private}:" not in b}
                assert info["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1"]
                assert info["Config"]["Labels"]["io.jupyter-ptcuda.kind"] == "job"
                job = await mgr.watch(job.id)
                assert job.state == "completed" and job.kernel_id == km.kernel_id and job.gpus == "1"
                out = read(job.log_path)
            finally:
                await mgr.stop()
        assert "NVIDIA_VISIBLE_DEVICES=1" in out
        user = "1000 100" if os.geteuid() == 0 else f"{os.getuid()} {os.getgid()}"
        assert f"ids {user}" in out and "from the data mount" in out
    finally:
        await km.shutdown_kernel(now=True)


async def test_nproc_per_node_runs_under_torchrun(engine, test_image, notebook_dir):
    script(notebook_dir, "ranks.py", "import os\n# one write per line: two ranks share the log pipe\nos.write(1, f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}\\n\".encode())\n")
    async with jobs_manager(engine) as manager:
        job = await manager.submit(JobRequest(path=str(notebook_dir / "ranks.py"), image=test_image, gpus="none",
                                              nproc_per_node=2))
        job = await finished(manager, job.id)
    log = read(job.log_path)
    assert job.state == "completed", log
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    assert job.meta["command"][:6] == ["python", "-u", "-m", "torch.distributed.run", "--nproc-per-node", "2"]
