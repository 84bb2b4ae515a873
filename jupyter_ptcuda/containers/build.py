"""The pure builder: ``build(request, policy, identity) -> ContainerSpec``, for every kind we run.

- :class:`Request` — what a caller may ask: kind, image, command, GPUs, the notebook folder, extra
  mounts, env, limits (and, for kernels only, their private parts: ports, files, the ipc folder).
- :class:`Policy` — what the operator allows: images, mount roots, ceilings, root or not.
- :class:`~.identity.Identity` — who asks (owner uid:gid and name, the server's id).

:func:`build` checks the request against the policy (every refusal a :class:`~jupyter_ptcuda.errors.
Forbidden` or ConfigError that says what to do), writes the labels (:func:`.labels.make`) and returns
the spec; hardening (no capabilities, no-new-privileges, init, no privileged mode) is not a choice: it
is in :func:`.spec.build_create_kwargs`. No I/O here: tested by dict equality, like kubespawner's
``make_pod``. :func:`job_from_kernel` turns a kernel's spec into a job's request: same image, user,
GPUs, mounts, env and limits, and nothing private.

Callers: :class:`~.options.ContainerOptions` (kernels, jobs, health checks); images and the netns
holder build their own small requests.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
from collections.abc import Mapping

from ..errors import ConfigError, Forbidden
from . import labels as L
from . import policy as P
from .gpus import ALL, NONE, GpuRequest
from .identity import Identity
from .spec import ContainerSpec, Mount, SpecFile

#: Host paths never mounted: the Docker socket (root on the host) and the folders that hold it.
FORBIDDEN_SOURCES = ("/", "/var", "/var/run", "/run", "/proc", "/sys", "/dev", "/etc")
#: Environment the builder sets itself (a request's value is ignored).
RESERVED_ENV = ("HOME",)
#: Where a container's files (a kernel's connection file and supervisor) are placed before it starts: a
#: folder of the image's own filesystem that no mount may cover, so they never go through a bind mount
#: (the archive's folder entry would change the mounted host folder's owner and mode).
FILES_ROOT = "/run/ptcuda"
#: Kinds that run as the owner; ``probe``/``netns`` run as nobody whoever asks.
NOBODY = "65534:65534"


@dataclasses.dataclass(frozen=True)
class Request:
    """What a caller asks for. ``run_as`` is resolved by the caller from the identity and the policy
    (:func:`.identity.container_user`), never taken from a client; the builder checks it."""

    kind: str
    image: str
    command: tuple[str, ...]
    run_as: str = ""
    workdir: str | None = None  # the notebook's folder: mounted at its own path, the cwd
    mount_workdir: bool = True
    gpus: GpuRequest = NONE
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    shm_size: int | None = 2 * 1024**3
    mem_limit: int | None = None
    cpus: float | None = None
    pids_limit: int | None = 4096
    network_mode: str = "bridge"
    id: str = ""  # kernel, job or check id
    notebook: str = ""
    name: str | None = None
    image_labels: Mapping[str, str] | None = None  # the image's labels, when the policy needs them
    # kernel-only: never part of a job derived from the kernel (see job_from_kernel)
    ports: Mapping[int, int] = dataclasses.field(default_factory=dict)
    files: tuple[SpecFile, ...] = ()
    private_dir: str = ""  # the kernel's ipc folder: mounted at its own path, labelled kernel-dir


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the operator allows. ``source`` names the config that sets it, for refusals."""

    images: tuple[str, ...] = ()  # the configured images (always allowed)
    image_patterns: tuple[str, ...] = ()
    allow_built_images: bool = True
    mount_roots: tuple[str, ...] = ()  # () = anywhere but FORBIDDEN_SOURCES
    max_gpus: GpuRequest = ALL
    max_mem: int | None = None
    max_cpus: float | None = None
    allow_root: bool = False
    source: str = "c.ContainerPolicy"


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def check_mount(source: str, policy: Policy, what: str) -> str:
    """The normalised host path of a mount, or the refusal (the Docker socket, outside the roots)."""
    if not source.startswith("/"):
        raise ConfigError(f"{what} {source!r}: give an absolute host path.")
    path = posixpath.normpath(source)
    if path in FORBIDDEN_SOURCES or path.endswith("docker.sock") or any(
            fnmatch.fnmatchcase(path, f"{p}/docker.sock") for p in ("/var/run", "/run")):
        raise Forbidden(f"{what} {source!r} is never mounted into a container: it is (or holds) the Docker "
                        "socket or the host's system folders, which would give the notebook root on the host. "
                        "Mount a data folder instead, e.g. '/data:/data:ro'.", path=path)
    if policy.mount_roots and not any(_inside(path, r) for r in policy.mount_roots):
        raise Forbidden(f"{what} {source!r} is outside the folders that may be mounted "
                        f"({', '.join(policy.mount_roots)}): move it under one of them, or ask the operator to "
                        f"add a root ({policy.source}.mount_roots).", path=path)
    return path


def check_target(target: str) -> str:
    """A mount's path inside the container: absolute, normalised, not ``/`` and not over :data:`FILES_ROOT`."""
    path = posixpath.normpath(target) if target.startswith("/") else ""
    if not path or path == "/" or path != target.rstrip("/") or _inside(FILES_ROOT, path) or _inside(path, FILES_ROOT):
        raise ConfigError(f"mount target {target[:200]!r}: give an absolute, normalised path inside the container "
                          f"(not '/', and not {FILES_ROOT}, where the container's own files go), e.g. '/data'.")
    return path


def check_files(files: tuple[SpecFile, ...]) -> None:
    """Files are placed only under :data:`FILES_ROOT` (never through a mount), owner-only modes."""
    for f in files:
        path = posixpath.normpath(f.path) if f.path.startswith("/") else ""
        if posixpath.dirname(path) != FILES_ROOT or path != f.path or f.mode & ~0o700 or f.dir_mode != 0o700:
            raise ConfigError(f"container file {f.path[:200]!r}: files go directly in {FILES_ROOT} (e.g. "
                              f"{FILES_ROOT}/kernel.json), readable by the container's user only.")


def check_user(run_as: str, kind: str, policy: Policy, identity: Identity) -> str:
    """The uid:gid a container runs as: never root unless allowed, never another user's uid."""
    if kind in (L.PROBE, L.NETNS):
        return NOBODY
    uid, _, gid = run_as.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ConfigError(f"container user {run_as!r}: give numeric uid:gid.")
    if int(uid) == 0 and not policy.allow_root:
        raise Forbidden("a container would run as root: root is never used unless the operator allows it "
                        "(c.ContainerOptions.allow_root = True); leave the user to the server.")
    if not identity.is_root and int(uid) != identity.uid:
        raise Forbidden(f"uid {uid} is not yours ({identity.name} is uid {identity.uid}): a container runs as "
                        "the user who asks for it.")
    return f"{uid}:{gid or uid}"


def check_image(image: str, policy: Policy, labels: Mapping[str, str] | None) -> str:
    if not image:
        raise ConfigError("no image: set c.ContainerOptions.image or give one, e.g. 'jupyter-ptcuda/pytorch-kernel:latest'.")
    if not P.image_allowed(image, configured=policy.images, patterns=policy.image_patterns, labels=labels,
                           allow_built=policy.allow_built_images):
        if policy.source != Policy.source:  # the broker's own policy: one option says it all
            raise Forbidden(f"image {P.short(image, 200)} is not allowed: it matches no pattern of {policy.source}.images "
                            f"({list(policy.image_patterns)}). Use an allowed image, or ask the operator to add a "
                            f"pattern to {policy.source}.images.", image=image[:200])
        raise P.image_refusal(image, configured=policy.images, patterns=policy.image_patterns,
                              allow_built=policy.allow_built_images, present=labels is not None)
    return image


def build(request: Request, policy: Policy, identity: Identity) -> ContainerSpec:
    """The container spec for ``request`` by ``identity`` under ``policy``, or the refusal. Pure."""
    r = request
    if r.kind not in L.KINDS:
        raise ConfigError(f"unknown container kind {r.kind!r}")
    image = check_image(r.image, policy, r.image_labels)
    user = check_user(r.run_as, r.kind, policy, identity)
    gpus = P.narrow_gpus(r.gpus, policy.max_gpus, asked=r.gpus.label(),
                         limit=P.operator_limit(policy.source.removeprefix("c."), "max_gpus", policy.max_gpus.label()))
    mem = P.narrow_size(r.mem_limit, policy.max_mem, what="mem_limit", asked=P.format_size(r.mem_limit),
                        limit=P.operator_limit(policy.source.removeprefix("c."), "max_mem", P.format_size(policy.max_mem)))
    if policy.max_cpus is not None and (r.cpus is None or r.cpus > policy.max_cpus):
        raise Forbidden(f"cpus {r.cpus if r.cpus is not None else 'unlimited'} is above the operator's limit "
                        f"{policy.source}.max_cpus = {policy.max_cpus}; ask for at most {policy.max_cpus}.")
    mounts: list[Mount] = []
    for m in r.mounts:
        mounts.append(Mount(check_mount(m.source, policy, "mount"), check_target(m.target), m.read_only))
    workdir = r.workdir
    if workdir is not None and r.mount_workdir:
        workdir = check_mount(workdir, policy, "notebook folder")
        if not any(m.source == m.target and not m.read_only and _inside(workdir, m.target) for m in mounts):
            mounts.insert(0, Mount(workdir, workdir, False))
    if workdir is not None and r.mount_workdir:
        check_target(workdir)
    if r.private_dir:
        mounts.append(Mount(r.private_dir, r.private_dir, False))  # made by us (kernel_files), not asked for
    check_files(r.files)
    env = {k: v for k, v in r.env.items() if k not in RESERVED_ENV}
    labels = L.make(r.kind, owner_uid=identity.uid, owner=identity.name, server_id=identity.server_id,
                    server_pid=identity.server_pid, id=r.id, gpus=gpus.label(), notebook=r.notebook,
                    kernel_dir=r.private_dir)
    return ContainerSpec(
        image=image, command=tuple(r.command), user=user, workdir=workdir or ContainerSpec.home, env=env,
        labels=labels, mounts=tuple(mounts), gpus=gpus, ports=dict(r.ports), network_mode=r.network_mode,
        shm_size=r.shm_size, mem_limit=mem, cpus=r.cpus, pids_limit=r.pids_limit, name=r.name, files=r.files,
    )


#: Environment a kernel has and a job from it must not: the kernel's id; HOME is the builder's.
KERNEL_ONLY_ENV = ("JUPYTER_PTCUDA_KERNEL_ID", "HOME")


def job_from_kernel(kernel: ContainerSpec, *, command: list[str], workdir: str, env: Mapping[str, str], id: str,
                    notebook: str = "", gpus: GpuRequest | None = None, mem_limit: int | None = None,
                    image: str | None = None, name: str | None = None) -> Request:
    """A job's request in the kernel's configuration: same image, user, mounts, env, GPUs and limits.

    Nothing private travels: not the kernel's ports, files (its key), ipc folder (label ``kernel-dir``),
    id or command. ``gpus``/``mem_limit`` override the kernel's when given (narrowed by the caller). A
    shared-namespace kernel ("shared", or "container:<holder>" once started) gives its job a namespace of
    its own with the same outbound access: a job outlives the server that holds the holder.
    """
    private = {kernel.labels.get(L.KERNEL_DIR)} - {None, ""}
    mounts = tuple(m for m in kernel.mounts if m.source not in private and m.target not in private)
    job_env = {k: v for k, v in kernel.env.items() if k not in KERNEL_ONLY_ENV}
    job_env.update(env)
    network = kernel.network_mode
    if network == "shared" or network.startswith("container:"):
        network = "bridge"
    return Request(
        kind=L.JOB, image=image or kernel.image, command=tuple(command), run_as=kernel.user, workdir=workdir,
        gpus=kernel.gpus if gpus is None else gpus, mounts=mounts, env=job_env, shm_size=kernel.shm_size,
        mem_limit=kernel.mem_limit if mem_limit is None else mem_limit, cpus=kernel.cpus,
        pids_limit=kernel.pids_limit, network_mode=network, id=id, notebook=notebook, name=name,
    )
