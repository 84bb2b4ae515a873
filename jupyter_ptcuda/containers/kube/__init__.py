"""The Kubernetes backend of the container service: :mod:`.pods` (the pure pod/Job builder),
:mod:`.options` (``c.KubeBackend.*``), :mod:`.backend` (:class:`~.backend.KubeContainerService`, the only
module that imports ``kubernetes_asyncio``, an optional dependency: ``pip install "jupyter-ptcuda[kubernetes]"``).
"""

from typing import Any


def is_kube(service: Any) -> bool:
    """Whether ``service`` is the Kubernetes backend (jobs and health checks ask it differently: see
    ``jobs.manager`` and ``health.runner``). Imports nothing of kubernetes_asyncio."""
    from .backend import KubeContainerService

    return isinstance(service, KubeContainerService)
