"""examples/ci: the GitHub Actions and GitLab CI files parse, run gate.sh (which
tests/integration/test_ci_examples.py runs for real) and publish the JUnit file that gate.sh writes;
the notebook is valid and tagged for parameters; pip can give the JupyterLab panel with one command."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ci"
GATE = "examples/ci/gate.sh"

yaml = pytest.importorskip("yaml")


def load(name: str) -> dict:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(data, dict), name
    return data


def test_github_actions_workflow_runs_the_gate_and_reports_its_junit_file():
    wf = load("github-actions.yml")
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert wf["permissions"]["checks"] == "write"  # the test report is a check run
    job, build = wf["jobs"]["gpu-gate"], wf["jobs"]["build"]
    assert "gpu" in job["runs-on"] and "self-hosted" in job["runs-on"]
    # build → push → the gate on the pushed digest: the build's output is the gate's image
    assert job["needs"] == "build" and job["env"]["PTCUDA_IMAGE"] == "${{ needs.build.outputs.image }}"
    push = next(s for s in build["steps"] if s.get("id") == "push")
    assert "jupyter ptcuda image build" in push["run"] and "--push | tail -n1" in push["run"]
    assert build["outputs"]["image"] == "${{ steps.push.outputs.image }}"
    for j in (job, build):  # both log in before they push or pull
        assert any(s.get("uses", "").startswith("docker/login-action@") for s in j["steps"])
    runs = [step.get("run", "") for step in job["steps"]]
    assert GATE in runs and any("pip install jupyter-ptcuda" in r for r in runs)
    junit = job["env"]["PTCUDA_JUNIT"]
    report = next(s for s in job["steps"] if s.get("uses", "").startswith("mikepenz/action-junit-report@"))
    assert report["if"] == "always()" and report["with"]["report_paths"] == junit
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and str(Path(junit).parent) in upload["with"]["path"]
    assert job["env"]["PTCUDA_NOTEBOOK"] == "examples/ci/smoke.ipynb"


def test_gitlab_job_runs_the_gate_and_reports_its_junit_file():
    ci = load("gitlab-ci.yml")
    job, build = ci["gpu-gate"], ci["build-image"]
    assert ci["stages"] == ["build", "test"] and job["needs"] == ["build-image"]
    assert "PTCUDA_IMAGE" not in job["variables"]  # it comes from the build's dotenv report: the digest
    assert build["artifacts"]["reports"]["dotenv"] == "image.env"
    assert any("--push | tail -n1" in line for line in build["script"])
    assert any(line.startswith('echo "PTCUDA_IMAGE=') for line in build["script"])
    for j in (job, build):
        assert any("docker login" in line for line in j["before_script"])
    assert "gpu" in job["tags"]
    assert GATE in job["script"]
    assert any("pip install jupyter-ptcuda" in line for line in job["before_script"])
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == job["variables"]["PTCUDA_JUNIT"]
    assert job["variables"]["PTCUDA_NOTEBOOK"] == "examples/ci/smoke.ipynb"


def test_both_examples_set_only_settings_that_gate_sh_reads():
    gate = (EXAMPLES / "gate.sh").read_text()
    read = set(re.findall(r"\$\{(PTCUDA_[A-Z_]+)", gate))
    wf = load("github-actions.yml")
    gh = wf["jobs"]["gpu-gate"]
    gl = load("gitlab-ci.yml")["gpu-gate"]
    for settings in (gh["env"], gl["variables"]):
        assert set(settings) <= read, set(settings) - read
    assert "pytorch/pytorch:" not in (EXAMPLES / "github-actions.yml").read_text() + (EXAMPLES / "gitlab-ci.yml").read_text()


def test_gate_sh_is_an_executable_bash_script():
    path = EXAMPLES / "gate.sh"
    assert path.stat().st_mode & 0o111, "gate.sh must be executable: the examples run it directly"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(path)], check=True)
    mode = subprocess.run(["git", "ls-files", "-s", "examples/ci/gate.sh"], cwd=ROOT, capture_output=True, text=True)
    if mode.stdout:  # committed: the executable bit must be committed too, or a fresh checkout cannot run it
        assert mode.stdout.startswith("100755"), mode.stdout


def test_smoke_notebook_is_valid_with_a_parameters_cell():
    nb = nbformat.read(EXAMPLES / "smoke.ipynb", as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "steps =" in tagged[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"


def test_the_lab_extra_brings_the_jupyterlab_the_panel_is_built_for():
    """`pip install "jupyter-ptcuda[lab]"` alone gives JupyterLab and the panel; the wheel carries the
    prebuilt extension and the config that enables the server extension."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lab = project["project"]["optional-dependencies"]["lab"]
    build_lab = [r for r in project["build-system"]["requires"] if r.startswith("jupyterlab")]
    assert lab == build_lab == ["jupyterlab>=4,<5"]
    assert not any(d.startswith("jupyterlab") for d in project["project"]["dependencies"])
    shared = project["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    assert shared["jupyter_ptcuda/labextension"] == "share/jupyter/labextensions/jupyter-ptcuda"
    assert shared["jupyter-config/server-config"] == "etc/jupyter/jupyter_server_config.d"
    config = json.loads((ROOT / "jupyter-config/server-config/jupyter_ptcuda.json").read_text())
    assert config["ServerApp"]["jpserver_extensions"]["jupyter_ptcuda"] is True
    package = json.loads((ROOT / "labextension/package.json").read_text())
    assert package["dependencies"]["@jupyterlab/application"].startswith("^4.")
