"""Where the container service's names used to live, kept so existing imports work: the interface is
:mod:`.base`, the value types :mod:`.types`, the backends ``docker/``, ``kube/`` and ``remote/``, the choice
among them :mod:`.factory`."""

from .base import ContainerService
from .factory import ContainerBackend, get_service
from .types import DEADLINE_STATUS, ContainerState, ImageInfo, Launched

__all__ = ["DEADLINE_STATUS", "ContainerBackend", "ContainerService", "ContainerState", "ImageInfo", "Launched",
           "get_service"]
