"""The container service's types as JSON: what travels between a user's server and the JupyterHub broker.

Specs, states, images and errors, each both ways (``*_to_json`` / ``*_from_json``). A file's bytes (a
kernel's connection file: its key) travel base64-encoded in the request body, never in a URL or a log
line. Errors keep their class (``Forbidden`` stays 403 with its sentence) across the wire.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

from .. import errors as E
from . import labels as L
from .gpus import GpuRequest
from .service import ContainerState, ImageInfo
from .spec import ContainerSpec, Mount, SpecFile


def spec_to_json(spec: ContainerSpec) -> dict[str, Any]:
    out = dataclasses.asdict(spec)
    out["files"] = [{"path": f.path, "data": base64.b64encode(f.data).decode(), "mode": f.mode, "dir_mode": f.dir_mode}
                    for f in spec.files]
    out["ports"] = {str(k): v for k, v in spec.ports.items()}
    out["ulimits"] = {k: list(v) for k, v in spec.ulimits.items()}
    return out


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise E.ConfigError(f"{what}: give a number or null.")
    return int(value)


def spec_from_json(data: Mapping[str, Any]) -> ContainerSpec:
    """A spec from JSON; ConfigError (400) naming the field for anything malformed."""
    try:
        gpus = data.get("gpus") or {}
        return ContainerSpec(
            image=str(data["image"]), command=tuple(str(a) for a in data.get("command") or ()), user=str(data.get("user") or ""),
            workdir=str(data.get("workdir") or ""), home=str(data.get("home") or ContainerSpec.home),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            mounts=tuple(Mount(str(m["source"]), str(m["target"]), bool(m.get("read_only"))) for m in data.get("mounts") or ()),
            gpus=GpuRequest(str(gpus.get("mode", "none")), int(gpus.get("count", 0)), tuple(str(i) for i in gpus.get("ids", ()))),
            ports={int(k): int(v) for k, v in (data.get("ports") or {}).items()},
            network_mode=str(data.get("network_mode") or "bridge"),
            shm_size=_int_or_none(data.get("shm_size"), "shm_size"), mem_limit=_int_or_none(data.get("mem_limit"), "mem_limit"),
            cpus=float(data["cpus"]) if data.get("cpus") is not None else None,
            pids_limit=_int_or_none(data.get("pids_limit"), "pids_limit"),
            name=str(data["name"]) if data.get("name") else None,
            files=tuple(SpecFile(str(f["path"]), base64.b64decode(f["data"]), int(f.get("mode", 0o400)),
                                 int(f.get("dir_mode", 0o700))) for f in data.get("files") or ()),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise E.ConfigError(f"a malformed container spec ({type(exc).__name__}: {exc}): send what "
                            "jupyter_ptcuda.containers.wire.spec_to_json makes.") from None


def state_to_json(state: ContainerState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    out = dataclasses.asdict(state)
    out.pop("tag")
    out["labels"] = dict(state.labels)
    return out


def state_from_json(data: Mapping[str, Any] | None) -> ContainerState | None:
    if not data:
        return None
    fields = {f.name for f in dataclasses.fields(ContainerState)} - {"tag"}
    values = {k: v for k, v in data.items() if k in fields}
    return ContainerState(tag=L.Tag.read(data.get("labels") or {}), **values)


def image_to_json(info: ImageInfo) -> dict[str, Any]:
    return {"id": info.id, "digest": info.digest, "labels": dict(info.labels), "env": dict(info.env)}


def image_from_json(data: Mapping[str, Any]) -> ImageInfo:
    return ImageInfo(id=data["id"], digest=data["digest"], labels=dict(data.get("labels") or {}), env=dict(data.get("env") or {}))


def error_to_json(exc: E.PtcudaError) -> dict[str, Any]:
    details = {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool | list | type(None))}
    return {"error": type(exc).__name__, "message": exc.message, "details": details}


def error_from_json(status: int, data: Mapping[str, Any] | None) -> E.PtcudaError:
    """The error the broker raised, as the same class; an unknown one by its status."""
    data = data or {}
    message = str(data.get("message") or f"the jupyter-ptcuda broker answered HTTP {status}")
    cls = getattr(E, str(data.get("error") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, E.PtcudaError)):
        cls = {400: E.ConfigError, 401: E.Forbidden, 403: E.Forbidden, 404: E.NotFound, 409: E.Conflict,
               429: E.TooBusy, 503: E.EngineUnavailable}.get(status, E.EngineError)
    return cls(message, **dict(data.get("details") or {}))
