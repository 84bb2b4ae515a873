"""GpuSampler against the fake NVML (and the real pynvml on this GPU-less host)."""

from __future__ import annotations

import ctypes.util
import json
import threading
import time

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_ptcuda.nvml.sampler import (
    HISTORY_COLUMNS,
    THROTTLE_REASONS,
    GpuSampler,
    decode_throttle_reasons,
    describe_init_error,
    pid_to_gpu,
)
from jupyter_ptcuda_testing.nvml import make_fake_nvml

GPU_FIELDS = {
    "index", "uuid", "name", "state", "compute_capability", "mig_mode", "utilization_gpu",
    "utilization_memory", "memory_used", "memory_total", "temperature_c", "power_w", "power_limit_w",
    "clock_sm_mhz", "clock_mem_mhz", "throttle_reasons", "ecc_volatile_uncorrected", "processes",
}


class StepClock:
    """Advances by one second each call: sampler timestamps and fake NVML values move."""

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def sampler_for(spec: str, **kwargs) -> tuple[GpuSampler, object]:
    clock = StepClock()
    nvml = make_fake_nvml(spec, clock=clock)
    return GpuSampler(nvml, clock=clock, **kwargs), nvml


def test_real_pynvml_on_this_host_is_unavailable_with_a_reason_not_an_exception():
    sampler = GpuSampler()  # nvml=None: imports the real pynvml
    sampler.sample_once()
    snap = sampler.snapshot()
    if ctypes.util.find_library("nvidia-ml") is None:
        assert snap["state"] == "unavailable"
        assert "NVMLError_LibraryNotFound" in snap["reason"]
        assert snap["gpus"] == []
    else:  # a host with a driver: whatever it says, it says it without raising
        assert snap["state"] in ("ok", "unavailable")
    sampler.stop()


def test_ensure_started_returns_at_once_and_the_thread_reports_unavailable():
    sampler = GpuSampler(make_fake_nvml("driver_not_loaded"), interval=0.01)
    started = time.monotonic()
    sampler.ensure_started()
    sampler.ensure_started()  # idempotent
    assert time.monotonic() - started < 0.5
    assert sampler.wait_ready(5)
    snap = sampler.snapshot()
    assert snap["state"] == "unavailable"
    assert snap["reason"] == ("NVIDIA driver not loaded (NVMLError_DriverNotLoaded): "
                              "this host has no usable NVIDIA GPU")
    sampler.stop()
    assert not any(t.name == "ptcuda-gpu-sampler" and t.is_alive() for t in threading.enumerate())


def test_library_not_found_and_missing_pynvml_reasons():
    sampler, _ = sampler_for("library_not_found")
    sampler.sample_once()
    assert sampler.state == "unavailable"
    assert "libnvidia-ml.so.1 not found (NVMLError_LibraryNotFound)" in sampler.reason
    assert "pip install nvidia-ml-py" in describe_init_error(ImportError("No module named 'pynvml'"))


def test_two_gpus_sampled_and_history_grows():
    sampler, nvml = sampler_for("2:model=H100+L4")
    for _ in range(3):
        sampler.sample_once()
    snap = sampler.snapshot()
    assert snap["state"] == "ok" and snap["reason"] is None
    assert snap["driver_version"] == "550.54.15" and snap["cuda_driver_version"] == "12.4"
    assert [g["name"] for g in snap["gpus"]] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    gpu0 = snap["gpus"][0]
    assert set(gpu0) == GPU_FIELDS
    assert gpu0["state"] == "ok" and gpu0["mig_mode"] == "disabled" and gpu0["compute_capability"] == "9.0"
    assert gpu0["memory_total"] == 80 << 30 and 0 <= gpu0["utilization_gpu"] <= 100
    assert gpu0["power_limit_w"] == 700.0 and isinstance(gpu0["power_w"], float)
    assert snap["gpus"][1]["mig_mode"] is None  # L4: MIG not supported
    history = sampler.history()
    assert list(history) == [g["uuid"] for g in snap["gpus"]]
    for series in history.values():
        assert set(series) == set(HISTORY_COLUMNS)
        assert all(len(col) == 3 for col in series.values())
        assert series["t"] == sorted(series["t"])
    assert len(set(history[gpu0["uuid"]]["util"])) > 1  # values move over time


def test_gpu_lost_marks_one_gpu_while_the_other_keeps_sampling():
    sampler, nvml = sampler_for("2")
    sampler.sample_once()
    nvml.set_lost(1)
    sampler.sample_once()
    sampler.sample_once()
    snap = sampler.snapshot()
    assert snap["state"] == "ok"
    ok, lost = snap["gpus"]
    assert ok["state"] == "ok"
    assert lost["state"] == "lost" and lost["uuid"] and "NVMLError_GpuIsLost" in lost["reason"]
    history = sampler.history()
    assert len(history[ok["uuid"]]["t"]) == 3
    assert len(history[lost["uuid"]]["t"]) == 1


def test_gpu_lost_from_the_start_and_recovering():
    sampler, nvml = sampler_for("2:gpu_lost=0")
    sampler.sample_once()
    snap = sampler.snapshot()
    assert snap["gpus"][0] == {"index": 0, "uuid": None, "name": None, "state": "lost",
                               "reason": snap["gpus"][0]["reason"]}
    assert snap["gpus"][1]["state"] == "ok"
    nvml.set_lost(0, False)
    sampler.sample_once()
    gpu0 = sampler.snapshot()["gpus"][0]
    assert gpu0["state"] == "ok" and gpu0["uuid"].startswith("GPU-")


def test_not_supported_fields_are_none():
    sampler, _ = sampler_for("1:model=RTX4090,not_supported=power+temperature+processes")
    sampler.sample_once()
    gpu = sampler.snapshot()["gpus"][0]
    assert gpu["state"] == "ok"
    for field in ("ecc_volatile_uncorrected", "mig_mode", "power_w", "temperature_c", "processes"):
        assert gpu[field] is None, field
    assert gpu["power_limit_w"] == 450.0
    history = next(iter(sampler.history().values()))
    assert history["power"] == [None] and history["temp"] == [None]


def test_processes_and_pid_to_gpu():
    sampler, nvml = sampler_for("2")
    nvml.set_processes(0, [(100, 2 << 30), (200, None)])
    nvml.set_processes(1, [(100, 1 << 30)])
    sampler.sample_once()
    snap = sampler.snapshot()
    assert snap["gpus"][0]["processes"] == [{"pid": 100, "used_memory": 2 << 30}, {"pid": 200, "used_memory": None}]
    uuids = [g["uuid"] for g in snap["gpus"]]
    assert pid_to_gpu(snap) == {100: uuids, 200: [uuids[0]]}
    assert pid_to_gpu({"state": "unavailable", "gpus": []}) == {}


def test_snapshot_and_history_make_no_nvml_call_and_return_copies():
    sampler, nvml = sampler_for("2")
    nvml.set_processes(0, [(1, 10)])
    sampler.sample_once()
    calls = nvml.calls
    snap = sampler.snapshot()
    snap["gpus"][0]["processes"][0]["container"] = "mutated by a caller"
    snap["gpus"].clear()
    sampler.history()["x"] = {}
    assert nvml.calls == calls
    again = sampler.snapshot()
    assert len(again["gpus"]) == 2 and "container" not in again["gpus"][0]["processes"][0]


def test_history_ring_buffer_since_and_max_points():
    sampler, _ = sampler_for("1", interval=1.0, history_seconds=5)
    for _ in range(8):
        sampler.sample_once()
    (series,) = sampler.history().values()
    assert len(series["t"]) == 5  # ring buffer of history_seconds / interval samples
    newest = series["t"][-1]
    assert sampler.history(since=newest) == {k: {c: [] for c in HISTORY_COLUMNS} for k in sampler.history()}
    (recent,) = sampler.history(since=series["t"][2]).values()
    assert recent["t"] == series["t"][3:]
    (thin,) = sampler.history(max_points=2).values()
    assert len(thin["t"]) == 2 and thin["t"][-1] == newest
    assert all(len(col) == 2 for col in thin.values())


def test_four_gpus_full_hour_of_history():
    sampler, _ = sampler_for("4", interval=1.0, history_seconds=3600)
    for _ in range(3605):
        sampler.sample_once()
    history = sampler.history()
    assert len(history) == 4 and all(len(s["t"]) == 3600 for s in history.values())
    assert all(len(s["t"]) == 300 for s in sampler.history(max_points=300).values())
    last = next(iter(history.values()))["t"][-2]
    assert all(len(s["t"]) == 1 for s in sampler.history(since=last).values())


def test_nvml_going_away_mid_flight_becomes_unavailable_then_recovers():
    sampler, nvml = sampler_for("1")
    sampler.sample_once()
    nvml.nvmlShutdown()  # someone else shut NVML down: calls raise Uninitialized
    sampler.sample_once()
    assert sampler.state == "unavailable" and "NVMLError_Uninitialized" in sampler.reason
    sampler.sample_once()  # re-initialises
    assert sampler.state == "ok"


def test_thread_samples_with_the_fake_and_stop_shuts_nvml_down():
    nvml = make_fake_nvml("2")
    sampler = GpuSampler(nvml, interval=0.01)
    sampler.ensure_started()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and min((len(s["t"]) for s in sampler.history().values()), default=0) < 3:
        time.sleep(0.01)
    assert all(len(s["t"]) >= 3 for s in sampler.history().values())
    sampler.stop()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nvml.nvmlDeviceGetCount()


def test_throttle_bits_match_pynvml():
    names = {
        "gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
        "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
        "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
        "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting",
    }
    for bit, name in THROTTLE_REASONS:
        assert getattr(pynvml, "nvmlClocksEventReason" + names[name]) == bit
    assert decode_throttle_reasons(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x10000) == ["other_0x10000"]


@given(samples=st.integers(0, 14), lost_at=st.none() | st.integers(0, 14), since_pick=st.none() | st.integers(-1, 15),
       max_points=st.none() | st.integers(1, 12))
@settings(max_examples=150, deadline=None)
def test_history_json_is_the_history_encoded(samples, lost_at, since_pick, max_points):
    """What GET gpus sends (joined from values encoded when sampled) is what history() returns,
    for any ring-buffer fill, since, thinning, a GPU lost half-way, and unsupported fields (null)."""
    sampler, nvml = sampler_for("2:not_supported=power", interval=1.0, history_seconds=10)
    for i in range(samples):
        if i == lost_at:
            nvml.set_lost(1)
        sampler.sample_once()
    ts = next(iter(sampler.history().values()), {}).get("t", [])
    since = None if since_pick is None else (ts[since_pick] if 0 <= since_pick < len(ts) else 1_700_000_000.0 + since_pick + 0.5)
    assert json.loads(sampler.history_json(since, max_points)) == sampler.history(since, max_points)
