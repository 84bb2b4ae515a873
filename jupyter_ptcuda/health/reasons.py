"""Why a health check found no GPU: one true reason, from what the host and the container know.

Inside the container ``check.py`` sees only its own environment: a kernel that asked for ``gpus: all`` and
fell back to the CPU (the engine has no NVIDIA runtime) looks, from inside, exactly like one that asked for
none. The host knows what was *requested* and whether the start *fell back*; the container knows the
*driver* and the *torch build*. :func:`gpu_reason` joins them (pure, table-tested), and
:func:`apply_reason` writes the result into every row of the report that named the container's guess, so
the summary line, the ``CUDA available`` row and each skipped check give the same reason.

A user who *chose* no GPU (``gpus: none``) gets no red FAIL of "CUDA available": that row is a skip saying
so, and ``cuda.chosen`` is true. A check that asked for GPUs (a CI gate: ``jupyter ptcuda health --gpus
all``) still fails.

Callers: :func:`~.runner.check_image` and :func:`~.runner.check_kernel`, after the report is parsed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

GPU_FLAG = "--gpus all (Docker) or a GPU kernelspec (gpus: all)"
TOOLKIT = ("install the NVIDIA Container Toolkit on the host and restart Docker (`docker info` then lists the "
           "nvidia runtime): https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/")
#: Codes from check.py that mean "the container sees no NVIDIA driver".
NO_DRIVER_CODES = ("no_device_visible", "no_driver_library")


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why CUDA is unavailable: a stable ``code``, a sentence for people, what to do, and whether the user
    chose it (no GPU requested: not a failure of the check)."""

    code: str
    reason: str
    remediation: str
    chosen: bool = False


def torch_build(report: dict[str, Any]) -> str:
    """'missing', 'cpu', 'rocm' or 'cuda': the torch in the container, from its report."""
    versions = report.get("versions") or {}
    code = (report.get("cuda") or {}).get("reason_code")
    if not versions.get("torch"):
        return "missing"
    if code == "rocm_build":
        return "rocm"
    if code == "cpu_only_build" or not versions.get("cuda_runtime"):
        return "cpu"
    return "cuda"


def driver_seen(report: dict[str, Any]) -> bool | None:
    """Whether the container saw an NVIDIA driver: False when check.py said it saw none, True when CUDA
    worked or a driver version was read, None when the report cannot tell (torch was CPU-only)."""
    cuda = report.get("cuda") or {}
    if cuda.get("available"):
        return True
    if cuda.get("reason_code") in NO_DRIVER_CODES:
        return False
    if (report.get("versions") or {}).get("driver"):
        return True
    return None


def gpu_reason(*, requested: str, runtime: bool | None, driver: bool | None, torch: str, fell_back: bool,
               gpus_label: str = "all", inside: tuple[str, str, str] | None = None) -> Reason | None:
    """The one true reason CUDA is unavailable, or None when nothing on the host's side explains it (the
    container's own reason, ``inside``, then stands; None too when there is none).

    ``requested``: 'none' or 'some' (what the kernelspec / ``--gpus`` asked for, before any fallback);
    ``runtime``: the engine has an NVIDIA runtime (None: not known); ``driver``: the container saw an NVIDIA
    driver (None: not known); ``torch``: 'missing', 'cpu', 'rocm' or 'cuda'; ``fell_back``: asked for GPUs
    and started on the CPU because there was no runtime; ``inside``: check.py's (code, reason, remediation).
    Order: none requested (the user's choice), then no runtime / fell back, then the torch build, then no
    driver, then whatever the container found (driver too old, CUDA_VISIBLE_DEVICES, init failure).
    """
    if requested == "none":
        return Reason("no_gpu_requested",
                      "no GPU requested: this kernel or check was started without GPUs (gpus: none), by choice",
                      f"to use a GPU, pick a GPU kernelspec (e.g. \"PyTorch (CUDA)\") or check with {GPU_FLAG}",
                      chosen=True)
    if fell_back:
        return Reason("fell_back",
                      f"GPUs were requested (gpus: {gpus_label}) but the Docker engine has no NVIDIA runtime, so it "
                      "started on the CPU instead (gpu_fallback='cpu')", TOOLKIT)
    if runtime is False:
        return Reason("no_nvidia_runtime",
                      f"GPUs were requested (gpus: {gpus_label}) but the Docker engine has no NVIDIA runtime",
                      TOOLKIT)
    if torch == "missing":
        return Reason("no_torch", "torch is not installed in the image",
                      "build a kernel image with `jupyter ptcuda image build` (it installs a CUDA build of torch)")
    if torch == "cpu":
        return Reason("cpu_only_build", "the image's torch is a CPU-only build (torch.version.cuda is None)",
                      "install a CUDA build of PyTorch in the image: `jupyter ptcuda image build` does, or pip "
                      "install torch --index-url https://download.pytorch.org/whl/cu128")
    if torch == "rocm":
        return Reason("rocm_build", "the image's torch is a ROCm build: it cannot use NVIDIA GPUs",
                      "install a CUDA build of PyTorch in the image")
    if driver is False:
        code, text, fix = inside or ("no_device_visible", "", "")
        return Reason(code if code in NO_DRIVER_CODES else "no_device_visible",
                      text or "the container sees no NVIDIA driver or device",
                      fix or "check `nvidia-smi` on the host; " + TOOLKIT)
    if inside is not None:
        return Reason(*inside)
    return None


def reason_for(report: dict[str, Any], *, requested: str, fell_back: bool, runtime: bool | None = None,
               gpus_label: str = "all") -> Reason | None:
    """:func:`gpu_reason` for a parsed report (its torch build, driver and own reason)."""
    cuda = report.get("cuda") or {}
    if cuda.get("available"):
        return None
    inside = None
    if cuda.get("reason_code"):
        remediation = next((c.get("remediation") for c in report.get("checks", []) if c.get("id") == "cuda_available"), "")
        inside = (str(cuda["reason_code"]), str(cuda.get("reason") or ""), str(remediation or ""))
    return gpu_reason(requested=requested, runtime=runtime, driver=driver_seen(report), torch=torch_build(report),
                      fell_back=fell_back, gpus_label=gpus_label, inside=inside)


def apply_reason(report: dict[str, Any], why: Reason | None) -> dict[str, Any]:
    """Write ``why`` into ``report`` (in place; returned): ``cuda``, the ``CUDA available`` row (a skip when
    the user chose no GPU), and every row that gave the container's own reason; the summary again."""
    cuda = report.setdefault("cuda", {})
    if why is None or cuda.get("available"):
        return report
    old = str(cuda.get("reason") or "")
    cuda.update(reason_code=why.code, reason=why.reason, chosen=why.chosen)
    for check in report.get("checks", []):
        if check.get("id") == "cuda_available":
            check.update(status="skip" if why.chosen else "fail", detail=why.reason, remediation=why.remediation)
            continue
        for key in ("detail", "remediation"):
            text = check.get(key)
            if isinstance(text, str) and old and old in text:
                check[key] = text.replace(old, why.reason)
    from .report import summarize

    report["summary"] = summarize(report.get("checks", []))
    return report
