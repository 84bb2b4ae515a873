"""The factory: the one place that chooses a backend (and so the one place that knows them all).

:func:`get_service` makes the process's backend once: the JupyterHub broker's client when
``$JUPYTER_PTCUDA_BROKER_URL`` is set (a Hub user's server), Kubernetes when ``c.ContainerBackend.backend
= "kubernetes"`` (or ``$JUPYTER_PTCUDA_BACKEND``), else this host's Docker engine. :func:`install_ledger`
wraps it, once, in the GPU allocation layer (:class:`~.allocating.AllocatingService`) unless the backend
assigns GPUs itself — the server extension calls it with its ledger.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import CaselessStrEnum, default
from traitlets.config import Configurable

from .base import ContainerService
from .ledger import GpuLedger

_service: ContainerService | None = None


class ContainerBackend(Configurable):
    """Which backend :func:`get_service` makes (read once, at the first call)."""

    backend = CaselessStrEnum(["docker", "kubernetes"], config=True, help="""Where containers run: 'docker'
        (default: this host's engine) or 'kubernetes' (pods in the server's namespace, c.KubeBackend.*).
        Default from $JUPYTER_PTCUDA_BACKEND. A broker URL ($JUPYTER_PTCUDA_BROKER_URL) wins over both.
        Example: c.ContainerBackend.backend = "kubernetes" """)

    @default("backend")
    def _default_backend(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_BACKEND", "").strip().lower() or "docker"


def make_service(config: Any = None) -> ContainerService:
    """A new backend as configuration and environment choose it (see the module docstring)."""
    url = os.environ.get("JUPYTER_PTCUDA_BROKER_URL")
    if config is None:
        from traitlets.config import Application

        config = Application.instance().config if Application.initialized() else None
    if url:
        from .remote.service import RemoteContainerService

        return RemoteContainerService(url)
    if ContainerBackend(config=config).backend == "kubernetes":
        from .kube.backend import get_kube_service

        return get_kube_service(config)
    from .docker.service import DockerContainerService

    return DockerContainerService()


def get_service(config: Any = None) -> ContainerService:
    """The process-wide backend (made by :func:`make_service` at the first call). ``config``: default, the
    running Jupyter application's (the server's ``jupyter_server_config.py``)."""
    global _service
    if _service is None:
        _service = make_service(config)
    return _service


def install_ledger(ledger: GpuLedger) -> ContainerService:
    """Put the process's backend behind ``ledger`` (the server extension, once, at start). A backend that
    assigns GPUs itself (:attr:`~.base.ContainerService.allocates_gpus`) is left as it is."""
    from .allocating import AllocatingService

    global _service
    service = get_service()
    inner = service.inner if isinstance(service, AllocatingService) else service
    _service = inner if inner.allocates_gpus else AllocatingService(inner, ledger)
    return _service


def uninstall_ledger() -> None:
    """Take the allocation layer out again (the server extension's stop); makes no backend."""
    from .allocating import AllocatingService

    global _service
    if isinstance(_service, AllocatingService):
        _service = _service.inner


def set_service(service: ContainerService | None) -> None:
    """Replace the process-wide backend (tests)."""
    global _service
    _service = service


async def close_service() -> None:
    """Close the process's backend's API client if one was made (a CLI command's event loop ends)."""
    if _service is not None:
        await _service.close()
