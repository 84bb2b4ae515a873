"""A job whose script imports what its image lacks is refused at submit (no job, no folder, no job
container), naming the packages and the build command; the datasci preset image has what notebooks import."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.errors import ConfigError
from jupyter_ptcuda.images import L_MODULES, L_PRESET, L_TORCHVISION, probe_modules
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.datasci import containers_created, ensure_datasci_image

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def datasci_image(engine, test_image):
    return ensure_datasci_image(engine, test_image)


@pytest.fixture(autouse=True)
def jobs_db(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", *args], capture_output=True, text=True,
                          timeout=300)


def write_notebook(folder: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = folder / "train.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_preset_image_has_what_notebooks_import(engine, datasci_image):
    labels = engine.run_sync(lambda api: api.inspect_image(datasci_image))["Config"]["Labels"]
    assert labels[L_PRESET] == "datasci"
    wanted = ["matplotlib", "pandas", "sklearn", "tqdm", "ipywidgets", "torch", "ipykernel"]
    assert set(wanted) <= set(labels[L_MODULES].split())
    answer = asyncio.run(probe_modules(DockerContainerService(engine), datasci_image, [*wanted, "torchvision"]))
    assert all(answer[name] for name in wanted), answer
    # torchvision: only one that pairs with the image's torch (2.13.0+cpu: none is reachable here)
    assert answer["torchvision"] == bool(labels[L_TORCHVISION])


def test_run_refuses_a_notebook_that_imports_what_the_image_lacks(engine, datasci_image, notebook_dir):
    (notebook_dir / "helpers.py").write_text("X = 1\n")
    nb = write_notebook(notebook_dir, "import numpy as np\nimport helpers", "import cv2\nfrom sklearn import svm")
    since = time.time()
    proc = cli("run", "--image", datasci_image, str(nb), "--wait")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    command = f"jupyter ptcuda image build --base {datasci_image} --extra opencv-python --tag {datasci_image}"
    assert "imports what image" in proc.stderr and "opencv-python (import cv2, cell 2)" in proc.stderr
    assert f"`{command}`" in proc.stderr
    assert "scikit-learn" not in proc.stderr and "helpers" not in proc.stderr  # in the image; in the folder
    assert "job" not in containers_created(engine, since)  # at most the one probe that asked the image
    assert not (notebook_dir / "outputs").exists()
    assert json.loads(cli("jobs", "list", "--json").stdout) == []


def test_a_script_with_everything_at_hand_runs_and_the_check_can_be_skipped(engine, datasci_image, notebook_dir):
    (notebook_dir / "mylib").mkdir()
    (notebook_dir / "mylib" / "__init__.py").write_text("NAME = 'mine'\n")
    ok = notebook_dir / "ok.py"
    ok.write_text("import pandas, sklearn, tqdm\nimport mylib\nprint('ok', mylib.NAME)\n")
    bad = notebook_dir / "bad.py"
    bad.write_text("import tqdm\nimport einops_not_here\n")

    async def go():
        mgr = JobManager(service=DockerContainerService(engine), poll_interval=0.5)
        try:
            with pytest.raises(ConfigError, match=r"einops-not-here \(import einops_not_here, line 2\)"):
                await mgr.submit(JobRequest(path=str(bad), image=datasci_image, gpus="none"), watch=False)
            job = await mgr.submit(JobRequest(path=str(ok), image=datasci_image, gpus="none"), watch=False)
            skipped = await mgr.submit(JobRequest(path=str(bad), image=datasci_image, gpus="none"), watch=False,
                                       import_check=False)
            for j in (job, skipped):
                mgr.spawn_watch(j.id)
            deadline = time.monotonic() + 120
            while not all([(await mgr.get(j.id)).terminal for j in (job, skipped)]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.3)
            return [await mgr.get(j.id) for j in (job, skipped)], [(await mgr.read_log(j.id))[0] for j in (job, skipped)]
        finally:
            await mgr.stop()

    (done, failed), (log, failed_log) = asyncio.run(go())
    assert (done.state, done.exit_code) == ("completed", 0) and b"ok mine" in log
    assert failed.state == "failed" and b"ModuleNotFoundError" in failed_log  # the old way: 10 s later, in the log


def test_run_no_import_check_starts_the_job_and_run_says_the_export_warnings(engine, datasci_image, notebook_dir):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", execution_count=2),
                                         nbformat.v4.new_code_cell("import einops_not_here\nprint(x)",
                                                                   execution_count=1)])
    path = notebook_dir / "late.ipynb"
    nbformat.write(nb, path)
    refused = cli("run", "--image", datasci_image, str(path))
    assert refused.returncode == 1 and "einops-not-here" in refused.stderr
    # without --wait: the job id on stdout, the export's warnings (out-of-order cells) on stderr
    started = cli("run", "--image", datasci_image, "--gpus", "none", str(path), "--no-import-check")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    assert "warning: cells ran out of order: cell 2 (In [1]) is below cell 1" in started.stderr, started.stderr
    logs = cli("jobs", "logs", "-f", job_id)
    assert "ModuleNotFoundError" in logs.stdout + logs.stderr
    job = json.loads(cli("jobs", "show", job_id).stdout)
    assert job["state"] == "failed" and job["exit_code"] == 1
