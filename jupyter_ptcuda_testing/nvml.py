"""A fake NVML that imitates nvidia-ml-py's ``pynvml`` module, failure modes included.

Who uses it: unit tests, and a server or broker whose configuration names it (``c.PtcudaExtension.nvml =
"fake:2"``, ``c.PtcudaBroker.nvml``: :func:`jupyter_ptcuda.nvml.nvml_from_config` loads this module by name
and logs that the GPUs are simulated), through :func:`make_fake_nvml`. The
:class:`~jupyter_ptcuda.nvml.sampler.GpuSampler` takes a :class:`FakeNvml` wherever it would take the
``pynvml`` module.

Faithfulness rules (asserted in ``tests/unit/test_nvml_fake.py``):

- every ``nvml*`` function here exists in ``pynvml`` under the same name and signature;
- errors are ``pynvml``'s own classes (``pynvml.NVMLError(code)`` picks the generated subclass,
  e.g. ``NVMLError_GpuIsLost``), so ``except pynvml.NVMLError_NotSupported`` catches ours;
- results have pynvml's shapes: ``c_nvmlMemory_t``/``c_nvmlUtilization_t`` structures,
  ``str`` names and UUIDs, ``[current, pending]`` for MIG mode, ``(major, minor)`` for the
  compute capability, ``nvmlFriendlyObject`` processes with ``.pid``/``.usedGpuMemory``;
- calls before ``nvmlInit`` (or after the matching ``nvmlShutdown``) raise
  ``NVMLError_Uninitialized``; ``library_not_found`` and ``driver_not_loaded`` are raised by
  ``nvmlInit``, as the real library does; a lost GPU raises ``NVMLError_GpuIsLost`` from
  every per-device call; unsupported fields raise ``NVMLError_NotSupported``.

Spec strings (:func:`make_fake_nvml`)::

    "2"                                  two H100s
    "0"                                  NVML works, no GPU
    "2:gpu_lost=1"                       GPU 1 lost (per-device calls raise GpuIsLost)
    "2:idle=0+1"                         both GPUs at 0 % utilisation (nothing running on them)
    "2:busy=1"                           GPU 1 at a steady 80-100 % (a training loop)
    "4:model=H100+L4,not_supported=power,seed=7,driver=550.54.15"
    "driver_not_loaded" | "library_not_found"

Options: ``gpu_lost=I[+I...]``, ``idle=I[+I...]`` (GPUs whose utilisation stays 0 %, as a real
GPU's with no kernel running on it), ``busy=I[+I...]`` (GPUs that stay at 80-100 %; the others' load
is a slow wave that dips near 0 % for a few seconds a minute), ``model=M[+M...]`` (cycled over the GPUs; models are the keys
of :data:`MODELS`), ``not_supported=F[+F...]`` (fields of :data:`FIELDS`, on every GPU, on
top of the model's own, e.g. ECC and MIG on GeForce), ``seed=N``, ``driver=X.Y.Z``.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pynvml

from jupyter_ptcuda.errors import ConfigError

#: Fields a test can make raise ``NVMLError_NotSupported``.
FIELDS = frozenset(
    {"utilization", "memory", "temperature", "power", "power_limit", "clocks", "throttle",
     "ecc", "processes", "mig", "compute_capability"}
)

#: name, memory bytes, (cc major, minor), power limit mW, idle mW, max SM / mem MHz, own NotSupported
MODELS: dict[str, tuple[str, int, tuple[int, int], int, int, int, int, frozenset[str]]] = {
    "H100": ("NVIDIA H100 80GB HBM3", 80 << 30, (9, 0), 700_000, 70_000, 1980, 2619, frozenset()),
    "H200": ("NVIDIA H200", 141 << 30, (9, 0), 700_000, 75_000, 1980, 3201, frozenset()),
    "A100": ("NVIDIA A100-SXM4-80GB", 80 << 30, (8, 0), 400_000, 55_000, 1410, 1593, frozenset()),
    "L4": ("NVIDIA L4", 23034 << 20, (8, 9), 72_000, 16_000, 2040, 6251, frozenset({"mig"})),
    "T4": ("Tesla T4", 15360 << 20, (7, 5), 70_000, 10_000, 1590, 5001, frozenset({"mig"})),
    "RTX4090": ("NVIDIA GeForce RTX 4090", 24564 << 20, (8, 9), 450_000, 20_000, 2520, 10501,
                frozenset({"mig", "ecc"})),
}

_NVML_VALUE_NOT_AVAILABLE_UINT = 0xFFFFFFFF  # gpuInstanceId when MIG is off


def _raise(code: int) -> NoReturn:
    # pynvml.NVMLError.__new__ maps the code to the generated subclass (NVMLError_GpuIsLost ...).
    raise pynvml.NVMLError(code)


@dataclass
class FakeGpu:
    """One simulated device. Tests may change ``lost``, ``not_supported`` and ``processes``."""

    index: int
    model: str
    uuid: str
    name: str
    memory_total: int
    compute_capability: tuple[int, int]
    power_limit_mw: int
    idle_power_mw: int
    max_sm_mhz: int
    max_mem_mhz: int
    not_supported: set[str] = field(default_factory=set)
    mig_enabled: bool = False
    lost: bool = False
    ecc_volatile_uncorrected: int = 0
    extra_clock_event_reasons: int = 0  # OR-ed into the computed reasons, e.g. HW slowdown
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    phase: float = 0.0
    idle: bool = False  # utilisation 0 % (nothing running on it), as a real idle GPU reports
    busy: bool = False  # utilisation 80-100 % all the time (a training loop)


class FakeDeviceHandle:
    """Opaque handle, like pynvml's ``c_nvmlDevice_t`` pointer; only the fake reads it."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<FakeDeviceHandle {self.index}>"


class FakeNvml:
    """Module-like stand-in for ``pynvml``: call ``fake.nvmlInit()``, ``fake.nvmlDeviceGetName(h)``.

    ``clock`` returns seconds; the moving values (utilisation, memory, temperature, power,
    clocks) are a deterministic function of ``seed``, the GPU index and ``clock()``.
    ``init_error`` is ``None``, ``"library_not_found"`` or ``"driver_not_loaded"``.
    Thread-safe enough for one sampler thread plus a test thread flipping attributes.
    """

    # pynvml's exception classes, so `nvml.NVMLError_GpuIsLost` works on either object.
    NVMLError = pynvml.NVMLError
    NVMLError_Uninitialized = pynvml.NVMLError_Uninitialized
    NVMLError_InvalidArgument = pynvml.NVMLError_InvalidArgument
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_DriverNotLoaded = pynvml.NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = pynvml.NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = pynvml.NVMLError_GpuIsLost
    NVMLError_Unknown = pynvml.NVMLError_Unknown

    # Constants the sampler and health check use, with pynvml's values.
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_CLOCK_GRAPHICS = pynvml.NVML_CLOCK_GRAPHICS
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_CLOCK_VIDEO = pynvml.NVML_CLOCK_VIDEO
    NVML_MEMORY_ERROR_TYPE_CORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    NVML_VOLATILE_ECC = pynvml.NVML_VOLATILE_ECC
    NVML_AGGREGATE_ECC = pynvml.NVML_AGGREGATE_ECC
    NVML_DEVICE_MIG_DISABLE = pynvml.NVML_DEVICE_MIG_DISABLE
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
    nvmlClocksEventReasonGpuIdle = pynvml.nvmlClocksEventReasonGpuIdle
    nvmlClocksEventReasonSwPowerCap = pynvml.nvmlClocksEventReasonSwPowerCap
    nvmlClocksEventReasonSwThermalSlowdown = pynvml.nvmlClocksEventReasonSwThermalSlowdown

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        init_error: str | None = None,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if init_error not in (None, "library_not_found", "driver_not_loaded"):
            raise ConfigError(f"unknown fake NVML init_error {init_error!r}")
        self.gpus = list(gpus)
        self.init_error = init_error
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.seed = seed
        self.clock = clock
        self.calls = 0  # every nvml* call, for tests asserting that snapshot() makes none
        self._refcount = 0
        self._lock = threading.Lock()

    # -- test controls (not part of pynvml) ------------------------------------------------
    def set_lost(self, index: int, lost: bool = True) -> None:
        self.gpus[index].lost = lost

    def set_processes(self, index: int, processes: Iterable[tuple[int, int | None]]) -> None:
        """``[(pid, used_bytes_or_None), ...]`` as nvmlDeviceGetComputeRunningProcesses reports."""
        self.gpus[index].processes = list(processes)

    # -- internals ---------------------------------------------------------------------------
    def _enter(self) -> None:
        self.calls += 1
        if self._refcount <= 0:
            _raise(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any, fieldname: str | None = None) -> FakeGpu:
        self._enter()
        if not isinstance(handle, FakeDeviceHandle) or not 0 <= handle.index < len(self.gpus):
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            _raise(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fieldname is not None and fieldname in gpu.not_supported:
            _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _load(self, gpu: FakeGpu) -> float:
        """Utilisation in [0, 1], smooth in time, different per GPU (0 for an idle one)."""
        if gpu.idle:
            return 0.0
        t = self.clock()
        if gpu.busy:
            return 0.9 + 0.1 * math.sin(t / 1.7 + gpu.phase)
        wave = 0.5 + 0.45 * math.sin(t / 11.0 + gpu.phase) + 0.05 * math.sin(t / 1.7 + 2 * gpu.phase)
        return min(1.0, max(0.0, wave))

    # -- pynvml API ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls += 1
        if self.init_error == "library_not_found":
            _raise(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.init_error == "driver_not_loaded":
            _raise(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        with self._lock:
            self._refcount += 1

    def nvmlShutdown(self) -> None:
        self._enter()
        with self._lock:
            self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter()
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter()
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDeviceHandle:
        self._enter()
        if not 0 <= index < len(self.gpus):
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return FakeDeviceHandle(index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        return self._gpu(handle).index

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        gpu = self._gpu(device, "mig")
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig_enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        return self._gpu(handle, "compute_capability").compute_capability

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu(handle, "utilization")
        load = self._load(gpu)
        return pynvml.c_nvmlUtilization_t(gpu=round(100 * load), memory=round(60 * load))

    def _memory_used(self, gpu: FakeGpu) -> int:
        baseline = int(gpu.memory_total * (0.02 + 0.5 * self._load(gpu)))
        from_processes = sum(used or 0 for _, used in gpu.processes)
        return min(gpu.memory_total, max(baseline, from_processes))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._gpu(handle, "memory")
        used = self._memory_used(gpu)
        if not version:
            return pynvml.c_nvmlMemory_t(total=gpu.memory_total, free=gpu.memory_total - used, used=used)
        reserved = 512 << 20
        return pynvml.c_nvmlMemory_v2_t(
            version=version, total=gpu.memory_total, reserved=reserved,
            free=max(0, gpu.memory_total - used - reserved), used=used,
        )

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu(handle, "temperature")
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return round(32 + 45 * self._load(gpu))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu(handle, "power")
        return round(gpu.idle_power_mw + (gpu.power_limit_mw - gpu.idle_power_mw) * self._load(gpu))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu(handle, "power_limit").power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:  # pynvml names it `type`
        gpu = self._gpu(handle, "clocks")
        load = self._load(gpu)
        if type in (pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_GRAPHICS):
            return round(210 + (gpu.max_sm_mhz - 210) * min(1.0, 0.2 + load))
        if type == pynvml.NVML_CLOCK_MEM:
            return gpu.max_mem_mhz if load > 0.05 else 405
        if type == pynvml.NVML_CLOCK_VIDEO:
            return round(gpu.max_sm_mhz * 0.9)
        _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        gpu = self._gpu(handle, "throttle")
        load = self._load(gpu)
        reasons = 0
        if load < 0.05:
            reasons |= pynvml.nvmlClocksEventReasonGpuIdle
        if load > 0.9:
            reasons |= pynvml.nvmlClocksEventReasonSwPowerCap
        return reasons | gpu.extra_clock_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self.nvmlDeviceGetCurrentClocksEventReasons(handle)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        gpu = self._gpu(handle, "ecc")
        if errorType not in (0, 1) or counterType not in (0, 1):
            _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return gpu.ecc_volatile_uncorrected
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        gpu = self._gpu(handle, "processes")
        instance = 0 if gpu.mig_enabled else _NVML_VALUE_NOT_AVAILABLE_UINT
        return [
            pynvml.nvmlFriendlyObject(
                {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": instance, "computeInstanceId": instance}
            )
            for pid, used in gpu.processes
        ]


def make_gpus(count: int, models: list[str] | None = None, seed: int = 0,
              not_supported: Iterable[str] = ()) -> list[FakeGpu]:
    """``count`` GPUs with deterministic UUIDs (``GPU-xxxxxxxx-xxxx-...``) derived from ``seed``."""
    models = models or ["H100"]
    rng = random.Random(seed)
    gpus = []
    for i in range(count):
        model = models[i % len(models)]
        name, mem, cc, limit, idle, sm, memclk, own = MODELS[model]
        gpus.append(FakeGpu(
            index=i, model=model, uuid=f"GPU-{uuid.UUID(int=rng.getrandbits(128))}", name=name,
            memory_total=mem, compute_capability=cc, power_limit_mw=limit, idle_power_mw=idle,
            max_sm_mhz=sm, max_mem_mhz=memclk, not_supported=set(own) | set(not_supported),
            phase=rng.uniform(0, 2 * math.pi),
        ))
    return gpus


_SPEC_HELP = (
    "expected 'N[:option,...]' or 'driver_not_loaded' or 'library_not_found', with options "
    "gpu_lost=I[+I], idle=I[+I], busy=I[+I], model=M[+M] (one of " + ", ".join(MODELS) + "), not_supported=F[+F] "
    "(of " + ", ".join(sorted(FIELDS)) + "), seed=N, driver=X.Y.Z; e.g. '2:gpu_lost=1'"
)


def make_fake_nvml(spec: str, *, clock: Callable[[], float] = time.monotonic) -> FakeNvml:
    """Build a :class:`FakeNvml` from a spec string (grammar in the module docstring).

    Called by :func:`jupyter_ptcuda.nvml.nvml_from_config` (a ``fake:SPEC`` setting) and by tests.
    Raises :class:`~jupyter_ptcuda.errors.ConfigError` on a malformed spec.
    """
    text = spec.strip()
    if text in ("driver_not_loaded", "library_not_found"):
        return FakeNvml(init_error=text, clock=clock)
    head, _, tail = text.partition(":")
    try:
        count = int(head)
        if count < 0:
            raise ValueError
    except ValueError:
        raise ConfigError(f"bad fake NVML spec {spec!r}: {_SPEC_HELP}") from None
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in tail.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in ("gpu_lost", "idle", "busy", "model", "not_supported", "seed", "driver"):
            raise ConfigError(f"bad fake NVML option {item!r} in {spec!r}: {_SPEC_HELP}")
        options[key] = value
    try:
        seed = int(options.get("seed", "0"))
        lost = [int(i) for i in options["gpu_lost"].split("+")] if "gpu_lost" in options else []
        idle = [int(i) for i in options["idle"].split("+")] if "idle" in options else []
        busy = [int(i) for i in options["busy"].split("+")] if "busy" in options else []
    except ValueError:
        raise ConfigError(f"bad number in fake NVML spec {spec!r}: {_SPEC_HELP}") from None
    models = options["model"].split("+") if "model" in options else None
    unsupported = options["not_supported"].split("+") if "not_supported" in options else []
    bad = [m for m in models or [] if m not in MODELS] + [f for f in unsupported if f not in FIELDS]
    bad += [str(i) for i in (*lost, *idle, *busy) if not 0 <= i < count]
    if bad:
        raise ConfigError(f"unknown value(s) {', '.join(bad)} in fake NVML spec {spec!r}: {_SPEC_HELP}")
    gpus = make_gpus(count, models, seed, unsupported)
    for i in lost:
        gpus[i].lost = True
    for i in idle:
        gpus[i].idle = True
    for i in busy:
        gpus[i].busy = True
    both = sorted(set(idle) & set(busy))
    if both:
        raise ConfigError(f"GPU(s) {', '.join(map(str, both))} both idle and busy in fake NVML spec {spec!r}: "
                          "name each GPU in one of idle= and busy=")
    kwargs: dict[str, Any] = {"seed": seed, "clock": clock}
    if "driver" in options:
        kwargs["driver_version"] = options["driver"]
    return FakeNvml(gpus, **kwargs)

