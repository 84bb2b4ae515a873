"""GPU telemetry: a background NVML sampler, and which NVML it reads.

- :mod:`.sampler` — :class:`GpuSampler` (thread, cached snapshot and history), :func:`pid_to_gpu`.
- :func:`nvml_from_config` — the NVML a server's or broker's ``nvml`` setting names: the real one
  (nvidia-ml-py's ``pynvml``), or the fake of the testing package (:mod:`jupyter_ptcuda_testing.nvml`) when
  the configuration says ``fake:SPEC`` explicitly -- logged, never chosen by an environment variable.

Importing this package imports neither ``pynvml`` nor the fake; the sampler imports ``pynvml``
lazily on its own thread.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..errors import ConfigError
from .sampler import GpuSampler, decode_throttle_reasons, pid_to_gpu

__all__ = ["GpuSampler", "decode_throttle_reasons", "nvml_from_config", "pid_to_gpu"]

#: Where the fake lives: loaded by name, only when a configuration asks for it.
FAKE_MODULE = "jupyter_ptcuda_testing.nvml"


def nvml_from_config(setting: str, trait: str, log: logging.Logger | logging.LoggerAdapter) -> Any:
    """The NVML for ``setting`` (the value of config ``trait``, e.g. ``"c.PtcudaBroker.nvml"``): None for ""
    (the sampler loads the real ``pynvml``), the fake NVML for ``"fake:SPEC"``, with a warning in ``log``
    that its GPUs are simulated. ConfigError for anything else, or a bad SPEC. Called by the server
    extension and the broker when they make their sampler, and by ``jupyter ptcuda gpus --nvml``."""
    text = (setting or "").strip()
    if not text:
        return None
    if not text.startswith("fake:"):
        raise ConfigError(f"{trait} = {setting!r}: give \"\" (the GPUs' own NVML, the default) or \"fake:SPEC\" "
                          "(simulated GPUs for tests and demos, e.g. \"fake:2\").")
    try:
        fake = importlib.import_module(FAKE_MODULE)
    except ImportError as exc:
        raise ConfigError(f"{trait} = {setting!r} names the fake NVML, which lives in {FAKE_MODULE} ({exc}): "
                          "install jupyter-ptcuda with it, or set it to \"\" for the real NVML.") from None
    nvml = fake.make_fake_nvml(text[len("fake:"):])
    log.warning("jupyter-ptcuda: %s = %r: the FAKE NVML -- these GPUs and their numbers are simulated, not "
                "read from any GPU (a setting for tests and demos).", trait, setting)
    return nvml
