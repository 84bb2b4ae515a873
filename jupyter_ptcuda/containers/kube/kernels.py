"""Kernels as pods: what the provisioner (:class:`~jupyter_ptcuda.provisioner.DockerProvisioner`) does
differently on the Kubernetes backend. The rest of its lifecycle (connection file, spec, heartbeat,
poll, kill/terminate, cleanup) is the same code as for Docker.

- **Where it listens**: the kernel binds ``0.0.0.0`` inside its pod on fixed ports (:data:`PORTS`: the
  pod has its own network namespace); the server connects to the pod's IP, read from the pod's status
  once it runs (:meth:`~.backend.KubeContainerService.address`).
- **How the connection info gets there**: the container's connection file is a spec file, which the
  backend puts in a Secret owned by the pod (deleted with it) and mounts read-only at
  ``/run/ptcuda``: it travels only through the Kubernetes API. No home-made crypto.
- **Encryption**: pod traffic crosses nodes, so every channel uses CurveZMQ (jupyter_client ≥ 8.9's
  ``curve_publickey``/``curve_secretkey``, read by ipykernel ≥ 7.3): the kernel is the Curve server, the
  server's sockets (jupyter_client's, and the heartbeat's here) authenticate it by its public key.
  Always on here, whatever ``KernelManager.transport_encryption`` says.
- **Interrupts**: signals would need ``pods/exec`` (not in the Role), so SIGINT becomes an
  ``interrupt_request`` on the control channel (what interrupt_mode "message" does).

Callers: the provisioner, when :func:`~..service.get_service` is the Kubernetes backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...errors import LaunchError, PtcudaError
from ...notices import PendingKernel
from .. import labels as L
from ..spec import ContainerSpec

#: The kernel's ports inside its pod (its own network namespace: nothing else binds there).
PORTS = {"shell_port": 50001, "iopub_port": 50002, "stdin_port": 50003, "hb_port": 50004, "control_port": 50005}


def prepare_connection(km: Any) -> None:
    """Set the KernelManager up for a kernel pod (called by ``pre_launch``): tcp on :data:`PORTS`, a
    CurveZMQ keypair (kept across restarts, like the session key). The IP is the pod's, known once it
    runs (``launch_kernel`` returns it; jupyter_client then rewrites the connection file)."""
    import zmq

    if not zmq.has("curve"):
        raise LaunchError("kernels on Kubernetes use CurveZMQ, and this pyzmq's libzmq has no CURVE support: "
                          "install a pyzmq wheel from PyPI (`pip install --force-reinstall pyzmq`).")
    km.transport, km.ip = "tcp", "127.0.0.1"  # until the pod has its IP
    for name, port in PORTS.items():
        setattr(km, name, port)
    if km.curve_publickey is None or km.curve_secretkey is None:
        km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()


async def launch_pod(service: Any, spec: ContainerSpec, kernel_id: str, gpu_resource: str = ""
                     ) -> tuple[str, ContainerSpec, str]:
    """Start kernel ``kernel_id``'s pod (and its Secret) from ``spec`` and wait until it runs: ``(pod, spec,
    pod IP)``. ``gpu_resource``: the provisioner's (``""``: the backend's default). A pod that stays Pending
    fails with the scheduler's reason (the backend deletes it); one that ended already fails with its exit
    code and log; either way nothing is left behind. While the pod waits for a node, the user is told in
    JupyterLab (a ``kernel_pending`` notice: :mod:`jupyter_ptcuda.notices`). Called by the provisioner's
    ``launch_kernel``. ``service``: the Kubernetes backend (its launch's gpu_resource/on_pending, options,
    address())."""
    svc = service
    told = PendingKernel(kernel_id, spec.labels.get(L.NOTEBOOK) or None, svc.options.launch_timeout)
    try:
        launched = await svc.launch(spec, claim=kernel_id, gpu_resource=gpu_resource or None,
                                    on_pending=told.waiting)
    except BaseException as exc:
        told.failed(_why(exc))
        raise
    pod = launched.id
    try:
        state = await svc.inspect(pod)
        if state is None or not state.running:
            try:
                logs = await svc.logs(pod, tail=40)
            except PtcudaError:  # gone, or never started (an init container failed): no log
                logs = ""
            raise svc.describe_exit(state, logs, f"kernel pod {pod} (image {launched.spec.image}) stopped during start-up")
        address = await svc.address(pod)
    except BaseException as exc:
        told.failed(_why(exc))
        await svc.remove(pod)
        raise
    told.started()
    return pod, launched.spec, address


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the start was cancelled."
    return exc.message if isinstance(exc, PtcudaError) else str(exc) or type(exc).__name__


def interrupt(km: Any) -> None:
    """Interrupt the kernel through its control channel (``interrupt_request``, as interrupt_mode
    "message" does), for a SIGINT that cannot reach a pod. Over a control socket of its own, made with the
    KernelManager's public ``connect_control`` (CurveZMQ keys included); closed at once: its linger (1 s,
    set by jupyter_client) still delivers the request. Nobody reads the reply (jupyter_client's own
    interrupt does not either)."""
    sock = km.connect_control()
    try:
        km.session.send(sock, km.session.msg("interrupt_request", content={}))
    finally:
        sock.close()
