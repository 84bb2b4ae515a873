"""GPU telemetry: a background NVML sampler and a faithful fake NVML for GPU-less hosts.

- :mod:`.sampler` — :class:`GpuSampler` (thread, cached snapshot and history), :func:`pid_to_gpu`.
- :mod:`.fake` — :class:`FakeNvml` and :func:`make_fake_nvml` (``$JUPYTER_PTCUDA_FAKE_NVML``).

Importing this package imports neither ``pynvml`` nor the fake; the sampler imports ``pynvml``
lazily on its own thread.
"""

from .sampler import GpuSampler, decode_throttle_reasons, pid_to_gpu

__all__ = ["GpuSampler", "decode_throttle_reasons", "pid_to_gpu"]
