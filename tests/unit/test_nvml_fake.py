"""The fake NVML must behave like nvidia-ml-py's pynvml: names, signatures, errors, shapes."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import pynvml
import pytest

import jupyter_ptcuda
from jupyter_ptcuda.errors import ConfigError
from jupyter_ptcuda.nvml import nvml_from_config
from jupyter_ptcuda_testing.nvml import FakeNvml, make_fake_nvml

PKG = Path(jupyter_ptcuda.__file__).resolve().parent
UUID_RE = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _nvml_functions(cls: type) -> list[str]:
    return [n for n in dir(cls) if n.startswith("nvml") and callable(getattr(cls, n))
            and not n.startswith(("nvmlClocks",))]


def _attributes_used(path: Path, receivers: tuple[str, ...]) -> set[str]:
    source = path.read_text()
    names: set[str] = set()
    for receiver in receivers:
        names |= set(re.findall(rf"\b{receiver}\.((?:nvml|NVML)\w*)", source))
    return names


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_every_fake_function_exists_in_pynvml_with_the_same_signature():
    names = _nvml_functions(FakeNvml)
    assert len(names) >= 20
    for name in names:
        assert hasattr(pynvml, name), f"pynvml has no {name}"
        real = list(inspect.signature(getattr(pynvml, name)).parameters)
        ours = list(inspect.signature(getattr(FakeNvml, name)).parameters)[1:]  # drop self
        assert ours == real, f"{name}: fake takes {ours}, pynvml takes {real}"


@pytest.mark.parametrize("path", ["nvml/sampler.py", "health/check.py"])
def test_everything_our_code_calls_on_nvml_exists_in_pynvml_and_the_fake(path):
    used = _attributes_used(PKG / path, ("nvml", "pynvml"))
    assert used, "no NVML use found: the regex is stale"
    for name in used:
        assert hasattr(pynvml, name), f"{path} uses {name}, which pynvml lacks"
        assert hasattr(FakeNvml, name), f"{path} uses {name}, which the fake lacks"


def test_constants_and_error_classes_are_pynvmls():
    for name in dir(FakeNvml):
        if name.startswith(("NVML_", "nvmlClocks")):
            assert getattr(FakeNvml, name) == getattr(pynvml, name), name
        if name.startswith("NVMLError"):
            assert getattr(FakeNvml, name) is getattr(pynvml, name), name


def test_calls_before_init_and_after_shutdown_raise_uninitialized():
    nvml = make_fake_nvml("1")
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()
    nvml.nvmlInit()
    nvml.nvmlInit()  # reference counted, like the real library
    nvml.nvmlShutdown()
    assert nvml.nvmlDeviceGetCount() == 1
    nvml.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized) as err:
        nvml.nvmlSystemGetDriverVersion()
    assert isinstance(err.value, pynvml.NVMLError)
    assert str(err.value) == "Uninitialized"
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlShutdown()


@pytest.mark.parametrize(("spec", "cls", "message"), [
    ("library_not_found", pynvml.NVMLError_LibraryNotFound, "NVML Shared Library Not Found"),
    ("driver_not_loaded", pynvml.NVMLError_DriverNotLoaded, "Driver Not Loaded"),
])
def test_init_failures_are_raised_by_nvmlinit_as_pynvml_errors(spec, cls, message):
    nvml = make_fake_nvml(spec)
    with pytest.raises(pynvml.NVMLError) as err:
        nvml.nvmlInit()
    assert type(err.value) is cls
    assert str(err.value) == message
    assert err.value.value == getattr(pynvml, "NVML_ERROR_" + spec.upper())


def test_lost_gpu_raises_gpu_is_lost_from_per_device_calls_only():
    nvml = make_fake_nvml("2:gpu_lost=1")
    nvml.nvmlInit()
    assert nvml.nvmlDeviceGetCount() == 2
    handle = nvml.nvmlDeviceGetHandleByIndex(1)
    for call in (lambda: nvml.nvmlDeviceGetName(handle), lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
                 lambda: nvml.nvmlDeviceGetUtilizationRates(handle), lambda: nvml.nvmlDeviceGetIndex(handle)):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call()
    assert nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(0)).startswith("NVIDIA")


def test_not_supported_fields_and_invalid_arguments():
    nvml = make_fake_nvml("1:model=RTX4090,not_supported=power")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # GeForce: no ECC
        nvml.nvmlDeviceGetTotalEccErrors(h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # GeForce: no MIG
        nvml.nvmlDeviceGetMigMode(h)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetPowerUsage(h)
    assert nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 450_000
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        nvml.nvmlDeviceGetTemperature(h, 99)


def test_results_have_pynvml_shapes():
    nvml = make_fake_nvml("2:model=H100")
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    assert nvml.nvmlSystemGetDriverVersion() == "550.54.15"
    assert nvml.nvmlSystemGetCudaDriverVersion() == 12040
    assert UUID_RE.match(nvml.nvmlDeviceGetUUID(h))
    assert nvml.nvmlDeviceGetUUID(h) != nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(1))
    assert nvml.nvmlDeviceGetName(h) == "NVIDIA H100 80GB HBM3"
    assert nvml.nvmlDeviceGetIndex(h) == 0
    assert nvml.nvmlDeviceGetCudaComputeCapability(h) == (9, 0)
    assert nvml.nvmlDeviceGetMigMode(h) == [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
    mem = nvml.nvmlDeviceGetMemoryInfo(h)
    assert isinstance(mem, pynvml.c_nvmlMemory_t)
    assert mem.total == 80 << 30 and mem.used + mem.free == mem.total
    assert isinstance(nvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2), pynvml.c_nvmlMemory_v2_t)
    util = nvml.nvmlDeviceGetUtilizationRates(h)
    assert isinstance(util, pynvml.c_nvmlUtilization_t) and 0 <= util.gpu <= 100
    assert 0 < nvml.nvmlDeviceGetPowerUsage(h) <= nvml.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
    assert nvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM) in (2619, 405)
    assert isinstance(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(h), int)
    nvml.set_processes(0, [(4242, 1 << 30), (4343, None)])
    procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
    assert [(p.pid, p.usedGpuMemory) for p in procs] == [(4242, 1 << 30), (4343, None)]
    assert isinstance(procs[0], pynvml.nvmlFriendlyObject)
    assert set(vars(procs[0])) == {name for name, _ in pynvml.c_nvmlProcessInfo_t._fields_}


def test_values_move_with_time_and_are_deterministic_for_a_seed():
    clock = FakeClock()
    a, b = make_fake_nvml("1:seed=3", clock=clock), make_fake_nvml("1:seed=3", clock=clock)
    for nvml in (a, b):
        nvml.nvmlInit()

    def read(nvml: FakeNvml) -> tuple:
        h = nvml.nvmlDeviceGetHandleByIndex(0)
        return (nvml.nvmlDeviceGetUtilizationRates(h).gpu, nvml.nvmlDeviceGetMemoryInfo(h).used,
                nvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU), nvml.nvmlDeviceGetUUID(h))

    first = read(a)
    assert first == read(b)
    clock.t += 7.0
    assert read(a)[:3] != first[:3]
    assert read(a)[3] == first[3]


def test_idle_gpus_stay_at_zero_busy_ones_never_dip_and_the_others_wave_through_both():
    clock = FakeClock()
    nvml = make_fake_nvml("3:idle=0,busy=1", clock=clock)
    nvml.nvmlInit()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for _ in range(140):  # two of the wave's ~69 s periods, every second
        for i in seen:
            seen[i].append(nvml.nvmlDeviceGetUtilizationRates(nvml.nvmlDeviceGetHandleByIndex(i)).gpu)
        clock.t += 1.0
    assert set(seen[0]) == {0}
    assert min(seen[1]) >= 80
    assert min(seen[2]) < 5 < 80 < max(seen[2])  # why a test that needs a busy GPU names it busy=


def test_spec_parsing():
    nvml = make_fake_nvml(" 3:model=H100+L4,gpu_lost=0+2,not_supported=ecc,seed=1,driver=535.104.05 ")
    assert [g.model for g in nvml.gpus] == ["H100", "L4", "H100"]
    assert [g.lost for g in nvml.gpus] == [True, False, True]
    assert all("ecc" in g.not_supported for g in nvml.gpus)
    assert nvml.driver_version == "535.104.05"
    assert make_fake_nvml("0").gpus == []
    for bad in ("", "two", "-1", "2:gpu_lost=2", "2:model=Z80", "2:not_supported=smell", "2:colour=red",
                "2:gpu_lost", "2:seed=x", "2:busy=2", "2:idle=1,busy=1"):
        with pytest.raises(ConfigError, match="fake NVML"):
            make_fake_nvml(bad)


def test_only_a_setting_that_names_the_fake_loads_it_and_the_log_says_so(caplog, monkeypatch):
    monkeypatch.setenv("JUPYTER_PTCUDA_FAKE_NVML", "2")  # an environment variable alone chooses nothing
    assert nvml_from_config("", "c.PtcudaExtension.nvml", logging.getLogger("t")) is None
    with caplog.at_level(logging.WARNING):
        nvml = nvml_from_config("fake:2:model=L4", "c.PtcudaExtension.nvml", logging.getLogger("t"))
    assert isinstance(nvml, FakeNvml) and len(nvml.gpus) == 2
    assert "c.PtcudaExtension.nvml = 'fake:2:model=L4': the FAKE NVML" in caplog.text and "simulated" in caplog.text
    with pytest.raises(ConfigError, match=r"c.PtcudaBroker.nvml = 'nvidia': give .* or \"fake:SPEC\""):
        nvml_from_config("nvidia", "c.PtcudaBroker.nvml", logging.getLogger("t"))
    with pytest.raises(ConfigError, match="bad fake NVML spec"):
        nvml_from_config("fake:two", "c.PtcudaBroker.nvml", logging.getLogger("t"))

