"""check.py: its pure functions (imported as a module) and whole runs in subprocesses.

The runs use the host's python (no torch), stub ``torch`` packages on PYTHONPATH, and, when
it exists, a real CPU-only torch in /tmp/torchvenv (or ``$PTCUDA_TORCH_PYTHON``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pynvml
import pytest

from jupyter_ptcuda.health import CHECK_SCRIPT, check_script_source, load_min_driver_table
from jupyter_ptcuda.health import check as chk
from jupyter_ptcuda.health.report import parse_report
from jupyter_ptcuda_testing.nvml import make_fake_nvml

TORCH_PYTHON = os.environ.get("PTCUDA_TORCH_PYTHON", "/tmp/torchvenv/bin/python")
GPU_CHECKS = ("device_count", "arch_coverage", "tensor_to_device", "matmul", "cudnn_conv", "nccl", "bf16",
              "perf_gemm", "perf_bandwidth")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in chk.ENV_KEYS and k != "PYTHONPATH"}


def run_check(python: str, *args: str, env: dict[str, str] | None = None, stdin: bool = True):
    """Run check.py like the runner does (``python - < check.py``); return (report, proc)."""
    cmd = [python, "-", *args] if stdin else [python, str(CHECK_SCRIPT), *args]
    proc = subprocess.run(cmd, input=check_script_source() if stdin else None, capture_output=True,
                          text=True, env={**CLEAN_ENV, **(env or {})}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got: {proc.stdout[:2000]!r}"
    return parse_report(proc.stdout), proc


def checks_by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def torch_python() -> str:
    if not os.path.exists(TORCH_PYTHON):
        if not os.environ.get("CI"):
            pytest.skip(f"no python with CPU torch at {TORCH_PYTHON} (make /tmp/torchvenv)")
        pytest.fail(f"CI: set PTCUDA_TORCH_PYTHON or create {TORCH_PYTHON} with pip install torch")
    return TORCH_PYTHON


# -- whole runs ----------------------------------------------------------------------------------
def test_plain_python_without_torch_reports_a_torch_import_failure():
    report, _ = run_check(sys.executable)
    checks = checks_by_id(report)
    assert report["schema"] == 1 and report["summary"] == "fail"
    assert checks["torch_import"]["status"] == "fail"
    assert "No module named 'torch'" in checks["torch_import"]["detail"]
    assert "pip install torch" in checks["torch_import"]["remediation"]
    for cid in GPU_CHECKS:
        assert checks[cid]["status"] == "skip" and "torch did not import" in checks[cid]["detail"]
    assert checks["shm"]["status"] in ("pass", "warn")
    assert [c["id"] for c in report["checks"]] == [c[0] for c in chk.CHECKS]
    assert set(report["env"]) == set(chk.ENV_KEYS)


def test_also_runs_as_a_file_with_perf(tmp_path):
    report, _ = run_check(sys.executable, "--perf", stdin=False)
    assert report["perf"] is True and report["summary"] == "fail"


def test_cpu_only_torch_build_is_cuda_unavailable_with_the_reason():
    report, _ = run_check(torch_python())
    checks = checks_by_id(report)
    assert report["summary"] == "fail"
    assert report["cuda"]["available"] is False and report["cuda"]["reason_code"] == "cpu_only_build"
    assert checks["torch_import"]["status"] == "pass"
    assert checks["cuda_available"]["status"] == "fail"
    assert checks["cuda_available"]["detail"].startswith("CPU-only torch build")
    assert "download.pytorch.org/whl/cu" in checks["cuda_available"]["remediation"]
    for cid in GPU_CHECKS:
        assert checks[cid]["status"] == "skip" and "CPU-only torch build" in checks[cid]["detail"], cid
    assert checks["driver_cuda"]["status"] == "skip"


SIMULATED_GPU = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    spec = importlib.util.spec_from_file_location("ptcuda_check", sys.argv[1])
    check = importlib.util.module_from_spec(spec); spec.loader.exec_module(check)

    class Props:
        name, major, minor, total_memory = "NVIDIA H100 80GB HBM3", 9, 0, 80 << 30

    class FakeCuda:  # torch.cuda as a one-GPU machine answers; the work runs on the CPU
        def __getattr__(self, name): return getattr(torch.cuda, name)
        def is_available(self): return True
        def device_count(self): return 1
        def get_device_properties(self, i): return Props()
        def get_device_capability(self, i=0): return (9, 0)
        def get_arch_list(self): return ["sm_80", "sm_90", "compute_90"]
        def is_bf16_supported(self, including_emulation=True): return True
        def synchronize(self, device=None): pass
        def mem_get_info(self, i=0): return (64 << 20, 80 << 30)

    class FakeCudnn:
        def __getattr__(self, name): return getattr(torch.backends.cudnn, name)
        def is_available(self): return True

    class Proxy:
        def __init__(self, real, **over): self._real, self._over = real, over
        def __getattr__(self, name): return self._over[name] if name in self._over else getattr(self._real, name)

    ctx = check.Ctx(["--perf"])
    ctx.torch = Proxy(torch, cuda=FakeCuda(), backends=Proxy(torch.backends, cudnn=FakeCudnn()))
    ctx.cuda_ok, ctx.device_count, ctx.devices, ctx.gemm_n = True, 1, ["cpu"], 128
    ctx.gpus = [{"index": 0, "name": Props.name, "capability": "9.0", "memory_total": Props.total_memory}]
    ctx.versions.update(torch=torch.__version__, cuda_runtime="12.4", driver="550.54.15", cudnn="9.1.0")
    print(json.dumps({cid: check.run_check(ctx, needs, fn) for cid, _, needs, fn in check.CHECKS}))
""")


def test_gpu_code_paths_run_on_a_simulated_gpu(tmp_path):
    """Every GPU check's code runs (on the CPU) through a torch that claims one H100."""
    script = tmp_path / "sim.py"
    script.write_text(SIMULATED_GPU)
    proc = subprocess.run([torch_python(), str(script), str(CHECK_SCRIPT)], capture_output=True, text=True,
                          env=CLEAN_ENV, timeout=240)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for cid, res in results.items():
        assert "unexpected error" not in (res["detail"] or ""), (cid, res)
    for cid in ("cuda_available", "driver_cuda", "arch_coverage", "tensor_to_device", "matmul", "cudnn_conv",
                "bf16"):
        assert results[cid]["status"] == "pass", (cid, results[cid])
    assert results["nccl"]["status"] == "warn"  # the CPU wheel has no NCCL
    assert "TFLOPS" in results["perf_gemm"]["value"] and "of peak" in results["perf_gemm"]["value"]
    assert "GB/s" in results["perf_bandwidth"]["value"]


def _stub_torch(root: Path, body: str) -> dict[str, str]:
    pkg = root / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    return {"PYTHONPATH": str(root)}


CUDA_BUILD_WITHOUT_GPU = """
    import types
    __version__ = "2.5.0+cu124"
    version = types.SimpleNamespace(cuda="12.4", hip=None)
    backends = types.SimpleNamespace(cudnn=types.SimpleNamespace(version=lambda: 90100))
    def _init():
        raise RuntimeError("Found no NVIDIA driver on your system. Please check ...")
    cuda = types.SimpleNamespace(is_available=lambda: False, init=_init,
                                 nccl=types.SimpleNamespace(version=lambda: (2, 21, 5)))
"""


@pytest.mark.parametrize(("env", "code", "words"), [
    ({}, "no_gpu_requested", "NVIDIA_VISIBLE_DEVICES is unset"),
    ({"NVIDIA_VISIBLE_DEVICES": "void"}, "no_gpu_requested", "NVIDIA_VISIBLE_DEVICES is 'void'"),
    ({"NVIDIA_VISIBLE_DEVICES": "all"}, "no_device_visible", "NVIDIA container runtime"),
])
def test_cuda_build_on_a_gpu_less_container_says_why(tmp_path, env, code, words):
    if Path("/dev/nvidia0").exists():
        pytest.skip("this host has GPU device nodes")
    report, _ = run_check(sys.executable, env={**_stub_torch(tmp_path, CUDA_BUILD_WITHOUT_GPU), **env})
    checks = checks_by_id(report)
    assert report["cuda"]["reason_code"] == code
    assert words in checks["cuda_available"]["detail"]
    assert "--gpus all" in checks["cuda_available"]["remediation"]
    assert report["versions"]["cudnn"] == "9.1.0" and report["versions"]["nccl"] == "2.21.5"
    assert checks["driver_cuda"]["status"] == "skip"  # no driver to compare with
    assert checks["matmul"]["status"] == "skip" and code in ("no_gpu_requested", "no_device_visible")


def test_noise_on_stdout_from_libraries_cannot_corrupt_the_report(tmp_path):
    env = _stub_torch(tmp_path, """
        import os, sys
        print("python-level noise")
        sys.stdout.flush()
        os.write(1, b"C-level noise\\n")
        raise ImportError("libcudnn.so.9: cannot open shared object file")
    """)
    report, proc = run_check(sys.executable, env=env)
    assert "noise" in proc.stderr
    assert "libcudnn.so.9" in checks_by_id(report)["torch_import"]["detail"]


def test_a_crash_outside_the_checks_still_prints_json(tmp_path):
    env = _stub_torch(tmp_path, "raise SystemExit('torch calls exit on import')")
    report, _ = run_check(sys.executable, env=env)
    assert report["summary"] == "fail" and report["checks"][0]["id"] == "check_script"


def test_check_script_imports_only_the_standard_library():
    tree = ast.parse(CHECK_SCRIPT.read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    allowed = set(sys.stdlib_module_names) | {"torch", "pynvml", "__future__"}
    assert modules <= allowed, modules - allowed
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), "no relative imports"
    ast.parse(CHECK_SCRIPT.read_text(), feature_version=(3, 8))


# -- the driver table ----------------------------------------------------------------------------
def test_min_driver_json_and_the_embedded_table_agree():
    table = load_min_driver_table()
    assert table["source"] == chk.MIN_DRIVER_SOURCE
    assert table["minor_version_compatibility"] == chk.MINOR_VERSION_COMPAT
    assert [(t["cuda"], t["min_driver"]) for t in table["toolkits"]] == list(chk.TOOLKIT_MIN_DRIVER)
    assert [t["cuda"] for t in table["toolkits"] if t.get("rc")] == list(chk.RC_RELEASES)
    assert table["minor_version_compatibility"]["12"] == "525.60.13"
    assert table["minor_version_compatibility"]["11"] == "450.80.02"


@pytest.mark.parametrize(("cuda", "entry"), [
    ("12.4", ("12.4.0", "550.54.14")), ("12.4.1", ("12.4.1", "550.54.15")), ("12.4.99", ("12.4.0", "550.54.14")),
    ("12.8", ("12.8.0", "570.26")), ("13.0", ("13.0.0", "580.65.06")), ("11.0", ("11.0.2", "450.51.05")),
    ("12.7", None), ("13.9", None), ("", None),
])
def test_toolkit_entry(cuda, entry):
    assert chk.toolkit_entry(cuda) == entry


@pytest.mark.parametrize(("cuda", "driver", "driver_cuda", "status"), [
    ("12.4", "550.54.15", None, "native"),
    ("12.4", "550.54.14", None, "native"),
    ("12.4", "550.40.07", None, "minor_compat"),
    ("12.8", "535.104.05", None, "minor_compat"),
    ("12.1", "525.60.13", None, "minor_compat"),
    ("12.1", "520.61.05", None, "too_old"),
    ("13.0", "575.57.08", None, "too_old"),
    ("13.5", "580.95.05", None, "minor_compat"),  # newer than the table: the 13.x rule
    ("11.8", "580.65.06", None, "native"),
    ("11.8", "470.82.01", None, "minor_compat"),
    ("14.0", "600.1", None, "unknown"),
    ("12.4", None, "12.6", "native"),
    ("12.8", None, "12.2", "minor_compat"),
    ("13.0", None, "12.9", "too_old"),
    ("12.4", None, None, "unknown"),
])
def test_driver_support(cuda, driver, driver_cuda, status):
    assert chk.driver_support(cuda, driver, driver_cuda)["status"] == status


def test_max_cuda_for_driver():
    assert chk.max_cuda_for_driver("535.104.05") == "12.2"
    assert chk.max_cuda_for_driver("570.26") == "12.8"
    assert chk.max_cuda_for_driver("300.1") is None


# -- other pure functions ------------------------------------------------------------------------
@pytest.mark.parametrize(("cc", "arch_list", "expected"), [
    ((9, 0), ["sm_80", "sm_90"], ("sass", "sm_90")),
    ((8, 6), ["sm_80", "sm_90"], ("sass", "sm_80")),  # same major, newer minor: cubin runs
    ((8, 9), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], ("sass", "sm_80")),
    ((9, 0), ["sm_80", "sm_86", "compute_86"], ("ptx", "compute_86")),  # JIT from older PTX
    ((12, 0), ["sm_90", "sm_100", "compute_90"], ("ptx", "compute_90")),
    ((12, 0), ["sm_100", "sm_120"], ("sass", "sm_120")),
    ((10, 0), ["sm_90a", "sm_100a"], ("sass", "sm_100a")),
    ((10, 3), ["sm_100a"], ("none", None)),  # arch-specific code runs only on exactly 10.0
    ((10, 3), ["sm_100f"], ("sass", "sm_100f")),  # family-specific code runs on 10.x
    ((6, 1), ["sm_70", "sm_80", "compute_80"], ("none", None)),  # GPU too old for this build
    ((9, 0), [], ("none", None)),
])
def test_arch_coverage(cc, arch_list, expected):
    assert chk.arch_coverage(cc, arch_list) == expected


def test_sizes_and_shm_mounts():
    assert chk.parse_size("64m") == 64 << 20
    assert chk.parse_size("65536k") == 64 << 20
    assert chk.parse_size("8g") == 8 << 30
    assert chk.parse_size("8GiB") == 8 << 30
    assert chk.parse_size("1048576") == 1 << 20
    assert chk.parse_size("lots") is None
    mounts = ("proc /proc proc rw 0 0\n"
              "shm /dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k,inode64 0 0\n")
    assert chk.shm_size_from_mounts(mounts) == 64 << 20
    assert chk.shm_size_from_mounts("tmpfs /dev/shm tmpfs rw,nosuid 0 0") is None
    assert chk.shm_size_from_mounts("") is None
    assert chk.human_bytes(64 << 20) == "64.0 MiB" and chk.human_bytes(512) == "512 B"


def test_gpus_requested():
    assert [chk.gpus_requested(v) for v in (None, "", " void ", "none", "all", "0,1", "GPU-abc")] == [
        "none", "none", "none", "none", "all", "list", "list"]


def _facts(**kw):
    base = {"torch_version": "2.5.0", "torch_cuda": "12.4", "torch_hip": None, "nvidia_visible_devices": "all",
            "cuda_visible_devices": None, "dev_nodes": ["/dev/nvidia0"], "libcuda_error": None,
            "cu_init": None, "driver_cuda": "12.4", "torch_error": None}
    return {**base, **kw}


@pytest.mark.parametrize(("facts", "code", "words"), [
    (_facts(torch_cuda=None), "cpu_only_build", "CPU-only torch build"),
    (_facts(torch_cuda=None, torch_hip="6.2"), "rocm_build", "ROCm"),
    (_facts(dev_nodes=[], nvidia_visible_devices=None), "no_gpu_requested", "is unset"),
    (_facts(dev_nodes=[], nvidia_visible_devices=""), "no_gpu_requested", "is ''"),
    (_facts(dev_nodes=[], nvidia_visible_devices="none"), "no_gpu_requested", "'none'"),
    (_facts(dev_nodes=[], libcuda_error="libcuda.so.1: cannot open"), "no_device_visible", "libcuda.so.1 is missing"),
    (_facts(libcuda_error="libcuda.so.1: cannot open"), "no_driver_library", "cannot be loaded"),
    (_facts(cuda_visible_devices=""), "cuda_visible_devices_hides", "hides every GPU"),
    (_facts(cuda_visible_devices="-1"), "cuda_visible_devices_hides", "hides every GPU"),
    (_facts(cu_init=(803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"), driver_cuda="11.4"), "driver_too_old",
     "supports CUDA 11.4 but torch needs CUDA 12.4"),
    (_facts(driver_cuda="11.8"), "driver_too_old", "supports CUDA 11.8"),
    (_facts(cu_init=(100, "CUDA_ERROR_NO_DEVICE")), "no_device_visible", "CUDA_ERROR_NO_DEVICE"),
    (_facts(cu_init=(999, "CUDA_ERROR_UNKNOWN")), "cuda_init_failed", "nvidia-uvm"),
    (_facts(torch_error="RuntimeError: boom"), "cuda_init_failed", "RuntimeError: boom"),
])
def test_classify_cuda_unavailable(facts, code, words):
    got, reason, remediation = chk.classify_cuda_unavailable(facts)
    assert got == code
    assert words in reason
    assert remediation


@pytest.mark.parametrize(("args", "status"), [
    ((2, 2, "all", None), "pass"),
    ((2, 2, "0,1", None), "pass"),
    ((1, 2, "all", None), "warn"),
    ((2, 2, "0", None), "warn"),
    ((1, 2, "all", "1"), "pass"),
    ((2, 4, "all", "0,1"), "pass"),
    ((1, None, None, None), "pass"),
])
def test_expected_device_count(args, status):
    assert chk.expected_device_count(*args)[0] == status


@pytest.mark.parametrize(("name", "label"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"), ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", "L40"), ("NVIDIA A10", "A10"), ("Tesla T4", "T4"), ("Tesla V100-SXM2-32GB", "V100 SXM2"),
    ("Tesla V100-PCIE-16GB", "V100 PCIe"), ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
    ("NVIDIA A10G", None), ("NVIDIA GH200 480GB", None), ("NVIDIA GeForce RTX 3090 Ti", None),
    ("NVIDIA B200", "B200"), ("NVIDIA GeForce RTX 5090", "GeForce RTX 5090"), ("NVIDIA GeForce RTX 5090 D", None),
])
def test_lookup_peak(name, label):
    peak = chk.lookup_peak(name)
    assert (peak and peak["label"]) == label


def test_summary_rule_and_throttle_bits():
    assert chk.summarize([{"status": "pass"}, {"status": "skip"}]) == "pass"
    assert chk.summarize([{"status": "warn"}, {"status": "skip"}]) == "warn"
    assert chk.summarize([{"status": "warn"}, {"status": "fail"}]) == "fail"
    assert chk.decode_throttle(pynvml.nvmlClocksEventReasonHwSlowdown | pynvml.nvmlClocksEventReasonGpuIdle) == [
        "gpu_idle", "hw_slowdown"]
    for bit, name in chk.THROTTLE_BITS:
        camel = "".join(part.capitalize() for part in name.split("_"))
        assert getattr(pynvml, "nvmlClocksEventReason" + camel) == bit, name


# -- the NVML checks, against the fake -----------------------------------------------------------
def _nvml_ctx(spec: str):
    nvml = make_fake_nvml(spec)
    nvml.nvmlInit()
    ctx = chk.Ctx([])
    ctx.nvml = nvml
    ctx.nvml_handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    return ctx, nvml


def test_ecc_check():
    ctx, nvml = _nvml_ctx("2")
    assert chk.run_check(ctx, "nvml", chk.check_ecc)["status"] == "pass"
    nvml.gpus[1].ecc_volatile_uncorrected = 3
    res = chk.run_check(ctx, "nvml", chk.check_ecc)
    assert res["status"] == "fail" and res["value"] == 3 and "nvidia-smi -r" in res["remediation"]
    ctx, _ = _nvml_ctx("1:model=RTX4090")
    assert chk.run_check(ctx, "nvml", chk.check_ecc)["status"] == "skip"


def test_throttle_check():
    ctx, nvml = _nvml_ctx("2")
    assert chk.run_check(ctx, "nvml", chk.check_throttle)["status"] == "pass"
    nvml.gpus[0].extra_clock_event_reasons = pynvml.nvmlClocksEventReasonHwThermalSlowdown
    res = chk.run_check(ctx, "nvml", chk.check_throttle)
    assert res["status"] == "warn" and "hw_thermal_slowdown" in res["detail"]


def test_nvml_checks_skip_with_a_reason_without_nvml():
    ctx = chk.Ctx([])
    ctx.nvml_error = "pynvml (nvidia-ml-py) is not installed in the image"
    res = chk.run_check(ctx, "nvml", chk.check_ecc)
    assert res["status"] == "skip" and "pip install nvidia-ml-py" in res["detail"]


def test_an_exception_inside_a_check_becomes_a_fail_with_the_message():
    def broken(ctx):
        raise ZeroDivisionError("division by zero in a check")

    res = chk.run_check(chk.Ctx([]), None, broken)
    assert res["status"] == "fail" and "ZeroDivisionError: division by zero in a check" in res["detail"]


# -- the default image on Blackwell: what the driver and architecture checks tell the user -----------
# torch.cuda.get_arch_list() of the official wheels, as pytorch's .ci/manywheel/build_cuda.sh sets
# TORCH_CUDA_ARCH_LIST: cu124 (torch 2.5, the old default image) "5.0;6.0;7.0;7.5;8.0;8.6;9.0";
# cu128 "7.0;7.5;8.0;8.6;9.0;10.0;12.0"; cu129 the same with "12.0+PTX".
ARCHES_CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
ARCHES_CU128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
ARCHES_CU129 = [*ARCHES_CU128, "compute_120"]


def _gpu_ctx(capability, arch_list, cuda, driver, cuda_ok=True):
    """A Ctx as check.py builds it in a container of a torch ``cuda`` build on one GPU of ``capability``."""
    from types import SimpleNamespace

    ctx = chk.Ctx([])
    ctx.torch = SimpleNamespace(cuda=SimpleNamespace(get_arch_list=lambda: list(arch_list),
                                                     get_device_capability=lambda i=0: capability))
    ctx.cuda_ok, ctx.device_count = cuda_ok, 1 if cuda_ok else 0
    if not cuda_ok:
        ctx.cuda_reason = "CUDA initialization failed"
    ctx.versions.update(torch="2.11.0", cuda_runtime=cuda, driver=driver)
    return ctx


def _judge(ctx) -> dict[str, dict]:
    checks = {cid: (title, needs, fn) for cid, title, needs, fn in chk.CHECKS}
    return {cid: {"id": cid, "title": checks[cid][0], **chk.run_check(ctx, checks[cid][1], checks[cid][2])}
            for cid in ("driver_cuda", "arch_coverage")}


def test_the_default_base_image_is_a_cuda_build_with_blackwell_kernels():
    import re

    from jupyter_ptcuda.images import DEFAULT_BASE

    m = re.fullmatch(r"pytorch/pytorch:(\d+)\.(\d+)\.(\d+)-cuda(\d+\.\d+)-cudnn\d+-runtime", DEFAULT_BASE)
    assert m, f"{DEFAULT_BASE} is not an official pytorch/pytorch CUDA runtime tag"
    torch_version, cuda = tuple(int(g) for g in m.groups()[:3]), m.group(4)
    assert torch_version >= (2, 7, 0) and chk.parse_version(cuda) >= (12, 8), "sm_100/sm_120 need CUDA >= 12.8"
    assert chk.toolkit_entry(cuda), f"no minimum driver on record for CUDA {cuda}: the check would only warn"
    assert chk.parse_version(cuda)[0] in (12, 13) and chk.MINOR_VERSION_COMPAT[str(chk.parse_version(cuda)[0])]


@pytest.mark.parametrize(("cuda", "entry"), [
    ("12.8", ("12.8.0", "570.26")), ("12.8.1", ("12.8.1", "570.124.06")),
    ("12.9", ("12.9.0", "575.51.03")), ("12.9.1", ("12.9.1", "575.57.08")),
    ("13.0", ("13.0.0", "580.65.06")), ("13.0.1", ("13.0.1", "580.82.07")), ("13.0.2", ("13.0.2", "580.95.05")),
])
def test_blackwell_toolkits_have_their_minimum_drivers(cuda, entry):
    """CUDA Toolkit release notes, Table 3 (Linux x86_64): the toolkits with sm_100/sm_120 code."""
    assert chk.toolkit_entry(cuda) == entry


@pytest.mark.parametrize(("gpu", "capability", "arches", "cuda", "driver", "driver_status", "arch_status", "shown"), [
    ("RTX 5090 + default image", (12, 0), ARCHES_CU128, "12.8", "570.124.06", "pass", "pass",
     "cuda:0 sm_120: sm_120 (sass)"),
    ("B200 + default image", (10, 0), ARCHES_CU128, "12.8", "570.26", "pass", "pass", "cuda:0 sm_100: sm_100 (sass)"),
    ("B300 (sm_103) + default image", (10, 3), ARCHES_CU128, "12.8", "575.57.08", "pass", "pass",
     "cuda:0 sm_103: sm_100 (sass)"),
    ("GB10 (sm_121) + cu129 image", (12, 1), ARCHES_CU129, "12.9", "580.95.05", "pass", "pass",
     "cuda:0 sm_121: sm_120 (sass)"),
    ("RTX 5090 + the old default (torch 2.5.1, cu124)", (12, 0), ARCHES_CU124, "12.4", "570.124.06", "pass", "fail",
     "cuda:0 sm_120: not covered"),
    ("B200 + the old default", (10, 0), ARCHES_CU124, "12.4", "570.26", "pass", "fail", "cuda:0 sm_100: not covered"),
    ("H100 + default image on an R535 driver", (9, 0), ARCHES_CU128, "12.8", "535.104.05", "pass", "pass",
     "cuda:0 sm_90: sm_90 (sass)"),
])
def test_blackwell_gpus_are_judged_by_the_tables(gpu, capability, arches, cuda, driver, driver_status, arch_status,
                                                  shown):
    results = _judge(_gpu_ctx(capability, arches, cuda, driver))
    assert results["driver_cuda"]["status"] == driver_status, (gpu, results["driver_cuda"])
    arch = results["arch_coverage"]
    assert (arch["status"], arch["value"]) == (arch_status, shown), (gpu, arch)
    if arch_status == "fail":
        assert "cu128 for Blackwell" in arch["remediation"]
        assert arch["detail"] == "no kernel image for this GPU (or PTX newer than the driver) in torch built for: " + \
            " ".join(arches)
    if driver == "535.104.05":  # older than 12.8's 570.26, inside the 12.x minor-version compatibility
        assert "minor version compatibility" in results["driver_cuda"]["detail"]


def test_a_cuda_13_image_on_a_driver_older_than_580_says_what_to_upgrade():
    """A cu130 image on an R575 host: CUDA cannot start; the driver check names the driver to install and
    the newest CUDA this driver runs; the architecture check waits for CUDA."""
    from jupyter_ptcuda.health.report import render_text

    results = _judge(_gpu_ctx((12, 0), ARCHES_CU129, "13.0", "575.57.08", cuda_ok=False))
    driver = results["driver_cuda"]
    assert driver["status"] == "fail" and driver["threshold"] == ">= 580.65.06 (CUDA 13.0.0)"
    assert driver["remediation"] == "upgrade the host NVIDIA driver to >= 580.65.06, or use an image built for CUDA <= 12.9"
    assert results["arch_coverage"]["status"] == "skip"
    report = {"summary": "fail", "checks": list(results.values()), "versions": {"cuda_runtime": "13.0",
              "driver": "575.57.08"}}
    text = render_text(report, unicode=False)
    assert "XX Driver supports the image's CUDA" in text and "(want >= 580.65.06 (CUDA 13.0.0))" in text
    assert "fix: upgrade the host NVIDIA driver to >= 580.65.06" in text
