"""The `jupyter ptcuda` commands a user or CI runs, as subprocesses against the real engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


def ptcuda(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_kernelspec_install_and_refusals(tmp_path, engine, test_image):
    prefix = tmp_path / "prefix"
    ok = ptcuda("kernelspec", "install", "--image", test_image, "--gpus", '["0"]', "-o", "mem_limit=8g",
                "--prefix", str(prefix), "--name", "ptc")
    assert ok.returncode == 0, ok.stderr
    spec = json.loads((prefix / "share/jupyter/kernels/ptc/kernel.json").read_text())
    prov = spec["metadata"]["kernel_provisioner"]
    assert prov["provisioner_name"] == "ptcuda-docker-provisioner"
    assert prov["config"] == {"image": test_image, "gpus": ["0"], "mem_limit": "8g"}

    missing = ptcuda("kernelspec", "install", "--image", "jupyter-ptcuda/nope:1", "--prefix", str(prefix))
    assert missing.returncode == 1 and "not present" in missing.stderr and "jupyter ptcuda image build" in missing.stderr
    no_kernel = ptcuda("kernelspec", "install", "--image", DEBIAN_BASE, "--prefix", str(prefix))
    assert no_kernel.returncode == 1 and "has no ipykernel" in no_kernel.stderr
    assert f"--base {DEBIAN_BASE}" in no_kernel.stderr
    bad = ptcuda("kernelspec", "install", "--image", test_image, "-o", "mem_limit=-3g", "--prefix", str(prefix))
    assert bad.returncode == 1 and "cannot be negative" in bad.stderr
    unknown = ptcuda("kernelspec", "install", "--image", test_image, "-o", "gpu=1", "--prefix", str(prefix))
    assert unknown.returncode == 1 and "unknown kernelspec option" in unknown.stderr and "'gpus'" in unknown.stderr
    assert "Traceback" not in missing.stderr + no_kernel.stderr + bad.stderr + unknown.stderr


def test_image_build_failure_names_the_step(engine, test_image):
    out = ptcuda("image", "build", "--base", DEBIAN_BASE, "--tag", "jupyter-ptcuda/should-not-exist:1", "--no-pull")
    assert out.returncode == 1
    assert "failed at step 'probe'" in out.stderr and "has no torch" in out.stderr
    assert "[probe] reading versions" in out.stdout  # progress is shown while it works


def test_health_gate_exit_code(engine, test_image):
    out = ptcuda("health", "--image", test_image, "--gpus", "1", "--json")
    assert out.returncode == 1  # asked for a GPU, CUDA unavailable (CPU-only build): the gate fails
    report = json.loads(out.stdout)
    assert report["cuda"]["reason_code"] == "cpu_only_build"
    text = ptcuda("health", "--image", test_image, "--gpus", "1")
    assert text.returncode == 1 and "CPU-only build" in text.stdout
    # no GPU asked for: not a failure, and the reason says it was a choice
    chosen = ptcuda("health", "--image", test_image, "--gpus", "none")
    assert chosen.returncode == 0 and "No GPU: no GPU requested" in chosen.stdout and "FAIL" not in chosen.stdout


@pytest.mark.no_nvidia_runtime
def test_health_without_nvidia_runtime_runs_on_the_cpu_and_says_why(engine, test_image):
    out = ptcuda("health", "--image", test_image, "--gpus", "all", "--json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["cuda"]["reason_code"] == "fell_back" and report["target"]["gpus"] == "none"
    assert all("no GPU requested" not in (c["detail"] or "") for c in report["checks"])
    assert "NVIDIA Container Toolkit" in report["notes"][0]


def test_dead_daemon_is_a_clear_cli_error(tmp_path):
    out = ptcuda("reap", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert out.returncode == 1 and "does not answer" in out.stderr and "Traceback" not in out.stderr


def test_gpus_without_driver_says_so():
    out = ptcuda("gpus", "--nvml", "fake:driver_not_loaded")
    assert out.returncode == 1 and "driver" in out.stdout.lower()
    two = ptcuda("gpus", "--nvml", "fake:2:model=H100+L4")
    assert two.returncode == 0 and "H100" in two.stdout and "L4" in two.stdout


async def test_health_of_a_running_kernel(kernelspec, notebook_dir, engine):
    """`jupyter ptcuda health --kernel ID` checks inside the kernel's container (it used to always say
    "give --image IMAGE or --kernel": the CLI filled --image with a default for every command)."""
    import asyncio

    from tests.integration.test_kernel import started

    km, kc = await started(kernelspec(), notebook_dir)
    try:
        out = await asyncio.to_thread(ptcuda, "health", "--kernel", km.kernel_id, "--json")
        assert "give --image" not in out.stderr, out.stderr
        report = json.loads(out.stdout)
        assert report["target"]["kernel_id"] == km.kernel_id
        assert report["versions"]["torch"].startswith("2.13.0")
        assert out.returncode == 1  # a CPU-only torch: CUDA unavailable fails the gate, with the reason
        both = await asyncio.to_thread(ptcuda, "health", "--kernel", km.kernel_id, "--image", "x")
        assert both.returncode == 1 and "give --image IMAGE or --kernel KERNEL_ID" in both.stderr
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
