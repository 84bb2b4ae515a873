"""ContainerSpec: what a kernel or job container is, as pure data, and its Docker create arguments.

One builder for kernels and jobs (house style): ``build_create_kwargs(spec)`` turns a spec into the
keyword arguments of docker-py's ``APIClient.create_container`` + ``create_host_config``. It does no
I/O, so it is tested by dict equality. Jobs copy the spec of the kernel they came from
(``dataclasses.replace``) so "the same image, GPUs, mounts and user" is true by construction.

The parsers (:func:`parse_gpus`, :func:`parse_size`, :func:`parse_mounts`) validate kernelspec
options and CLI flags and raise :class:`~jupyter_ptcuda.errors.ConfigError` with a fix.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from . import labels as L
from .gpus import GpuRequest, device_requests, from_device_requests, parse_gpus

__all__ = ["ContainerSpec", "GpuRequest", "Mount", "SpecFile", "build_create_kwargs", "filter_env", "files_archive",
           "parse_cpus", "parse_gpus", "parse_mounts", "parse_size", "spec_from_container"]

#: Environment variables passed from the server's environment when present (fnmatch patterns).
DEFAULT_ENV_ALLOWLIST = ("LANG", "LANGUAGE", "LC_*", "TZ", "JPY_SESSION_NAME", "TERM")

#: NVIDIA's recommendation for deep-learning containers (memlock unlimited, 64 MiB stack).
DEFAULT_ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(value: Any, what: str) -> int | None:
    """Parse a byte size (``"16g"``, ``"512m"``, ``1073741824``); ``None``/``""`` → no limit."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what}={value!r}: give a size such as '8g' or '512m'.")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}={value}: a size cannot be negative; give e.g. '8g', or leave it unset.")
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m:
        if str(value).strip().startswith("-"):
            raise ConfigError(f"{what}={value!r}: a size cannot be negative; give e.g. '8g', or leave it unset.")
        raise ConfigError(f"{what}={value!r} is not a size: give e.g. '8g', '512m' or a number of bytes.")
    number, unit = float(m.group(1)), m.group(2).lower()
    return int(number * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit])


def parse_cpus(value: Any) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"cpus={value!r} is not a number: give e.g. 4 or 0.5.") from None
    if cpus <= 0:
        raise ConfigError(f"cpus={value!r}: must be positive (e.g. 4), or unset for no limit.")
    return cpus


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


def parse_mounts(value: Any) -> tuple[Mount, ...]:
    """Parse mounts: ``["/data:/data:ro", {"source": ..., "target": ..., "read_only": true}]``."""
    if not value:
        return ()
    if isinstance(value, str):
        value = [value]
    mounts = []
    for item in value:
        if isinstance(item, Mount):
            mounts.append(item)
            continue
        if isinstance(item, Mapping):
            src, dst, ro = item.get("source"), item.get("target", item.get("source")), item.get("read_only", False)
        elif isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (1, 2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ConfigError(f"mount {item!r}: write SOURCE[:TARGET[:ro|rw]], e.g. '/data:/data:ro'.")
            src = parts[0]
            dst = parts[1] if len(parts) > 1 else parts[0]
            ro = len(parts) == 3 and parts[2] == "ro"
        else:
            raise ConfigError(f"mount {item!r}: give a string 'SOURCE:TARGET[:ro]' or a mapping.")
        if not src or not str(src).startswith("/") or not dst or not str(dst).startswith("/"):
            raise ConfigError(f"mount {item!r}: source and target must be absolute paths.")
        if str(src).rstrip("/").endswith("docker.sock") or str(src) in ("/var/run", "/run"):
            raise ConfigError(
                f"mount {item!r}: the Docker socket is never mounted into a kernel container "
                "(it would give the notebook root on the host)."
            )
        mounts.append(Mount(str(src), str(dst), bool(ro)))
    return tuple(mounts)


def filter_env(env: Mapping[str, str], allowlist: Iterable[str]) -> dict[str, str]:
    """The subset of ``env`` whose names match one of the fnmatch patterns in ``allowlist``."""
    patterns = list(allowlist)
    return {k: v for k, v in env.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


@dataclasses.dataclass(frozen=True)
class SpecFile:
    """A file placed in the container before it starts (``put_archive``), owned by the container user.

    How a kernel gets its connection file (the key) without a host folder that the kernel's uid owns.
    ``data`` is left out of the repr: specs are logged, keys never are.
    """

    path: str  # absolute path inside the container
    data: bytes = dataclasses.field(repr=False)
    mode: int = 0o400
    dir_mode: int = 0o700  # the file's own folder (created, owned by the container user)


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    """Everything that defines a kernel or job container. Pure data; see :func:`build_create_kwargs`."""

    image: str
    command: tuple[str, ...]
    user: str  # "uid:gid"
    workdir: str
    home: str = "/tmp/ptcuda-home"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    gpus: GpuRequest = GpuRequest()
    ports: Mapping[int, int] = dataclasses.field(default_factory=dict)  # container port -> host port
    bind_ip: str = "127.0.0.1"
    network_mode: str = "bridge"
    shm_size: int | None = 2 * 1024**3
    mem_limit: int | None = None
    cpus: float | None = None
    pids_limit: int | None = 4096
    ulimits: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_ULIMITS))
    name: str | None = None
    init: bool = True
    files: tuple[SpecFile, ...] = ()  # placed before start; never copied into a job (see jobs.from_kernel)

    def with_gpus(self, gpus: GpuRequest) -> ContainerSpec:
        labels = dict(self.labels)
        labels[L.GPUS] = gpus.label()
        return dataclasses.replace(self, gpus=gpus, labels=labels)


def files_archive(spec: ContainerSpec) -> bytes | None:
    """The tar that ``put_archive(container, "/", ...)`` extracts before start: each file's folder and
    the file, owned by the spec's uid:gid (None when the spec has no files)."""
    if not spec.files:
        return None
    import io
    import tarfile

    uid, _, gid = spec.user.partition(":")
    ids = {"uid": int(uid or 0), "gid": int(gid or uid or 0)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for f in spec.files:
            if not f.path.startswith("/") or ".." in f.path.split("/") or f.path.count("/") != 3:
                raise ConfigError(f"container file {f.path!r}: give an absolute path /run/ptcuda/NAME.")
            folder = f.path.rsplit("/", 1)[0].lstrip("/")
            if folder and folder not in dirs:
                d = tarfile.TarInfo(folder)
                d.type, d.mode = tarfile.DIRTYPE, f.dir_mode
                d.uid, d.gid = ids["uid"], ids["gid"]
                tar.addfile(d)
                dirs.add(folder)
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(f.data), f.mode, ids["uid"], ids["gid"]
            tar.addfile(info, io.BytesIO(f.data))
    return buf.getvalue()


def build_create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """Docker ``create_container`` arguments for a spec; ``host_config`` is the raw HostConfig dict.

    Hardening is not optional here: all capabilities dropped, no-new-privileges, an init process
    (so SIGINT reaches the kernel and zombies are reaped), ports bound to ``bind_ip`` only.
    """
    uid, _, gid = spec.user.partition(":")
    host_config: dict[str, Any] = {
        "Binds": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts],
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "Init": spec.init,
        "NetworkMode": spec.network_mode,
        "PortBindings": {
            f"{cport}/tcp": [{"HostIp": spec.bind_ip, "HostPort": str(hport)}] for cport, hport in spec.ports.items()
        },
        "Tmpfs": {spec.home: f"rw,exec,nosuid,size=1g,uid={uid},gid={gid or uid},mode=0700"},
        "Ulimits": [{"Name": n, "Soft": s, "Hard": h} for n, (s, h) in sorted(spec.ulimits.items())],
        "DeviceRequests": device_requests(spec.gpus),
        "Privileged": False,
    }
    if spec.shm_size:
        host_config["ShmSize"] = spec.shm_size
    if spec.mem_limit:
        host_config["Memory"] = spec.mem_limit
        host_config["MemorySwap"] = spec.mem_limit  # no swap: an OOM is an OOM, not a crawl
    if spec.cpus:
        host_config["NanoCpus"] = int(spec.cpus * 1e9)
    if spec.pids_limit:
        host_config["PidsLimit"] = spec.pids_limit
    env = dict(spec.env)
    env["HOME"] = spec.home
    return {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "user": spec.user,
        "working_dir": spec.workdir,
        "environment": env,
        "labels": dict(spec.labels),
        "ports": [int(p) for p in spec.ports],
        "host_config": host_config,
        "detach": True,
        "stdin_open": False,
        "tty": False,
    }


def spec_with_logical_mounts(spec: ContainerSpec) -> ContainerSpec:
    """``spec`` with each mount's source as its user asked for it (label :data:`~.labels.MOUNTS`), not the
    staging path a broker handed the engine; unchanged when the label is absent or unreadable."""
    import json

    try:
        logical = {str(t): str(s) for s, t in json.loads(spec.labels.get(L.MOUNTS) or "[]")}
    except (ValueError, TypeError):
        return spec
    if not logical:
        return spec
    mounts = tuple(dataclasses.replace(m, source=logical.get(m.target, m.source)) for m in spec.mounts)
    labels = {k: v for k, v in spec.labels.items() if k != L.MOUNTS}
    return dataclasses.replace(spec, mounts=mounts, labels=labels)


def _parse_tmpfs_home(tmpfs: Mapping[str, str] | None) -> str | None:
    return next(iter(tmpfs), None) if tmpfs else None


def spec_from_container(inspect: Mapping[str, Any], image_config: Mapping[str, Any] | None = None) -> ContainerSpec:
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
    home = env.pop("HOME", None) or _parse_tmpfs_home(host.get("Tmpfs")) or ContainerSpec.home
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
        mounts.append(Mount(parts[0], parts[1] if len(parts) > 1 else parts[0], "ro" in mode.split(",")))
    ports: dict[int, int] = {}
    bind_ip = ContainerSpec.bind_ip
    for cport, bindings in (host.get("PortBindings") or {}).items():
        for b in bindings or []:
            ports[int(cport.split("/")[0])] = int(b.get("HostPort") or 0)
            bind_ip = b.get("HostIp") or bind_ip
    ulimits = {u["Name"]: (int(u["Soft"]), int(u["Hard"])) for u in host.get("Ulimits") or []}
    nano = host.get("NanoCpus") or 0
    return ContainerSpec(
        image=config.get("Image") or "",
        command=tuple(config.get("Cmd") or ()),
        user=config.get("User") or "",
        workdir=config.get("WorkingDir") or "",
        home=home,
        env=env,
        labels=labels,
        mounts=tuple(mounts),
        gpus=from_device_requests(host.get("DeviceRequests")),
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
