#!/usr/bin/env python3
"""Health check of a PyTorch-CUDA environment. Runs INSIDE a container, not on the host.

Who runs it: the host-side health runner copies or pipes this single file into a one-off
container of an image, or into a running kernel container (``docker exec``)::

    python - [--perf] < check.py          python check.py [--perf]

It needs only the standard library; ``torch`` and ``pynvml`` are used when importable. It
prints ONE JSON document (one line) on stdout and exits 0 whenever it printed one, 2 when
it could not; the host decides what the result means (``jupyter_ptcuda.health.report``).
While the checks run, file descriptor 1 points at stderr, so whatever torch, CUDA or NCCL
print cannot corrupt the report. Every check is wrapped: an unexpected exception becomes a
``fail`` of that check carrying the message. Keep this file Python 3.8 compatible and free
of imports from ``jupyter_ptcuda``.

Report, schema 1::

    {"schema": 1, "summary": "pass"|"warn"|"fail",
     "checks": [{"id", "title", "status": "pass"|"warn"|"fail"|"skip",
                 "value", "threshold", "remediation", "detail"}, ...],
     "cuda": {"available": bool, "reason_code": str|null, "reason": str|null},
     "gpus": [{"index", "name", "capability", "memory_total"}],
     "versions": {"python", "torch", "cuda_runtime", "cudnn", "nccl", "driver",
                  "cuda_driver", "pynvml"},
     "env": {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES",
             "CUDA_VERSION"},
     "perf": bool, "notes": [str, ...], "duration_s": float}

``notes`` lists problems met while gathering facts (e.g. an NVML device that did not answer).

``summary``: fail if any check fails, else warn if any warns, else pass (skips do not count).
CUDA being unavailable is a *fail* (check ``cuda_available``) because the check is a GPU gate;
``cuda.reason_code`` says why (``cpu_only_build``, ``rocm_build``, ``no_gpu_requested``,
``no_device_visible``, ``no_driver_library``, ``cuda_visible_devices_hides``,
``driver_too_old``, ``cuda_init_failed``) and the GPU-only checks are ``skip`` with that reason.

The minimum-driver table below is ``min_driver.json`` (the documented source of truth, with
its source URL) embedded; a unit test asserts that both agree.
"""

from __future__ import annotations

import ctypes
import glob
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import warnings

SCHEMA = 1
GIB = 1 << 30
SHM_MIN_BYTES = GIB

# -- data: keep in sync with min_driver.json ------------------------------------------------
MIN_DRIVER_SOURCE = "https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html#cuda-driver"
MINOR_VERSION_COMPAT = {"13": "580", "12": "525.60.13", "11": "450.80.02"}
RC_RELEASES = ("11.0.1",)
TOOLKIT_MIN_DRIVER = (  # (CUDA toolkit release, minimum Linux x86_64 driver), Table 3
    ("13.2.2", "595.71.05"), ("13.2.1", "595.58.03"), ("13.2.0", "595.45.04"), ("13.1.1", "590.48.01"),
    ("13.1.0", "590.44.01"), ("13.0.2", "580.95.05"), ("13.0.1", "580.82.07"), ("13.0.0", "580.65.06"),
    ("12.9.1", "575.57.08"), ("12.9.0", "575.51.03"), ("12.8.1", "570.124.06"), ("12.8.0", "570.26"),
    ("12.6.3", "560.35.05"), ("12.6.2", "560.35.03"), ("12.6.1", "560.35.03"), ("12.6.0", "560.28.03"),
    ("12.5.1", "555.42.06"), ("12.5.0", "555.42.02"), ("12.4.1", "550.54.15"), ("12.4.0", "550.54.14"),
    ("12.3.1", "545.23.08"), ("12.3.0", "545.23.06"), ("12.2.2", "535.104.05"), ("12.2.1", "535.86.09"),
    ("12.2.0", "535.54.03"), ("12.1.1", "530.30.02"), ("12.1.0", "530.30.02"), ("12.0.1", "525.85.12"),
    ("12.0.0", "525.60.13"), ("11.8.0", "520.61.05"), ("11.7.1", "515.48.07"), ("11.7.0", "515.43.04"),
    ("11.6.2", "510.47.03"), ("11.6.1", "510.47.03"), ("11.6.0", "510.39.01"), ("11.5.2", "495.29.05"),
    ("11.5.1", "495.29.05"), ("11.5.0", "495.29.05"), ("11.4.4", "470.82.01"), ("11.4.3", "470.82.01"),
    ("11.4.2", "470.57.02"), ("11.4.1", "470.57.02"), ("11.4.0", "470.42.01"), ("11.3.1", "465.19.01"),
    ("11.3.0", "465.19.01"), ("11.2.2", "460.32.03"), ("11.2.1", "460.32.03"), ("11.2.0", "460.27.03"),
    ("11.1.1", "455.32"), ("11.1.0", "455.23"), ("11.0.3", "450.51.06"), ("11.0.2", "450.51.05"),
    ("11.0.1", "450.36.06"), ("10.2.89", "440.33"), ("10.1.105", "418.39"), ("10.0.130", "410.48"),
    ("9.2.148", "396.37"), ("9.2.88", "396.26"), ("9.1.85", "390.46"), ("9.0.76", "384.81"),
    ("8.0.61", "375.26"), ("8.0.44", "367.48"), ("7.5.16", "352.31"), ("7.0.28", "346.46"),
)

# (regex on the device name, label, dense BF16 TFLOPS, dense FP16 TFLOPS, memory GB/s): tensor
# cores, FP32 accumulate, no sparsity, from NVIDIA's datasheets. Most specific pattern first.
GPU_PEAKS = (
    (r"\bB200\b", "B200", 2250.0, 2250.0, 8000.0),
    (r"\bH200 NVL\b", "H200 NVL", 835.0, 835.0, 4800.0),
    (r"\bH200\b", "H200 SXM", 989.0, 989.0, 4800.0),
    (r"\bH100 NVL\b", "H100 NVL", 835.0, 835.0, 3900.0),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.0, 756.0, 2000.0),
    (r"\bH100\b", "H100 SXM", 989.0, 989.0, 3350.0),
    (r"\bA100\b.*80GB.*PCIe|\bA100\b.*PCIe.*80GB", "A100 PCIe 80GB", 312.0, 312.0, 1935.0),
    (r"\bA100\b.*PCIe", "A100 PCIe 40GB", 312.0, 312.0, 1555.0),
    (r"\bA100\b.*80GB", "A100 SXM 80GB", 312.0, 312.0, 2039.0),
    (r"\bA100\b", "A100 SXM 40GB", 312.0, 312.0, 1555.0),
    (r"\bA30\b", "A30", 165.0, 165.0, 933.0),
    (r"\bA40\b", "A40", 149.7, 149.7, 696.0),
    (r"\bA10\b", "A10", 125.0, 125.0, 600.0),
    (r"\bL40S\b", "L40S", 362.0, 362.0, 864.0),
    (r"\bL40\b", "L40", 181.0, 181.0, 864.0),
    (r"\bL4\b", "L4", 121.0, 121.0, 300.0),
    (r"\bT4\b", "T4", None, 65.0, 320.0),
    (r"\bV100S\b", "V100S PCIe", None, 130.0, 1134.0),
    (r"\bV100\b.*PCIe", "V100 PCIe", None, 112.0, 900.0),
    (r"\bV100\b", "V100 SXM2", None, 125.0, 900.0),
    (r"RTX 5090\b(?! D\b)", "GeForce RTX 5090", 209.5, 209.5, 1792.0),
    (r"RTX 4090\b", "GeForce RTX 4090", 165.2, 165.2, 1008.0),
    (r"RTX 3090\b(?! Ti)", "GeForce RTX 3090", 71.0, 71.0, 936.0),
    (r"RTX A6000\b", "RTX A6000", 154.8, 154.8, 768.0),
)
GEMM_MIN_RATIO = 0.35  # of dense peak; a healthy GPU reaches ~0.6-0.8 with a plain matmul
BANDWIDTH_MIN_RATIO = 0.5  # of peak; a device-to-device copy reaches ~0.8-0.9

THROTTLE_BITS = (
    (0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"), (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"), (0x80, "hw_power_brake_slowdown"), (0x100, "display_clock_setting"),
)
THROTTLE_BAD = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
ENV_KEYS = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "CUDA_VERSION")

GPU_FLAG = "--gpus all (or --gpus device=N; in jupyter-ptcuda pick a GPU kernelspec)"


# -- pure helpers (unit-tested by importing this file) -------------------------------------------
def parse_version(text):
    """'550.54.15' -> (550, 54, 15); None when there is no leading number."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", str(text or ""))
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def toolkit_entry(cuda):
    """(release, min driver) for a CUDA version: an exact release for 'X.Y.Z', else X.Y's GA."""
    v = parse_version(cuda)
    if not v:
        return None
    rows = [(parse_version(c), c, d) for c, d in TOOLKIT_MIN_DRIVER if c not in RC_RELEASES]
    same = sorted(r for r in rows if r[0][:2] == v[:2])
    exact = [r for r in same if len(v) >= 3 and r[0] == v]
    chosen = exact[0] if exact else (same[0] if same else None)
    return (chosen[1], chosen[2]) if chosen else None


def max_cuda_for_driver(driver):
    """The newest toolkit release (X.Y) whose Table-3 minimum the driver meets, or None."""
    dv = parse_version(driver)
    ok = [parse_version(c) for c, d in TOOLKIT_MIN_DRIVER if dv and dv >= parse_version(d)]
    return "{}.{}".format(*max(ok)[:2]) if ok else None


def driver_support(cuda, driver=None, driver_cuda=None):
    """How a driver supports a CUDA runtime 'X.Y[.Z]'.

    Returns {"status": "native"|"minor_compat"|"too_old"|"unknown", "need": min driver or None,
    "release": table row or None, "compat_min": the major's minimum or None}. ``driver`` is the
    driver version ('550.54.15'); ``driver_cuda`` the CUDA version the driver supports ('12.4',
    from NVML or cuDriverGetVersion), used when the driver version is unknown.
    """
    v = parse_version(cuda)
    entry = toolkit_entry(cuda)
    compat = MINOR_VERSION_COMPAT.get(str(v[0])) if v else None
    out = {"status": "unknown", "need": entry[1] if entry else None,
           "release": entry[0] if entry else None, "compat_min": compat}
    if not v:
        return out
    dv = parse_version(driver)
    if dv:
        if entry and dv >= parse_version(entry[1]):
            out["status"] = "native"
        elif compat and dv >= parse_version(compat):
            out["status"] = "minor_compat"
        elif entry or compat:
            out["status"] = "too_old"
        return out
    dc = parse_version(driver_cuda)
    if dc:
        if dc[:2] >= v[:2]:
            out["status"] = "native"
        elif dc[0] == v[0] and compat:
            out["status"] = "minor_compat"
        else:
            out["status"] = "too_old"
    return out


def arch_coverage(capability, arch_list):
    """How a torch build covers a GPU of compute capability (major, minor).

    Returns ("sass", arch) when a cubin runs natively (sm_XY for the same major with XY's
    minor <= the GPU's; sm_XYa only on exactly X.Y), ("ptx", arch) when only PTX can be JIT
    compiled (compute_XY with X.Y <= the GPU's), or ("none", None).
    """
    major, minor = int(capability[0]), int(capability[1])
    ptx = None
    for arch in arch_list or ():
        m = re.match(r"^(sm|compute)_(\d+)(\d)([af]?)$", str(arch))
        if not m:
            continue
        kind, a_major, a_minor, suffix = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if suffix == "a":
            fits = (a_major, a_minor) == (major, minor)
        elif kind == "sm" or suffix == "f":
            fits = a_major == major and a_minor <= minor
        else:
            fits = (a_major, a_minor) <= (major, minor)
        if fits and kind == "sm":
            return "sass", arch
        if fits and ptx is None:
            ptx = arch
    return ("ptx", ptx) if ptx else ("none", None)


def parse_size(text):
    """'64m', '65536k', '8g', '1048576' (bytes) -> bytes; None when unparsable."""
    m = re.match(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", str(text or ""), re.IGNORECASE)
    if not m:
        return None
    return int(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower())


def shm_size_from_mounts(mounts):
    """The size= option of the /dev/shm mount in /proc/mounts text, in bytes, or None."""
    for line in (mounts or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "/dev/shm":
            for opt in parts[3].split(","):
                if opt.startswith("size="):
                    return parse_size(opt[5:])
    return None


def human_bytes(n):
    if n is None:
        return None
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0
    return None  # pragma: no cover


def gpus_requested(nvd):
    """'none' (unset, '', 'void', 'none'), 'all', or 'list' for NVIDIA_VISIBLE_DEVICES."""
    value = (nvd or "").strip().lower()
    if value in ("", "void", "none"):
        return "none"
    return "all" if value == "all" else "list"


def _listed(value):
    return [item for item in (value or "").split(",") if item.strip()]


def classify_cuda_unavailable(facts):
    """Why CUDA is unavailable, as (reason_code, reason, remediation), from gathered facts.

    ``facts`` keys: torch_version, torch_cuda, torch_hip, nvidia_visible_devices,
    cuda_visible_devices, dev_nodes (list), libcuda_error (None when libcuda.so.1 loaded),
    cu_init (None, or (code, name) when cuInit failed), driver_cuda ('12.4'), torch_error.
    """
    nvd = facts.get("nvidia_visible_devices")
    cvd = facts.get("cuda_visible_devices")
    if not facts.get("torch_cuda"):
        if facts.get("torch_hip"):
            hip = facts["torch_hip"]
            return ("rocm_build", f"ROCm torch build (torch.version.hip={hip}): it cannot use NVIDIA GPUs",
                    "install a CUDA build of PyTorch in the image")
        return ("cpu_only_build",
                "CPU-only torch build: torch {} was built without CUDA (torch.version.cuda is None)".format(
                    facts.get("torch_version")),
                "install a CUDA build of PyTorch in the image, e.g. pip install torch --index-url "
                "https://download.pytorch.org/whl/cu128, or build it FROM a pytorch/pytorch:*-cuda* image")
    if not facts.get("dev_nodes"):
        requested = gpus_requested(nvd)
        if requested == "none":
            how = "unset" if nvd is None else f"{nvd!r}"
            return ("no_gpu_requested",
                    f"no GPU requested: NVIDIA_VISIBLE_DEVICES is {how} and no /dev/nvidia* device is present",
                    "start the container with " + GPU_FLAG)
        lib = "" if facts.get("libcuda_error") is None else " and libcuda.so.1 is missing"
        return ("no_device_visible",
                f"NVIDIA_VISIBLE_DEVICES={nvd} asks for GPUs but no /dev/nvidia* device is present{lib}: the "
                "container was not started through the NVIDIA container runtime, or the host has no "
                "GPU/driver",
                "on the host, check `nvidia-smi`; install the NVIDIA Container Toolkit "
                "(`docker info` lists the nvidia runtime) and start the container with " + GPU_FLAG)
    if facts.get("libcuda_error") is not None:
        return ("no_driver_library",
                "/dev/nvidia* devices are present but the driver library libcuda.so.1 cannot be loaded "
                "({}): the NVIDIA runtime did not mount the driver into the container".format(
                    facts["libcuda_error"]),
                "start with " + GPU_FLAG + " and NVIDIA_DRIVER_CAPABILITIES=compute,utility (or all)")
    if cvd is not None and (not _listed(cvd) or cvd.strip() in ("-1", "NoDevFiles")):
        return ("cuda_visible_devices_hides", f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU from CUDA",
                "unset CUDA_VISIBLE_DEVICES or list valid device indices/UUIDs")
    dc, tc = parse_version(facts.get("driver_cuda")), parse_version(facts.get("torch_cuda"))
    cu = facts.get("cu_init")
    too_old = (cu and cu[0] in (35, 803, 804)) or (dc and tc and dc[0] < tc[0])
    if too_old:
        return ("driver_too_old",
                "the NVIDIA driver supports CUDA {} but torch needs CUDA {}{}".format(
                    facts.get("driver_cuda") or "?", facts.get("torch_cuda"), f" (cuInit: {cu[1]})" if cu else ""),
                "upgrade the host NVIDIA driver (see check driver_cuda), or use an image built for an "
                "older CUDA")
    if cu and cu[0] == 100:
        return ("no_device_visible", f"cuInit: {cu[1]}: the driver sees no CUDA-capable device",
                "check `nvidia-smi` on the host and start the container with " + GPU_FLAG)
    detail = facts.get("torch_error") or (cu and f"cuInit: {cu[1]}") or "no error message"
    hint = ""
    if cu and cu[0] == 999:
        hint = " (CUDA_ERROR_UNKNOWN: often the nvidia-uvm module is not loaded or the GPU needs a reset)"
    return ("cuda_init_failed", f"torch could not initialise CUDA: {detail}{hint}",
            "run `nvidia-smi` on the host and in the container; check `dmesg` for Xid errors")


def expected_device_count(torch_count, nvml_count, nvd, cvd):
    """(status, threshold, detail) comparing torch's device count with what NVML and env say."""
    sources = []
    if cvd is not None and _listed(cvd):
        sources.append(("CUDA_VISIBLE_DEVICES", len(_listed(cvd))))
    else:
        if nvml_count is not None:
            sources.append(("NVML", nvml_count))
        if gpus_requested(nvd) == "list":
            sources.append(("NVIDIA_VISIBLE_DEVICES", len(_listed(nvd))))
    if not sources:
        return "pass", None, f"nothing to compare with (no NVML, NVIDIA_VISIBLE_DEVICES={nvd})"
    threshold = ", ".join(f"{name}: {n}" for name, n in sources)
    bad = [name for name, n in sources if n != torch_count]
    if bad:
        verb = "disagrees" if len(bad) == 1 else "disagree"
        return ("warn", threshold, "torch sees {} device(s), {} {} (MIG instances and CUDA_VISIBLE_DEVICES "
                "change what CUDA enumerates)".format(torch_count, " and ".join(bad), verb))
    return "pass", threshold, None


def lookup_peak(name):
    """{"label", "bf16_tflops", "fp16_tflops", "mem_gbps"} for a device name, or None."""
    for pattern, label, bf16, fp16, gbps in GPU_PEAKS:
        if re.search(pattern, name or "", re.IGNORECASE):
            return {"label": label, "bf16_tflops": bf16, "fp16_tflops": fp16, "mem_gbps": gbps}
    return None


def decode_throttle(mask):
    return [name for bit, name in THROTTLE_BITS if int(mask) & bit]


def summarize(checks):
    statuses = {c.get("status") for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def result(status, value=None, threshold=None, remediation=None, detail=None):
    return {"status": status, "value": value, "threshold": threshold,
            "remediation": remediation, "detail": detail}


def skip(detail):
    return result("skip", detail=detail)


def _error_text(exc):
    return "{}: {}".format(type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")


# -- facts gathered once -----------------------------------------------------------------------
class Ctx:
    """What the checks share: imported modules, facts, and whether CUDA works (and why not)."""

    def __init__(self, argv):
        self.perf = "--perf" in argv
        self.env = {k: os.environ.get(k) for k in ENV_KEYS}
        self.torch = self.torch_error = None
        self.nvml = self.nvml_error = None
        self.nvml_handles = []
        self.cuda_ok = False
        self.cuda_code = self.cuda_reason = self.cuda_remediation = None
        self.device_count = 0
        self.devices = []  # torch device strings the checks use ("cuda:0", ...)
        self.gemm_n = None  # matrix size for --perf (None: 8192, or 4096 under 4 GiB)
        self.gpus = []
        self.versions = {"python": platform.python_version()}
        self.facts = {}
        self.notes = []  # problems met while gathering facts, reported as "notes"


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _driver_from_proc():
    text = _read("/proc/driver/nvidia/version") or ""
    m = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", text)
    return m.group(1) if m else None


def _cuda_version_text(value):
    return f"{value // 1000}.{value % 1000 // 10}" if value else None


def _gather_libcuda(ctx):
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        ctx.facts["libcuda_error"] = str(exc)
        return
    ctx.facts["libcuda_error"] = None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        ctx.facts.setdefault("driver_cuda", _cuda_version_text(version.value))
    rc = lib.cuInit(0)
    if rc != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        ctx.facts["cu_init"] = (rc, (name.value or b"CUDA error %d" % rc).decode())


def _gather_nvml(ctx):
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        ctx.nvml_error = ("pynvml (nvidia-ml-py) is not installed in the image" if isinstance(exc, ImportError)
                          else f"NVML unavailable ({_error_text(exc)})")
        return
    ctx.nvml = pynvml
    try:
        ctx.versions["driver"] = pynvml.nvmlSystemGetDriverVersion()
        ctx.facts["driver_cuda"] = _cuda_version_text(pynvml.nvmlSystemGetCudaDriverVersion())
    except Exception:
        pass
    for i in range(pynvml.nvmlDeviceGetCount()):
        try:
            ctx.nvml_handles.append(pynvml.nvmlDeviceGetHandleByIndex(i))
        except pynvml.NVMLError as exc:  # e.g. GpuIsLost: the ECC/throttle checks cover the others
            ctx.notes.append(f"NVML GPU {i}: {_error_text(exc)}")


def _gather_torch(ctx):
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError for a missing shared library
        ctx.torch_error = _error_text(exc)
        return
    ctx.torch = torch
    v = ctx.versions
    v["torch"] = str(torch.__version__)
    v["cuda_runtime"] = torch.version.cuda
    try:
        cudnn = torch.backends.cudnn.version()
        if cudnn:
            parts = ((cudnn // 10000, cudnn % 10000 // 100, cudnn % 100) if cudnn >= 90000
                     else (cudnn // 1000, cudnn % 1000 // 100, cudnn % 100))
            v["cudnn"] = "{}.{}.{}".format(*parts)
    except Exception:
        pass
    try:
        nccl = torch.cuda.nccl.version()
        v["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx.cuda_ok = bool(torch.cuda.is_available())
    if ctx.cuda_ok:
        ctx.device_count = torch.cuda.device_count()
        ctx.devices = [f"cuda:{i}" for i in range(min(ctx.device_count, 16))]
        for i in range(ctx.device_count):
            p = torch.cuda.get_device_properties(i)
            ctx.gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                             "memory_total": int(p.total_memory)})
        return
    error = "; ".join(str(w.message) for w in caught) or None
    if torch.version.cuda:
        try:
            torch.cuda.init()
        except Exception as exc:
            error = _error_text(exc)
    ctx.facts["torch_error"] = error


def gather(ctx):
    """Import torch and pynvml, read driver facts and decide whether CUDA works, and why not."""
    f = ctx.facts
    f["dev_nodes"] = sorted(glob.glob("/dev/nvidia[0-9]*"))
    f["nvidia_visible_devices"] = ctx.env["NVIDIA_VISIBLE_DEVICES"]
    f["cuda_visible_devices"] = ctx.env["CUDA_VISIBLE_DEVICES"]
    for step in (_gather_nvml, _gather_torch, _gather_libcuda):
        try:
            step(ctx)
        except Exception as exc:
            ctx.notes.append(f"{step.__name__}: {_error_text(exc)}")
            if step is _gather_torch:
                f["torch_error"] = _error_text(exc)
    ctx.versions.setdefault("driver", _driver_from_proc())
    ctx.versions["cuda_driver"] = f.get("driver_cuda")
    if ctx.nvml is not None:
        try:
            from importlib import metadata

            ctx.versions["pynvml"] = metadata.version("nvidia-ml-py")
        except Exception:
            ctx.versions["pynvml"] = "unknown"
    if ctx.torch is not None and not ctx.cuda_ok:
        f.update(torch_version=ctx.versions.get("torch"), torch_cuda=ctx.torch.version.cuda,
                 torch_hip=getattr(ctx.torch.version, "hip", None))
        ctx.cuda_code, ctx.cuda_reason, ctx.cuda_remediation = classify_cuda_unavailable(f)
    elif ctx.torch is None:
        ctx.cuda_reason = f"torch did not import ({ctx.torch_error})"


# -- device work, kept separate so tests can run it on "cpu" -------------------------------------
def _sync(torch, device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed(torch, device, fn, iters):
    """Seconds for ``iters`` calls of fn, timed with CUDA events on a GPU."""
    if str(device).startswith("cuda"):
        with torch.cuda.device(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def roundtrip_ok(torch, device):
    x = torch.arange(1 << 20, dtype=torch.float32)
    y = (x.to(device) * 2).cpu()
    return bool(torch.equal(y, x * 2))


def matmul_error(torch, device, n=512):
    """max |device - cpu| / max |cpu| of an fp32 matmul, TF32 off."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    expected = a @ b
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        got = (a.to(device) @ b.to(device)).cpu()
    finally:
        torch.set_float32_matmul_precision(previous)
    return float((got - expected).abs().max() / expected.abs().max())


def conv_error(torch, device):
    """max relative error of a cuDNN conv2d against the CPU, TF32 off."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 3, 32, 32, generator=g), torch.randn(8, 3, 3, 3, generator=g)
    expected = torch.nn.functional.conv2d(x, w, padding=1)
    try:
        flags = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)
    except TypeError:
        flags = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False)
    with flags:
        got = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1).cpu()
    return float((got - expected).abs().max() / expected.abs().max())


def bf16_error(torch, device):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g)
    got = (a.to(device, torch.bfloat16) @ b.to(device, torch.bfloat16)).float().cpu()
    expected = a @ b
    return float((got - expected).abs().max() / expected.abs().max())


def gemm_tflops(torch, device, dtype, n=8192, seconds=1.0):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(torch, device)
    once = max(_timed(torch, device, lambda: a @ b, 1), 1e-6)
    iters = int(min(50, max(3, seconds / once)))
    elapsed = _timed(torch, device, lambda: a @ b, iters)
    return 2.0 * n ** 3 * iters / elapsed / 1e12


def copy_gbps(torch, device, nbytes, seconds=1.0):
    src = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(torch, device)
    once = max(_timed(torch, device, lambda: dst.copy_(src), 1), 1e-6)
    iters = int(min(100, max(3, seconds / once)))
    elapsed = _timed(torch, device, lambda: dst.copy_(src), iters)
    return 2.0 * (nbytes // 4 * 4) * iters / elapsed / 1e9


# -- checks: each takes the Ctx and returns result(...) ------------------------------------------
def check_torch_import(ctx):
    if ctx.torch is None:
        return result("fail", None, "torch importable",
                      "install PyTorch in the image (pip install torch), or build it FROM a "
                      "pytorch/pytorch:*-cuda* image", ctx.torch_error)
    v = ctx.versions
    return result("pass", v.get("torch"), detail="CUDA runtime {}, cuDNN {}, NCCL {}".format(
        v.get("cuda_runtime") or "none (CPU-only build)", v.get("cudnn") or "-", v.get("nccl") or "-"))


def check_cuda_available(ctx):
    if ctx.cuda_ok:
        names = ", ".join("{}: {}".format(g["index"], g["name"]) for g in ctx.gpus)
        return result("pass", True, True, detail=f"{ctx.device_count} device(s): {names}")
    return result("fail", False, True, ctx.cuda_remediation, ctx.cuda_reason)


def check_device_count(ctx):
    nvml_count = len(ctx.nvml_handles) if ctx.nvml is not None else None
    status, threshold, detail = expected_device_count(
        ctx.device_count, nvml_count, ctx.env["NVIDIA_VISIBLE_DEVICES"], ctx.env["CUDA_VISIBLE_DEVICES"])
    return result(status, ctx.device_count, threshold, None if status == "pass" else
                  "check NVIDIA_VISIBLE_DEVICES / --gpus and CUDA_VISIBLE_DEVICES", detail)


def check_driver(ctx):
    cuda, source = ctx.versions.get("cuda_runtime"), "torch.version.cuda"
    if not cuda and ctx.env["CUDA_VERSION"]:
        cuda, source = ctx.env["CUDA_VERSION"], "the image's CUDA_VERSION"
    if not cuda:
        return skip("no CUDA runtime to check: " + (ctx.cuda_reason or "torch has no CUDA"))
    driver, driver_cuda = ctx.versions.get("driver"), ctx.facts.get("driver_cuda")
    if not driver and not driver_cuda:
        why = "; " + ctx.cuda_reason if ctx.cuda_reason else ""
        return skip(f"driver version unknown (no NVML, no /proc/driver/nvidia/version, no libcuda){why}")
    s = driver_support(cuda, driver, driver_cuda)
    value = driver or f"supports CUDA {driver_cuda}"
    major = cuda.split(".")[0]
    threshold = (">= {} (CUDA {})".format(s["need"], s["release"]) if s["need"]
                 else ">= {} (CUDA {}.x)".format(s["compat_min"], major) if s["compat_min"] else None)
    where = f"CUDA {cuda} from {source}; table: {MIN_DRIVER_SOURCE}"
    if s["status"] == "native":
        return result("pass", value, threshold, detail=where)
    if s["status"] == "minor_compat":
        return result("pass", value, threshold, detail="runs through CUDA minor version compatibility (driver >= "
                      "{} for CUDA {}.x): PTX newer than the driver cannot be JIT-compiled; {}".format(
                          s["compat_min"], major, where))
    if s["status"] == "unknown":
        return result("warn", value, None, "update jupyter-ptcuda's minimum-driver table",
                      f"no minimum driver on record for CUDA {cuda}; {where}")
    newest = max_cuda_for_driver(driver) if driver else driver_cuda
    fix = "upgrade the host NVIDIA driver to >= {}{}".format(s["need"] or s["compat_min"], (
        f", or use an image built for CUDA <= {newest}") if newest else "")
    if ctx.cuda_ok:
        return result("warn", value, threshold, fix, "CUDA works anyway (forward-compatibility package in the "
                      f"image?), but the driver is older than CUDA {cuda} requires; {where}")
    return result("fail", value, threshold, fix, f"driver too old for CUDA {cuda}; {where}")


def check_arch(ctx):
    torch = ctx.torch
    arch_list = list(torch.cuda.get_arch_list())
    shown = " ".join(arch_list)
    rows, worst = [], "pass"
    compat = driver_support(ctx.versions.get("cuda_runtime"), ctx.versions.get("driver"),
                            ctx.facts.get("driver_cuda"))["status"]
    for i in range(ctx.device_count):
        major, minor = torch.cuda.get_device_capability(i)
        kind, arch = arch_coverage((major, minor), arch_list)
        covered = f"{arch} ({kind})" if arch else "not covered"
        rows.append(f"cuda:{i} sm_{major}{minor}: {covered}")
        if kind == "none" or (kind == "ptx" and compat == "minor_compat"):
            worst = "fail"
        elif kind == "ptx" and worst == "pass":
            worst = "warn"
    fixes = {"fail": "use a torch build compiled for this GPU (newer GPUs need newer CUDA wheels, e.g. cu128 "
                     "for Blackwell; very old GPUs need older torch) and a driver as new as its CUDA runtime",
             "warn": "prefer a torch build with native sm_XY code for this GPU: PTX is JIT-compiled on first "
                     "use (slow start, cached in ~/.nv/ComputeCache)"}
    return result(worst, "; ".join(rows), shown, fixes.get(worst), None if worst == "pass" else
                  "PTX JIT needs a driver at least as new as the CUDA runtime" if worst == "warn" else
                  "no kernel image for this GPU (or PTX newer than the driver) in torch built for: " + shown)


def check_tensor(ctx):
    bad = [d for d in ctx.devices if not roundtrip_ok(ctx.torch, d)]
    n = len(ctx.devices)
    if bad:
        return result("fail", f"{n - len(bad)}/{n} devices", "all", "the GPU returns wrong data: "
                      "reset it (nvidia-smi -r) or drain the host", "wrong round-trip on " + ", ".join(bad))
    return result("pass", f"{n}/{n} devices", "all")


def check_matmul(ctx, tolerance=1e-3):
    errors = {d: matmul_error(ctx.torch, d) for d in ctx.devices}
    worst = max(errors.values()) if errors else 0.0
    ok = all(math.isfinite(e) and e <= tolerance for e in errors.values())
    detail = ", ".join(f"{d}: {e:.2e}" for d, e in errors.items())
    return result("pass" if ok else "fail", f"{worst:.2e}", f"<= {tolerance:.0e} relative",
                  None if ok else "the GPU computes wrong results: check for Xid errors in the host's dmesg, "
                  "reset the GPU or drain the host", detail)


def check_cudnn(ctx, tolerance=1e-3):
    torch = ctx.torch
    if not torch.backends.cudnn.is_available():
        return result("warn", None, "cuDNN available", "use a torch build with cuDNN (the pip/conda CUDA builds "
                      "ship it)", "cuDNN is not available: convolutions use slow fallbacks")
    err = conv_error(torch, ctx.devices[0])
    ok = math.isfinite(err) and err <= tolerance
    return result("pass" if ok else "fail", "cuDNN {}, error {:.2e}".format(ctx.versions.get("cudnn"), err),
                  f"<= {tolerance:.0e} relative", None if ok else "reinstall torch/cuDNN in the image",
                  None if ok else f"conv2d on {ctx.devices[0]} differs from the CPU")


def check_nccl(ctx):
    torch = ctx.torch
    dist = torch.distributed
    if not (dist.is_available() and dist.is_nccl_available()):
        return result("warn", None, "NCCL available", "use a Linux CUDA build of torch (it ships NCCL)",
                      "no NCCL: multi-GPU DistributedDataParallel will not work")
    import datetime

    try:
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                                timeout=datetime.timedelta(seconds=60))
        t = torch.ones(4, device=ctx.devices[0])
        dist.all_reduce(t)
        torch.cuda.synchronize()
        ok = bool(t.sum().item() == 4)
    except Exception as exc:
        return result("warn", ctx.versions.get("nccl"), "single-rank all_reduce works", "check NCCL_* "
                      "environment variables and that the GPU is usable", "NCCL failed: " + _error_text(exc))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return result("pass" if ok else "warn", ctx.versions.get("nccl"), "single-rank all_reduce works")


def check_bf16(ctx):
    torch = ctx.torch
    major, minor = torch.cuda.get_device_capability(0)
    try:
        native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        native = bool(torch.cuda.is_bf16_supported()) and major >= 8
    if not native:
        return result("warn", f"no native bf16 (sm_{major}{minor})", "compute capability >= 8.0",
                      "use fp16 autocast with a GradScaler on this GPU", "bf16 needs Ampere or newer")
    err = bf16_error(torch, ctx.devices[0])
    ok = math.isfinite(err) and err <= 5e-2
    return result("pass" if ok else "fail", f"native, error {err:.1e}", "<= 5e-02 relative",
                  None if ok else "the GPU computes wrong bf16 results: reset it or drain the host")


def check_shm(ctx):
    try:
        st = os.statvfs("/dev/shm")
        size = st.f_frsize * st.f_blocks
    except OSError:
        size = shm_size_from_mounts(_read("/proc/mounts"))
    fix = ("start the container with --shm-size=8g (or --ipc=host): DataLoader workers pass batches "
           "through /dev/shm and die with 'bus error' when it is full")
    if not size:
        return result("warn", None, ">= 1 GiB", fix, "no /dev/shm")
    detail = f"{size} bytes"
    if size < SHM_MIN_BYTES:
        return result("warn", human_bytes(size), ">= 1 GiB", fix, detail)
    return result("pass", human_bytes(size), ">= 1 GiB", detail=detail)


def _nvml_skip(ctx):
    if ctx.nvml is not None:
        return None if ctx.nvml_handles else skip("NVML sees no GPU")
    why = ctx.nvml_error or "NVML unavailable"
    if "not installed" in why:
        why += " (pip install nvidia-ml-py enables this check)"
    return skip(why + ("; " + ctx.cuda_reason if ctx.cuda_code else ""))


def check_ecc(ctx):
    nvml, rows, total = ctx.nvml, [], 0
    for i, h in enumerate(ctx.nvml_handles):
        try:
            n = nvml.nvmlDeviceGetTotalEccErrors(
                h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
        except nvml.NVMLError_NotSupported:
            rows.append(f"GPU{i}: not supported")
            continue
        total += int(n)
        rows.append(f"GPU{i}: {n}")
    if all(r.endswith("not supported") for r in rows):
        return skip("ECC not supported or disabled on this GPU (" + "; ".join(rows) + ")")
    if total:
        return result("fail", total, 0, "uncorrected ECC errors since the driver loaded: the GPU returned corrupt "
                      "data; drain the host and reset the GPU (nvidia-smi -r), then check retired/remapped "
                      "rows (nvidia-smi -q -d ROW_REMAPPER)", "; ".join(rows))
    return result("pass", 0, 0, detail="; ".join(rows))


def check_throttle(ctx):
    nvml, rows, bad = ctx.nvml, [], []
    fn = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
          or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)
    for i, h in enumerate(ctx.nvml_handles):
        try:
            names = decode_throttle(fn(h))
        except nvml.NVMLError as exc:
            rows.append(f"GPU{i}: {_error_text(exc)}")
            continue
        rows.append("GPU{}: {}".format(i, ", ".join(names) or "none"))
        bad += [n for n in names if n in THROTTLE_BAD]
    if bad:
        return result("warn", "; ".join(rows), "no thermal/hardware slowdown", "check the host's cooling and "
                      "power supply (nvidia-smi -q -d PERFORMANCE,TEMPERATURE)",
                      "slowdown: " + ", ".join(sorted(set(bad))))
    return result("pass", "; ".join(rows), "no thermal/hardware slowdown")


def check_gemm(ctx):
    torch, name = ctx.torch, ctx.gpus[0]["name"]
    native_bf16 = torch.cuda.get_device_capability(0) >= (8, 0)
    dtype, label = (torch.bfloat16, "bf16") if native_bf16 else (torch.float16, "fp16")
    n = ctx.gemm_n or (8192 if ctx.gpus[0]["memory_total"] >= 4 * GIB else 4096)
    tflops = gemm_tflops(torch, ctx.devices[0], dtype, n)
    peak = lookup_peak(name)
    peak_tf = peak and peak[f"{label}_tflops"]
    value = f"{tflops:.1f} TFLOPS ({label}, n={n})"
    if not peak_tf:
        return result("pass", value, None, detail=f"no {label} peak on record for {name!r}")
    ratio = tflops / peak_tf
    status = "pass" if ratio >= GEMM_MIN_RATIO else "warn"
    return result(status, f"{value}, {100 * ratio:.0f}% of peak",
                  ">= {:.0f}% of {} dense peak {:.0f} TFLOPS".format(
                      100 * GEMM_MIN_RATIO, peak["label"], peak_tf),
                  None if status == "pass" else "check throttling, power limit (nvidia-smi -q -d POWER) and "
                  "other processes on the GPU")


def check_bandwidth(ctx):
    torch, name = ctx.torch, ctx.gpus[0]["name"]
    free, _ = torch.cuda.mem_get_info(0)
    nbytes = int(min(GIB, free // 4))
    gbps = copy_gbps(torch, ctx.devices[0], nbytes)
    peak = lookup_peak(name)
    value = f"{gbps:.0f} GB/s (copy of {human_bytes(nbytes)})"
    if not peak:
        return result("pass", value, None, detail=f"no memory bandwidth peak on record for {name!r}")
    ratio = gbps / peak["mem_gbps"]
    status = "pass" if ratio >= BANDWIDTH_MIN_RATIO else "warn"
    return result(status, f"{value}, {100 * ratio:.0f}% of peak",
                  ">= {:.0f}% of {} peak {:.0f} GB/s".format(
                      100 * BANDWIDTH_MIN_RATIO, peak["label"], peak["mem_gbps"]),
                  None if status == "pass" else "check other processes on the GPU and memory clocks")


# (id, title, needs, function); needs: None, "torch", "cuda", "nvml", "perf"
CHECKS = (
    ("torch_import", "PyTorch imports", None, check_torch_import),
    ("cuda_available", "CUDA available to PyTorch", "torch", check_cuda_available),
    ("device_count", "GPU count agrees with NVML and env", "cuda", check_device_count),
    ("driver_cuda", "Driver supports the image's CUDA", None, check_driver),
    ("arch_coverage", "GPU architecture compiled into PyTorch", "cuda", check_arch),
    ("tensor_to_device", "Tensor round-trip to the GPU", "cuda", check_tensor),
    ("matmul", "Matmul on the GPU matches the CPU", "cuda", check_matmul),
    ("cudnn_conv", "cuDNN convolution", "cuda", check_cudnn),
    ("nccl", "NCCL available", "cuda", check_nccl),
    ("bf16", "bfloat16 support", "cuda", check_bf16),
    ("shm", "/dev/shm size", None, check_shm),
    ("ecc", "ECC volatile uncorrected errors", "nvml", check_ecc),
    ("throttle", "Clock throttle reasons", "nvml", check_throttle),
    ("perf_gemm", "GEMM throughput", "perf", check_gemm),
    ("perf_bandwidth", "GPU memory bandwidth", "perf", check_bandwidth),
)


def run_check(ctx, needs, fn):
    if needs in ("torch", "cuda", "perf") and ctx.torch is None:
        return skip("torch did not import")
    if needs in ("cuda", "perf") and not ctx.cuda_ok:
        return skip(f"CUDA unavailable: {ctx.cuda_reason}")
    if needs == "perf" and not ctx.perf:
        return skip("opt-in: run the check with --perf")
    if needs == "nvml":
        skipped = _nvml_skip(ctx)
        if skipped:
            return skipped
    try:
        return fn(ctx)
    except Exception as exc:
        tb = traceback.format_exc().strip().splitlines()
        return result("fail", None, None, "report this: the check itself failed unexpectedly",
                      "unexpected error: {} | {}".format(_error_text(exc), " / ".join(tb[-3:])[:800]))


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def build_report(argv):
    started = time.time()
    ctx = Ctx(argv)
    gather(ctx)
    checks = []
    for check_id, title, needs, fn in CHECKS:
        checks.append(dict({"id": check_id, "title": title}, **run_check(ctx, needs, fn)))
    if ctx.nvml is not None:
        try:
            ctx.nvml.nvmlShutdown()
        except Exception:
            pass
    return _jsonable({
        "schema": SCHEMA,
        "summary": summarize(checks),
        "checks": checks,
        "cuda": {"available": ctx.cuda_ok, "reason_code": ctx.cuda_code, "reason": ctx.cuda_reason},
        "gpus": ctx.gpus,
        "versions": ctx.versions,
        "env": ctx.env,
        "perf": ctx.perf,
        "notes": ctx.notes,
        "duration_s": round(time.time() - started, 3),
    })


def main(argv=None):
    """Print the report on the real stdout; while checks run, fd 1 goes to stderr."""
    argv = sys.argv[1:] if argv is None else argv
    saved = None
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except Exception:
        saved = None
    try:
        text = json.dumps(build_report(argv))
    except BaseException as exc:  # never die without a report
        text = json.dumps({"schema": SCHEMA, "summary": "fail", "checks": [dict(
            {"id": "check_script", "title": "Health check script"},
            **result("fail", None, None, "report this: the health check crashed", _error_text(exc)))],
            "cuda": {"available": False, "reason_code": None, "reason": None}, "gpus": [],
            "versions": {"python": platform.python_version()}, "env": {}, "perf": False, "notes": [],
            "duration_s": 0})
    finally:
        if saved is not None:
            try:
                sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
            except Exception:
                pass
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except Exception:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
