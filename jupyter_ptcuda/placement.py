"""Where a kernel runs, as the provisioner reaches it: one strategy per placement the backend declares
(:attr:`~.containers.base.ContainerService.kernel_placement`), asked for once by :func:`placement_for`.

- :class:`HostPlacement` ("local": Docker, or the JupyterHub broker's engine) — the kernel's container is on
  this host: Unix sockets in its private folder (``transport="ipc"``, the default), or five ports published
  on loopback; its image is checked (and pulled) first; interrupts are signals.
- :class:`PodPlacement` ("pod": Kubernetes) — the kernel listens on its pod's own IP, fixed ports, CurveZMQ
  (:mod:`.containers.kube.kernels`); interrupts go over the control channel (no ``pods/exec``).

The provisioner (:class:`~.provisioner.DockerProvisioner`) calls only these methods: none of its methods
asks which backend it runs on. Callers: the provisioner's ``pre_launch``, ``launch_kernel`` and
``send_signal``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from .containers import labels as L
from .containers.base import ContainerService
from .containers.spec import ContainerSpec
from .errors import LaunchError
from .notices import QueuedKernel


class Starting(Protocol):
    """What a placement reads of the provisioner that starts the kernel (its own collaborator)."""

    @property
    def service(self) -> ContainerService: ...

    kernel_id: Any
    gpu_fallback: str
    gpu_resource: str
    launch_timeout: float
    connection_info: Any
    parent: Any
    _spec: ContainerSpec
    _kernel_ip: str | None

    async def _ensure_image(self, image: str) -> None: ...

    def _clear_markers(self) -> None: ...

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")


class HostPlacement:
    """A kernel whose container is on this host."""

    #: Whether a private ipc folder may carry the kernel's sockets (Unix sockets need the same host).
    ipc = True
    #: Whether free ports of this host are chosen for the kernel (tcp transport).
    local_ports = True

    def connect(self, km: Any, ipc_dir: Path | None) -> None:
        """Set the KernelManager's transport and address before its connection file is written."""
        if ipc_dir is not None:  # socket files <ipc_dir>/kernel-<n>; jupyter_client picks free suffixes
            km.transport, km.ip = "ipc", str(ipc_dir / "kernel")
        else:
            km.transport, km.ip = "tcp", "127.0.0.1"

    def ports(self, connection_info: Any) -> dict[int, int]:
        """The container ports published on this host's loopback (tcp, bridge network)."""
        return {int(connection_info[p]): int(connection_info[p]) for p in PORT_NAMES}

    def bind_ip(self, network_mode: str) -> str:
        """Where the kernel binds inside its container (tcp): every interface of a bridge network (only the
        published loopback ports reach it), else loopback."""
        return "0.0.0.0" if network_mode == "bridge" else "127.0.0.1"

    async def launch(self, prov: Starting) -> tuple[str, ContainerSpec, str | None]:
        """Check (and pull) the image, then start the container: ``(id, spec, the CPU fallback's reason)``.
        Where its GPUs are held it waits in the GPU queue (the allocation layer) up to ``launch_timeout``, and
        JupyterLab hears its place (a ``kernel_pending`` notice, :class:`~.notices.QueuedKernel`)."""
        await prov._ensure_image(prov._spec.image)
        await asyncio.to_thread(prov._clear_markers)
        told = QueuedKernel(str(prov.kernel_id), prov._spec.labels.get(L.NOTEBOOK) or None, prov.launch_timeout)
        try:
            cid, spec, fell_back = await asyncio.wait_for(
                prov.service.launch(prov._spec, claim=str(prov.kernel_id), gpu_fallback=prov.gpu_fallback,
                                    on_pending=told.waiting), prov.launch_timeout)
        except TimeoutError:
            for left in await prov.service.list(L.KERNEL, id=str(prov.kernel_id)):  # given up while it was created
                await prov.service.remove(left.id)
            message = (f"no GPU freed up within launch_timeout={prov.launch_timeout:.0f} s ({prov._spec.gpus.label()} "
                       "asked for): start it again later, ask for fewer GPUs, or stop a kernel or job that holds one.")
            told.failed(message)
            raise LaunchError(message) from None
        except BaseException as exc:
            told.failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        told.started()
        return cid, spec, fell_back

    def interrupt(self, km: Any) -> bool:
        """False: an interrupt is a SIGINT to the container's init process (which forwards it)."""
        return False


class PodPlacement(HostPlacement):
    """A kernel in a pod of its own: its IP, fixed ports, CurveZMQ; no signals into it."""

    ipc = False
    local_ports = False

    def connect(self, km: Any, ipc_dir: Path | None) -> None:
        from .containers.kube.kernels import prepare_connection

        prepare_connection(km)  # the pod's own ports on its IP, CurveZMQ (its IP is known once it runs)

    def ports(self, connection_info: Any) -> dict[int, int]:
        return {}

    def bind_ip(self, network_mode: str) -> str:
        return "0.0.0.0"  # the pod's own network namespace: the server connects to its IP

    async def launch(self, prov: Starting) -> tuple[str, ContainerSpec, str | None]:
        """Start the pod and wait until it runs; the connection info then points at its IP."""
        from .containers.kube.kernels import launch_pod

        cid, spec, ip = await launch_pod(prov.service, prov._spec, str(prov.kernel_id), prov.gpu_resource)
        prov.connection_info["ip"] = prov._kernel_ip = ip
        if prov.parent is not None:  # the pod may have the last one's IP: jupyter_client compares with it
            prov.parent.ip = ip
        return cid, spec, None

    def interrupt(self, km: Any) -> bool:
        """An ``interrupt_request`` on the control channel (signals would need pods/exec)."""
        from .containers.kube.kernels import interrupt

        interrupt(km)
        return True


def placement_for(service: ContainerService) -> HostPlacement:
    """The placement strategy of ``service``'s kernels, from its declared ``kernel_placement``."""
    return PodPlacement() if service.kernel_placement == "pod" else HostPlacement()
