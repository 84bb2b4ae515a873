"""examples/ci/gate.sh, the script the GitHub Actions and GitLab CI examples run, against the real engine
and the CPU test image: what a CI job would show. The CPU image must FAIL the health gate on its CUDA
check (listed in the JUnit report) and, told to expect that, still run the notebook as a completed job;
expecting a pass (the examples' setting), the gate stops before the notebook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


@pytest.fixture
def ci_checkout(tmp_path):
    """A copy of examples/ci as a CI checkout has it (job outputs land next to the notebook, so not in
    this working tree), owned like notebook_dir by the user the job will run as."""
    work = tmp_path / "checkout" / "examples" / "ci"
    shutil.copytree(EXAMPLES, work, ignore=shutil.ignore_patterns("outputs"))
    if os.geteuid() == 0:
        for path in [work, *work.rglob("*")]:
            os.chown(path, 1000, 100)
    return work


def gate(work: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run gate.sh as the examples do: `jupyter` on PATH (this venv's), settings as PTCUDA_* variables."""
    bindir = os.path.dirname(sys.executable)
    assert shutil.which("jupyter", path=bindir), f"no jupyter console script next to {sys.executable}"
    full = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "JUPYTER_PTCUDA_JOBS_DB": str(tmp_path / "jobs.sqlite"), "PTCUDA_PULL": "0", **env}
    for key in ("PTCUDA_IMAGE", "PTCUDA_NOTEBOOK", "PTCUDA_GPUS", "PTCUDA_EXPECT_HEALTH"):
        if key not in env:
            full.pop(key, None)
    return subprocess.run(["bash", str(work / "gate.sh")], cwd=work.parent.parent, env=full, capture_output=True,
                          text=True, timeout=600)


def jobs(tmp_path: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "jobs", "list", "--json"], capture_output=True,
                         text=True, env={**os.environ, "JUPYTER_PTCUDA_JOBS_DB": str(tmp_path / "jobs.sqlite")},
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def read_junit(path: Path) -> ET.Element:
    """The one <testsuite>, after checking the structure CI tools read: counts that agree with the cases."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert cases and all(c.get("name") and c.get("classname") == "jupyter_ptcuda.health" for c in cases)
    counted = {"tests": len(cases), "failures": sum(c.find("failure") is not None for c in cases),
               "errors": sum(c.find("error") is not None for c in cases),
               "skipped": sum(c.find("skipped") is not None for c in cases)}
    for key, n in counted.items():
        assert int(suite.get(key)) == n == int(root.get(key)), key
    float(suite.get("time"))
    return suite


def test_gate_fails_the_cpu_image_on_cuda_and_still_runs_the_notebook(ci_checkout, tmp_path, engine, test_image):
    junit = tmp_path / "reports" / "ptcuda-health.xml"
    done = gate(ci_checkout, tmp_path, PTCUDA_IMAGE=test_image, PTCUDA_GPUS="all", PTCUDA_EXPECT_HEALTH="fail",
                PTCUDA_JUNIT=str(junit))
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr  # the report goes to stderr, the gate's own lines to stdout
    assert "Health check: FAIL" in said and "CPU-only build" in said
    assert "the health check failed, as expected" in said
    assert "loss after 300 steps" in done.stdout and "on cpu" in done.stdout  # the notebook's own output

    suite = read_junit(junit)
    assert suite.get("name") == f"jupyter ptcuda health image {test_image} (gpus all)"
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert list(failed) == ["cuda_available: CUDA available to PyTorch"]
    failure = failed["cuda_available: CUDA available to PyTorch"]
    assert "CPU-only build" in failure.get("message")
    assert "fix: install a CUDA build of PyTorch" in failure.text
    skipped = [c.get("name") for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert "matmul: Matmul on the GPU matches the CPU" in skipped

    (job,) = jobs(tmp_path)
    assert (job["state"], job["exit_code"], job["image"]) == ("completed", 0, test_image)
    out = Path(job["output_dir"])
    assert out.parent == ci_checkout / "outputs"
    metrics = json.loads((out / "artifacts" / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["loss"] < 1e-4


def test_gate_expecting_a_pass_stops_before_the_notebook(ci_checkout, tmp_path, engine, test_image):
    """The examples' setting (a gate that asks for GPUs): on this CPU image the CI job fails with the health
    check's exit code and the notebook does not run. (A gate with gpus none passes: no GPU was asked for.)"""
    junit = tmp_path / "ptcuda-health.xml"
    done = gate(ci_checkout, tmp_path, PTCUDA_IMAGE=test_image, PTCUDA_GPUS="all", PTCUDA_JUNIT=str(junit))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the health check of {test_image} failed (exit 1)" in done.stderr
    assert read_junit(junit).get("failures") == "1"
    assert "=== gate: notebook" not in done.stdout and jobs(tmp_path) == []


def test_gate_refuses_a_bad_expectation_and_an_image_that_is_not_there(ci_checkout, tmp_path, engine):
    bad = gate(ci_checkout, tmp_path, PTCUDA_IMAGE="x", PTCUDA_EXPECT_HEALTH="maybe")
    assert bad.returncode == 2 and "PTCUDA_EXPECT_HEALTH is 'maybe': write pass or fail" in bad.stderr
    junit = tmp_path / "missing.xml"
    missing = gate(ci_checkout, tmp_path, PTCUDA_IMAGE="jupyter-ptcuda/not-there:1", PTCUDA_EXPECT_HEALTH="fail",
                   PTCUDA_JUNIT=str(junit))
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "did not run (exit 1, no failed check" in missing.stderr  # a missing image is no expected failure
    assert read_junit(junit).find("testcase/error").get("message")


def test_gate_pushes_to_a_registry_and_gates_and_runs_the_pushed_digest(ci_checkout, tmp_path, engine):
    """The examples' pipeline against a real registry with a login (tests/registry.py): the image is pushed
    under PTCUDA_PUSH, and the health check and the notebook job both run the digest that was pushed. A
    small kernel image (no torch: its health check fails, as expected) and a notebook that needs none."""
    import uuid

    import nbformat

    from tests.registry import fresh_image, start_registry, tiny_kernel_image

    reg, proc = start_registry(tmp_path / "registry")
    target = f"{reg.host}/ci/kernel:{uuid.uuid4().hex[:8]}"
    image_id = fresh_image(engine, tiny_kernel_image(engine), target)
    try:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint('hello from', sys.version_info[:2])")])
        nbformat.write(nb, ci_checkout / "hello.ipynb")
        if os.geteuid() == 0:
            os.chown(ci_checkout / "hello.ipynb", 1000, 100)
        junit, digest_file = tmp_path / "reports" / "health.xml", tmp_path / "digest"
        done = gate(ci_checkout, tmp_path, PTCUDA_IMAGE=target, PTCUDA_PUSH=target, PTCUDA_GPUS="none",
                    PTCUDA_NOTEBOOK=str(ci_checkout / "hello.ipynb"), PTCUDA_EXPECT_HEALTH="fail",
                    PTCUDA_JUNIT=str(junit), PTCUDA_DIGEST_FILE=str(digest_file),
                    DOCKER_CONFIG=str(reg.docker_config(tmp_path / "docker")))
        assert done.returncode == 0, done.stdout + done.stderr
        pinned = digest_file.read_text().strip()
        assert pinned.startswith(target.rsplit(":", 1)[0] + "@sha256:")
        assert f"gate.sh: gating the pushed digest {pinned}" in done.stdout
        assert read_junit(junit).get("name") == f"jupyter ptcuda health image {pinned} (gpus none)"
        (job,) = jobs(tmp_path)
        assert (job["state"], job["image"], job["image_digest"]) == ("completed", pinned, pinned)
        assert "hello from (3, 11)" in done.stdout
        status, _ = reg.get(f"/v2/ci/kernel/manifests/{pinned.split('@')[1]}")
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)
