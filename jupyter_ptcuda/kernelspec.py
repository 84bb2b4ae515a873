"""Kernelspecs that select the DockerProvisioner (``jupyter ptcuda kernelspec install``)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config import Config

from .containers.base import ContainerService
from .errors import ConfigError
from .images import check_kernel_image
from .provisioner import DockerProvisioner

PROVISIONER_NAME = "ptcuda-docker-provisioner"
KERNEL_ARGV = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate provisioner options exactly as the provisioner will (its traits); ConfigError if bad."""
    known = set(DockerProvisioner.class_own_traits(config=True)) | set(
        DockerProvisioner.class_traits(config=True)
    )
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown kernelspec option(s) {unknown}; known options: {sorted(known - {'log_level'})}.")
    try:
        DockerProvisioner(config=Config(), **config)
    except Exception as exc:  # TraitError from our validators
        raise ConfigError(f"bad kernelspec option: {exc}") from None
    return config


def make_kernel_json(display_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "argv": KERNEL_ARGV,
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": config.pop("interrupt_mode", "signal"),
        "env": {},
        "metadata": {
            "debugger": False,
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": config},
        },
    }


def install_kernelspec(
    service: ContainerService | None,
    *,
    name: str = "ptcuda",
    display_name: str = "PyTorch (CUDA)",
    config: dict[str, Any],
    user: bool = False,
    prefix: str | None = None,
    check_image: bool = True,
) -> str:
    """Write the kernelspec; returns its directory. Refuses an image that cannot run a kernel."""
    config = dict(config)
    interrupt_mode = config.get("interrupt_mode", "signal")
    if interrupt_mode not in ("signal", "message"):
        raise ConfigError(f"interrupt_mode={interrupt_mode!r}: use 'signal' or 'message'.")
    validate_config({k: v for k, v in config.items() if k != "interrupt_mode"})
    if check_image and service is not None:
        asyncio.run(check_kernel_image(service, config.get("image") or DockerProvisioner().image))
    spec = make_kernel_json(display_name, config)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / name
        d.mkdir()
        (d / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(str(d), name, user=user, prefix=prefix)
