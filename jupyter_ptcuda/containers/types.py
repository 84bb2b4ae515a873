"""The container layer's value types: what every backend reports and returns.

:class:`ContainerState` (a container as a backend reports it), :class:`ImageInfo` (an image as inspected),
:class:`Launched` (what ``launch`` started) and :data:`DEADLINE_STATUS`. Plain data: no engine, no backend.
Callers: every backend (:mod:`.service` for Docker, :mod:`.kube`, :mod:`.remote`), the wire format, the
provisioner, the job manager and lifecycle, the reaper, the idle watch and the GPU ledger.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from . import labels as L
from .spec import ContainerSpec

#: ``ContainerState.status`` of a container its backend ended at its deadline (a backend that
#: :attr:`~.service.ContainerService.enforces_deadlines`: Kubernetes, a Job's activeDeadlineSeconds). The job
#: lifecycle records it as timed out. Docker's containers never read so.
DEADLINE_STATUS = "deadline-exceeded"


@dataclasses.dataclass(frozen=True)
class ContainerState:
    """A container of ours as the service reports it (from ``docker inspect`` or a listing)."""

    id: str
    name: str
    image: str  # as asked for at create time (a tag, or the digest a job is pinned to)
    image_id: str
    running: bool
    status: str  # created | running | exited | dead | removing | paused | restarting | DEADLINE_STATUS
    tag: L.Tag
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    exit_code: int | None = None
    oom_killed: bool = False
    created: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None  # its init process on the host (inspect only)

    @classmethod
    def from_inspect(cls, info: Mapping[str, Any]) -> ContainerState:
        state = info.get("State") or {}
        labels = (info.get("Config") or {}).get("Labels") or {}
        code = state.get("ExitCode")
        running = bool(state.get("Running"))
        return cls(id=info["Id"], name=(info.get("Name") or "").lstrip("/"), image=(info.get("Config") or {}).get("Image") or "",
                   image_id=info.get("Image") or "", running=running, status=state.get("Status") or ("running" if running else "exited"),
                   tag=L.Tag.read(labels), labels=labels, exit_code=None if running or code is None else int(code),
                   oom_killed=bool(state.get("OOMKilled")), created=docker_time(info.get("Created")) or 0.0,
                   started_at=docker_time(state.get("StartedAt")), finished_at=docker_time(state.get("FinishedAt")),
                   pid=int(state.get("Pid") or 0) or None)

    @classmethod
    def from_listing(cls, row: Mapping[str, Any]) -> ContainerState:
        labels = row.get("Labels") or {}
        status = row.get("State") or ""
        return cls(id=row["Id"], name=((row.get("Names") or [""])[0]).lstrip("/"), image=row.get("Image") or "",
                   image_id=row.get("ImageID") or "", running=status == "running", status=status, tag=L.Tag.read(labels), labels=labels,
                   created=float(row.get("Created") or 0))


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    id: str
    digest: str  # the repo digest when there is one, else the image id: what a job is pinned to
    labels: Mapping[str, str]
    env: Mapping[str, str]
    #: False where the backend cannot read the image (Kubernetes: the nodes pull it): labels and env are
    #: unknown (empty), ``id`` is empty and ``digest`` is the reference as given.
    inspected: bool = True

    @classmethod
    def from_inspect(cls, info: Mapping[str, Any]) -> ImageInfo:
        config = info.get("Config") or {}
        return cls(id=info["Id"], digest=(info.get("RepoDigests") or [None])[0] or info["Id"],
                   labels=dict(config.get("Labels") or {}),
                   env=dict(e.partition("=")[::2] for e in config.get("Env") or []))

    def config(self) -> dict[str, Any]:
        return {"Labels": dict(self.labels), "Env": [f"{k}={v}" for k, v in self.env.items()]}


class Launched(NamedTuple):
    """What :meth:`~.service.ContainerService.launch` started: the container, the spec it was started with, and
    why it runs without the GPUs it asked for (``gpu_fallback='cpu'`` without an NVIDIA runtime), if so."""

    id: str
    spec: ContainerSpec
    fallback: str | None = None


def docker_time(value: str | None) -> float | None:
    """Epoch seconds of a Docker timestamp (``2024-05-01T10:00:00.123456789Z``); None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    head, dot, frac = text.partition(".")
    offset = "+00:00"
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, tz = frac.partition(sign)
            offset = sign + tz
    if not dot and len(head) > 19:  # an offset without a fraction
        head, offset = head[:19], head[19:]
    try:
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6].ljust(6, '0')}{offset}").timestamp()
    except ValueError:
        return None
