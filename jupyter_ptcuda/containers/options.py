"""ContainerOptions: the container-shaping traits (``c.ContainerOptions.x``), shared by kernels (the
provisioner), jobs (``c.JobOptions``) and health checks, and the way they become a spec: a
:class:`~.build.Request` + the operator's :class:`~.build.Policy` + this server's
:class:`~.identity.Identity`, through the one pure :func:`~.build.build`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..errors import ConfigError
from .build import Policy, Request, build
from .gpus import parse_gpus
from .identity import ISOLATED_GID, ISOLATED_UID, Identity, container_user, this_server
from .policy import ContainerPolicy
from .spec import DEFAULT_ENV_ALLOWLIST, ContainerSpec, Mount, SpecFile, parse_cpus, parse_mounts, parse_size

#: The kernel image ``jupyter ptcuda image build`` makes by default, and the default of ``image``.
DEFAULT_TAG = "jupyter-ptcuda/pytorch-kernel:latest"


def _as_trait_error(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except ConfigError as exc:
        raise TraitError(exc.message) from None


class ContainerOptions(LoggingConfigurable):
    """The container-shaping traits, shared by the provisioner and batch jobs (mixin for Configurables)."""

    image = Unicode(DEFAULT_TAG, config=True, help=f"""Kernel image (default {DEFAULT_TAG!r}).
        Build one with `jupyter ptcuda image build`. Example: c.DockerProvisioner.image = "my/torch:kernel" """)
    gpus = AnyTrait("all", config=True, help="""GPUs: 'all' (default), a count (2), device indexes or
        UUIDs (["0", "GPU-5a3f..."]), or 'none'. Example: c.DockerProvisioner.gpus = 1""")
    gpu_fallback = CaselessStrEnum(["error", "cpu"], "error", config=True, help="""What to do when GPUs
        are requested but the engine has no NVIDIA runtime: 'error' (default: the kernel fails to start,
        saying how to fix it) or 'cpu' (start without GPUs and log a warning).""")
    shm_size = AnyTrait("2g", config=True, help="""/dev/shm size (default '2g'; Docker's 64 MB breaks
        DataLoader workers). Example: c.DockerProvisioner.shm_size = "16g" """)
    mem_limit = AnyTrait(None, allow_none=True, config=True, help="Memory limit, e.g. '32g' (default: none).")
    cpus = AnyTrait(None, allow_none=True, config=True, help="CPU limit, e.g. 8 (default: none).")
    pids_limit = Int(4096, config=True, help="Process limit (default 4096; 0 = none).")
    mounts: List[Any] = List(config=True, help="""Extra bind mounts, 'SRC:DST[:ro]' (default none). The notebook's
        directory is always mounted at its own path. Example: c.DockerProvisioner.mounts = ["/data:/data:ro"]""")
    env_allowlist = List(Unicode(), list(DEFAULT_ENV_ALLOWLIST), config=True, help=f"""Names (fnmatch
        patterns) of server environment variables passed to the kernel (default {list(DEFAULT_ENV_ALLOWLIST)}).
        Nothing else from the server's environment reaches the container; the kernelspec's own `env`
        is always passed. Example: c.DockerProvisioner.env_allowlist = ["LANG", "WANDB_*"]""")
    unprivileged_uid = Int(None, allow_none=True, config=True, help=f"""uid for containers when the server
        runs as root. Default (None): the owner of the notebook's folder, with the folder's group, so
        files are the user's own; when root owns the folder (or none is mounted), {ISOLATED_UID}:{ISOLATED_GID},
        a uid no host account holds. A non-root server always runs containers as its own uid:gid.
        Set a uid only if no other local user holds it (whoever holds it can read the kernel's memory and
        signal it). Example: c.ContainerOptions.unprivileged_uid = 2000""")
    unprivileged_gid = Int(100, config=True, help="gid paired with an explicit unprivileged_uid (default 100).")
    allow_root = Bool(False, config=True, help="""Run the kernel as root when the server runs as root
        (default False: see unprivileged_uid).""")
    transport = CaselessStrEnum(["ipc", "tcp"], "ipc", config=True, help="""How the server reaches the kernel:
        'ipc' (default): Unix sockets in the kernel's private folder (0700, owned by the kernel's uid,
        bind-mounted at the same path); no port, nothing another local user can connect to.
        'tcp': five ports published on 127.0.0.1, UNENCRYPTED: every local user can connect to them
        and read the kernel's output on iopub (loopback is not private on a shared host); only for a
        single-user machine. Example: c.DockerProvisioner.transport = "tcp" """)
    network_mode = CaselessStrEnum(["bridge", "host", "none", "shared"], "bridge", config=True, help="""'shared':
        the kernels of this server join one network namespace held by a small per-server container
        (outbound access, isolated from the host network; implies transport 'ipc'; fastest isolated start).
        'bridge' (default):
        kernel ports are published on 127.0.0.1 only. 'host': the kernel shares the host network and
        binds 127.0.0.1 itself (lower latency, no port proxy).""")

    @validate("gpus")
    def _v_gpus(self, proposal: Any) -> Any:
        _as_trait_error(parse_gpus, proposal["value"])
        return proposal["value"]

    @validate("shm_size", "mem_limit")
    def _v_size(self, proposal: Any) -> Any:
        _as_trait_error(lambda v: parse_size(v, proposal["trait"].name), proposal["value"])
        return proposal["value"]

    @validate("cpus")
    def _v_cpus(self, proposal: Any) -> Any:
        _as_trait_error(parse_cpus, proposal["value"])
        return proposal["value"]

    @validate("mounts")
    def _v_mounts(self, proposal: Any) -> Any:
        _as_trait_error(parse_mounts, proposal["value"])
        return proposal["value"]

    @validate("pids_limit")
    def _v_pids(self, proposal: Any) -> Any:
        if proposal["value"] < 0:
            raise TraitError(f"pids_limit={proposal['value']}: must be 0 (no limit) or positive.")
        return proposal["value"]

    def container_user(self, workdir: str | None = None, identity: Identity | None = None) -> str:
        """uid:gid a container with ``workdir`` mounted runs as (see ``unprivileged_uid``/``allow_root``)."""
        return container_user(identity or this_server(), workdir, allow_root=self.allow_root,
                              uid=self.unprivileged_uid, gid=self.unprivileged_gid)

    def policy(self, configured: Iterable[str] | None = None) -> Policy:
        """The operator's policy for these options: the configured images (``configured``, default this
        image), ``c.ContainerPolicy`` (allowlist, mount roots), root only with ``allow_root``."""
        cp = ContainerPolicy(parent=self)
        images = tuple(dict.fromkeys(i for i in (configured if configured is not None else [self.image]) if i))
        return Policy(images=images, image_patterns=tuple(cp.allowed_images), allow_built_images=cp.allow_built_images,
                      mount_roots=tuple(cp.mount_roots), allow_root=self.allow_root)

    def request(self, *, kind: str, command: list[str], workdir: str | None, env: Mapping[str, str], id: str = "",
                notebook: str = "", mount_workdir: bool = True, user: str | None = None,
                image_labels: Mapping[str, str] | None = None, **kernel_only: Any) -> Request:
        """The request these options make for a container of ``kind`` (``kernel_only``: ports, files,
        private_dir)."""
        return Request(
            kind=kind, image=self.image, command=tuple(command),
            run_as=user or self.container_user(workdir if mount_workdir else None),
            workdir=workdir, mount_workdir=mount_workdir and workdir is not None, gpus=parse_gpus(self.gpus),
            mounts=parse_mounts(self.mounts), env=dict(env), shm_size=parse_size(self.shm_size, "shm_size"),
            mem_limit=parse_size(self.mem_limit, "mem_limit"), cpus=parse_cpus(self.cpus),
            pids_limit=self.pids_limit or None, network_mode=self.network_mode, id=id, notebook=notebook,
            image_labels=image_labels, **kernel_only)

    def base_spec(self, *, kind: str, command: list[str], workdir: str | None, env: Mapping[str, str],
                  configured: Iterable[str] | None = None, identity: Identity | None = None,
                  **request: Any) -> ContainerSpec:
        """The ContainerSpec for these options: :func:`~.build.build` of :meth:`request` under :meth:`policy`.

        ``workdir`` (the notebook's directory) is bind-mounted at its own path unless ``mount_workdir``
        is False (one-off health containers) or it is None (kernels started without a folder)."""
        return build(self.request(kind=kind, command=command, workdir=workdir, env=env, **request),
                     self.policy(configured), identity or this_server())


__all__ = ["ISOLATED_GID", "ISOLATED_UID", "ContainerOptions", "Mount", "SpecFile"]
