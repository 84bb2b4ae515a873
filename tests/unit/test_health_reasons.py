"""The health check's reason for a missing GPU: one pure function over what the host knows (requested,
runtime, fell back) and what the container saw (driver, torch build), and every row of the report
giving that one reason (issue: a fallen-back "PyTorch (CUDA)" kernel was told "no GPU requested")."""

from __future__ import annotations

import copy

import pytest

from jupyter_ptcuda.health.reasons import apply_reason, gpu_reason, reason_for
from jupyter_ptcuda.health.report import exit_code, parse_report, render_text

INSIDE_TOO_OLD = ("driver_too_old", "the NVIDIA driver supports CUDA 11.8 but torch needs CUDA 12.8", "upgrade")


@pytest.mark.parametrize(("requested", "runtime", "driver", "torch", "fell_back", "inside", "code", "chosen"), [
    # the user chose no GPU: whatever else is true, that is the reason, and not a failure
    ("none", None, None, "cpu", False, ("no_gpu_requested", "x", "y"), "no_gpu_requested", True),
    ("none", False, False, "cuda", False, None, "no_gpu_requested", True),
    # asked for GPUs, started on the CPU for want of an NVIDIA runtime (the "PyTorch (CUDA)" kernel)
    ("some", False, None, "cuda", True, ("no_gpu_requested", "no GPU requested", "pick one"), "fell_back", False),
    ("some", None, None, "cpu", True, ("cpu_only_build", "CPU-only", "fix"), "fell_back", False),
    # asked, no runtime, did not fall back
    ("some", False, None, "cuda", False, None, "no_nvidia_runtime", False),
    # the runtime is there: the torch build, then the driver, then what the container found
    ("some", True, True, "cpu", False, ("cpu_only_build", "CPU-only", "fix"), "cpu_only_build", False),
    ("some", None, None, "rocm", False, ("rocm_build", "ROCm", "fix"), "rocm_build", False),
    ("some", None, None, "missing", False, None, "no_torch", False),
    ("some", True, False, "cuda", False, ("no_driver_library", "libcuda.so.1 missing", "fix"), "no_driver_library", False),
    ("some", None, False, "cuda", False, ("no_device_visible", "no /dev/nvidia*", "fix"), "no_device_visible", False),
    ("some", True, True, "cuda", False, INSIDE_TOO_OLD, "driver_too_old", False),
])
def test_reason_table(requested, runtime, driver, torch, fell_back, inside, code, chosen):
    why = gpu_reason(requested=requested, runtime=runtime, driver=driver, torch=torch, fell_back=fell_back,
                     inside=inside)
    assert why is not None and why.code == code and why.chosen is chosen
    assert why.reason and why.remediation
    if code == "fell_back":
        assert "no NVIDIA runtime" in why.reason and "started on the CPU" in why.reason
        assert "no GPU requested" not in why.reason and "Container Toolkit" in why.remediation


def test_nothing_to_say_when_the_container_found_nothing():
    assert gpu_reason(requested="some", runtime=True, driver=True, torch="cuda", fell_back=False) is None


def _report(reason_code: str, reason: str) -> dict:
    """A report as check.py writes it in a container without GPUs (CPU-only torch), with its own guess."""
    skip = {"status": "skip", "value": None, "threshold": None, "remediation": None}
    checks = [
        {"id": "torch_import", "title": "torch imports", "status": "pass", "value": "2.13.0", "threshold": None,
         "remediation": None, "detail": "CUDA runtime none"},
        {"id": "cuda_available", "title": "CUDA available", "status": "fail", "value": False, "threshold": True,
         "remediation": "start the container with --gpus all", "detail": reason},
        {"id": "driver_cuda", "title": "Driver", **skip, "detail": "no CUDA runtime to check: " + reason},
        {"id": "ecc", "title": "ECC", **skip, "detail": "pynvml is not installed; " + reason},
        {"id": "shm", "title": "/dev/shm size", "status": "pass", "value": 1 << 31, "threshold": None,
         "remediation": None, "detail": None},
    ] + [{"id": f"c{i}", "title": f"GPU check {i}", **skip, "detail": f"CUDA unavailable: {reason}"} for i in range(10)]
    return {"schema": 1, "summary": "fail", "checks": checks,
            "cuda": {"available": False, "reason_code": reason_code, "reason": reason},
            "gpus": [], "versions": {"torch": "2.13.0", "cuda_runtime": "12.8"}, "env": {}, "perf": False,
            "notes": [], "duration_s": 1.0}


def test_a_fallen_back_kernel_gets_the_same_true_reason_in_every_row():
    inside = "no GPU requested: NVIDIA_VISIBLE_DEVICES is unset and no /dev/nvidia* device is present"
    report = _report("no_gpu_requested", inside)
    apply_reason(report, reason_for(report, requested="some", fell_back=True, gpus_label="all"))
    text = str(report)
    assert "no GPU requested" not in text and "pick a GPU" not in text
    assert report["cuda"]["reason_code"] == "fell_back"
    why = report["cuda"]["reason"]
    row = next(c for c in report["checks"] if c["id"] == "cuda_available")
    assert row["status"] == "fail" and row["detail"] == why and "Container Toolkit" in row["remediation"]
    skipped = [c for c in report["checks"] if c["status"] == "skip"]
    assert len(skipped) == 12 and all(why in c["detail"] for c in skipped)
    assert report["summary"] == "fail" and exit_code(report) == 1
    parse_report(__import__("json").dumps(report))  # still a valid report
    out = render_text(report)
    assert out.count(why) >= 2 and "no GPU requested" not in out


def test_no_gpu_by_choice_is_not_a_red_fail_but_a_gpu_gate_still_fails():
    inside = "no GPU requested: NVIDIA_VISIBLE_DEVICES is unset and no /dev/nvidia* device is present"
    chosen = apply_reason(_report("no_gpu_requested", inside), reason_for(_report("no_gpu_requested", inside),
                                                                          requested="none", fell_back=False))
    row = next(c for c in chosen["checks"] if c["id"] == "cuda_available")
    assert row["status"] == "skip" and "by choice" in row["detail"]
    assert chosen["summary"] == "pass" and exit_code(chosen) == 0 and chosen["cuda"]["chosen"] is True
    assert render_text(chosen).splitlines()[1].startswith("No GPU: no GPU requested")

    gate = _report("no_device_visible", "NVIDIA_VISIBLE_DEVICES=all asks for GPUs but no /dev/nvidia* device")
    before = copy.deepcopy(gate)
    apply_reason(gate, reason_for(gate, requested="some", fell_back=False))
    assert gate["summary"] == "fail" and exit_code(gate) == 1
    assert gate["cuda"]["reason"] == before["cuda"]["reason"]  # the container's own reason was the true one
