"""``--from-kernel``: a job in the same container configuration as a running kernel.

:func:`spec_from_container` is the inverse of :func:`jupyter_ptcuda.spec.build_create_kwargs`: it turns
``docker inspect`` output back into the :class:`~jupyter_ptcuda.spec.ContainerSpec` the container was
created from (unit-tested as a round trip). :func:`job_spec_from_kernel` then keeps what makes the
kernel's environment (image, user, mounts, env, GPUs, limits, network) and drops what made it a kernel
(ports, the connection file and the private ipc folder — label ``kernel-dir`` —, the kernel id, its
labels, its command: nothing that would let a job drive the kernel).

Callers: ``JobManager.submit`` — with the kernel's provisioner ``_spec`` when the server manages the
kernel, else (CLI) with :func:`spec_from_container` of the container found by
:func:`find_kernel_container` (label ``io.jupyter-ptcuda.kernel-id``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .. import spec as S
from ..engine import Engine
from ..errors import NotFound

#: Where the provisioner mounts the kernel's connection file (not wanted in a job).
KERNEL_CONN_DIR = "/run/ptcuda"
#: Environment the provisioner sets for kernels only.
KERNEL_ONLY_ENV = ("JUPYTER_PTCUDA_KERNEL_ID", "HOME")


def _gpus_from_device_requests(requests: list[dict[str, Any]] | None) -> S.GpuRequest:
    for req in requests or []:
        caps = [c for group in req.get("Capabilities") or [] for c in group]
        if "gpu" not in caps:
            continue
        if req.get("DeviceIDs"):
            return S.GpuRequest("ids", ids=tuple(str(d) for d in req["DeviceIDs"]))
        count = int(req.get("Count") or 0)
        if count < 0:
            return S.GpuRequest("all")
        if count > 0:
            return S.GpuRequest("count", count=count)
    return S.GpuRequest()


def _parse_tmpfs_home(tmpfs: Mapping[str, str] | None) -> str | None:
    return next(iter(tmpfs), None) if tmpfs else None


def spec_from_container(inspect: Mapping[str, Any], image_config: Mapping[str, Any] | None = None) -> S.ContainerSpec:
    """The ContainerSpec a container was created from, read back from its ``docker inspect``.

    ``image_config``: the image's ``Config`` (``docker image inspect``). Docker merges the image's
    environment and labels into the container's; values identical to the image's are dropped, so the
    spec holds only what was asked for at create time. Without it they are kept (harmless: the same
    values would be set again).
    """
    config = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    home = env.pop("HOME", None) or _parse_tmpfs_home(host.get("Tmpfs")) or S.ContainerSpec.home
    labels = dict(config.get("Labels") or {})
    if image_config:
        image_env = dict(e.partition("=")[::2] for e in image_config.get("Env") or [])
        env = {k: v for k, v in env.items() if image_env.get(k) != v}
        image_labels = image_config.get("Labels") or {}
        labels = {k: v for k, v in labels.items() if image_labels.get(k) != v}
    mounts = []
    for bind in host.get("Binds") or []:
        parts = bind.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        mounts.append(S.Mount(parts[0], parts[1] if len(parts) > 1 else parts[0], "ro" in mode.split(",")))
    ports: dict[int, int] = {}
    bind_ip = S.ContainerSpec.bind_ip
    for cport, bindings in (host.get("PortBindings") or {}).items():
        for b in bindings or []:
            ports[int(cport.split("/")[0])] = int(b.get("HostPort") or 0)
            bind_ip = b.get("HostIp") or bind_ip
    ulimits = {u["Name"]: (int(u["Soft"]), int(u["Hard"])) for u in host.get("Ulimits") or []}
    nano = host.get("NanoCpus") or 0
    return S.ContainerSpec(
        image=config.get("Image") or "",
        command=tuple(config.get("Cmd") or ()),
        user=config.get("User") or "",
        workdir=config.get("WorkingDir") or "",
        home=home,
        env=env,
        labels=labels,
        mounts=tuple(mounts),
        gpus=_gpus_from_device_requests(host.get("DeviceRequests")),
        ports=ports,
        bind_ip=bind_ip,
        network_mode=host.get("NetworkMode") or "bridge",
        shm_size=host.get("ShmSize") or None,
        mem_limit=host.get("Memory") or None,
        cpus=nano / 1e9 if nano else None,
        pids_limit=host.get("PidsLimit") or None,
        ulimits=ulimits,
        name=(inspect.get("Name") or "").lstrip("/") or None,
        init=bool(host.get("Init")),
    )


async def find_kernel_container(engine: Engine, kernel_id: str) -> dict[str, Any]:
    """``docker inspect`` of the running container of kernel ``kernel_id`` (label lookup); NotFound."""
    found = await engine.containers({S.LABEL_KIND: "kernel", S.LABEL_KERNEL_ID: kernel_id}, all=False)
    if not found:
        found = [c for c in await engine.containers({S.LABEL_KIND: "kernel"}, all=False)
                 if (c.get("Labels") or {}).get(S.LABEL_KERNEL_ID, "").startswith(kernel_id)]
    if len(found) != 1:
        why = "is not running" if not found else "matches more than one kernel; give more of the id"
        raise NotFound(f"kernel {kernel_id!r} {why}: start it (open the notebook) or check the id with "
                       "`docker ps --filter label=io.jupyter-ptcuda.kind=kernel`.")
    info = await engine.inspect(found[0]["Id"])
    if info is None:
        raise NotFound(f"kernel {kernel_id!r}: its container went away.")
    return info


def job_spec_from_kernel(kernel: S.ContainerSpec, *, command: list[str], workdir: str, env: Mapping[str, str],
                         labels: Mapping[str, str], gpus: S.GpuRequest | None = None,
                         mem_limit: int | None = None) -> S.ContainerSpec:
    """A job spec in the kernel's configuration: same image, user, mounts, env, GPUs and limits.

    ``gpus``/``mem_limit`` override the kernel's when given. The job's ``workdir`` is mounted at its own
    path unless one of the kernel's mounts already provides it.
    """
    private = {KERNEL_CONN_DIR, kernel.labels.get(S.LABEL_KERNEL_DIR)} - {None, ""}
    mounts = tuple(m for m in kernel.mounts if m.target not in private and m.source not in private)
    if not any(m.source == m.target and (workdir == m.target or workdir.startswith(m.target.rstrip("/") + "/"))
               and not m.read_only for m in mounts):
        mounts += (S.Mount(workdir, workdir, False),)
    job_env = {k: v for k, v in kernel.env.items() if k not in KERNEL_ONLY_ENV}
    job_env.update(env)
    chosen = kernel.gpus if gpus is None else gpus
    # A shared-namespace kernel ("shared" before launch, "container:<holder>" after) gives its job a
    # namespace of its own with the same outbound access: a job outlives the server that holds the holder.
    network = "bridge" if kernel.network_mode == "shared" or kernel.network_mode.startswith("container:") \
        else kernel.network_mode
    return dataclasses.replace(
        kernel, command=tuple(command), workdir=workdir, env=job_env,
        labels={**labels, S.LABEL_GPUS: chosen.label()}, mounts=mounts, gpus=chosen, ports={}, name=None, files=(),
        network_mode=network,
        mem_limit=kernel.mem_limit if mem_limit is None else mem_limit,
    )
