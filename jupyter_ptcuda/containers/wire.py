"""The container service's types as JSON: what travels between a user's server and the JupyterHub broker.

A user's server sends a **request** (:func:`request_to_json`: what a user may ask — kind, image, command,
GPUs in the one GPU vocabulary, the notebook folder, extra mounts, env, limits, a kernel's files), never a
container spec: the broker parses it strictly (:func:`request_from_json`: every field typed, bounded and
named in a 400 when malformed, unknown fields refused) and builds the whole container itself. Specs,
states, images and errors travel back (``*_to_json`` / ``*_from_json``). A file's bytes (a kernel's
connection file: its key) travel base64-encoded in the request body, never in a URL or a log line. Errors
keep their class (``Forbidden`` stays 403 with its sentence) across the wire.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from .. import errors as E
from . import labels as L
from .build import Request
from .gpus import GpuRequest, parse_gpus
from .spec import ContainerSpec, Mount, SpecFile
from .types import ContainerState, ImageInfo


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


def error_from_http(status: int, body: bytes | None) -> E.PtcudaError:
    """The error an HTTP answer of the broker's carries (its JSON body, when it is JSON): the client's and
    the terminal's one reading of a refusal."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    return error_from_json(status, data if isinstance(data, Mapping) else {})


def error_from_json(status: int, data: Mapping[str, Any] | None) -> E.PtcudaError:
    """The error the broker raised, as the same class; an unknown one by its status."""
    data = data or {}
    message = str(data.get("message") or f"the jupyter-ptcuda broker answered HTTP {status}")
    cls = getattr(E, str(data.get("error") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, E.PtcudaError)):
        cls = {400: E.ConfigError, 401: E.Forbidden, 403: E.Forbidden, 404: E.NotFound, 409: E.Conflict,
               429: E.TooBusy, 503: E.EngineUnavailable}.get(status, E.EngineError)
    return cls(message, **dict(data.get("details") or {}))


# -- requests: what a user's server may ask the broker for -------------------------------------------
#: The fields a request may carry; anything else is refused (a client cannot smuggle a spec field in).
REQUEST_FIELDS = ("kind", "image", "command", "workdir", "mount_workdir", "gpus", "mounts", "env", "shm_size",
                  "mem_limit", "cpus", "pids_limit", "network_mode", "id", "notebook", "files", "server_id",
                  "server_pid")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LABEL_TEXT = re.compile(r"^[^\x00-\x1f]{0,512}$")
MAX_ARGS, MAX_ARG, MAX_ENV, MAX_ENV_BYTES, MAX_MOUNTS, MAX_FILES, MAX_FILE_BYTES = 1024, 65536, 256, 65536, 32, 4, 65536


def request_to_json(r: Request, *, server_id: str = "", server_pid: int = 0) -> dict[str, Any]:
    """What a user's server sends the broker to start a container (its identity is the Hub token's)."""
    return {
        "kind": r.kind, "image": r.image, "command": list(r.command), "workdir": r.workdir,
        "mount_workdir": r.mount_workdir, "gpus": r.gpus.label() if r.gpus.mode != "ids" else list(r.gpus.ids),
        "mounts": [{"source": m.source, "target": m.target, "read_only": m.read_only} for m in r.mounts],
        "env": dict(r.env), "shm_size": r.shm_size, "mem_limit": r.mem_limit, "cpus": r.cpus,
        "pids_limit": r.pids_limit, "network_mode": r.network_mode, "id": r.id, "notebook": r.notebook,
        "files": [{"path": f.path, "data": base64.b64encode(f.data).decode(), "mode": f.mode} for f in r.files],
        "server_id": server_id, "server_pid": server_pid,
    }


def _bad(field: str, why: str) -> E.ConfigError:
    return E.ConfigError(f"request field {field!r}: {why}", field=field)


def _text(data: Mapping[str, Any], field: str, *, default: str = "", limit: int = 512, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(field, default)
    if value is None:
        value = default
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise _bad(field, f"give a string of at most {limit} characters.")
    if pattern is not None and value and not pattern.match(value):
        raise _bad(field, "contains characters that are not allowed.")
    return value


def positive_int(value: Any, field: str, *, minimum: int = 1, maximum: int = 2**62) -> int | None:
    """``None`` (the operator's default applies) or an int in ``[minimum, maximum]``; 400 otherwise (0, -1
    and other "unlimited" spellings included: a ceiling is never asked away)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _bad(field, f"give a whole number from {minimum} to {maximum}, or null for the operator's default "
                          "(0 and negative numbers do not mean 'unlimited' here).")
    return value


def request_from_json(data: Any) -> Request:
    """A :class:`~.build.Request` from what a client sent; ConfigError (400) naming the field for anything
    malformed or unknown. Types and sizes only: the policy (images, roots, ceilings, quotas) is the broker's."""
    if not isinstance(data, Mapping):
        raise E.ConfigError("request: give a JSON object with the fields " + ", ".join(REQUEST_FIELDS) + ".")
    unknown = sorted(str(k) for k in data if k not in REQUEST_FIELDS)
    if unknown:
        raise E.ConfigError(f"request: unknown field(s) {', '.join(unknown)[:200]}: a request carries only "
                            f"{', '.join(REQUEST_FIELDS)} (the broker decides the rest).")
    kind = _text(data, "kind", limit=16)
    if kind not in L.KINDS:
        raise _bad("kind", f"one of {', '.join(L.KINDS)}.")
    command = data.get("command") or []
    if not isinstance(command, list) or len(command) > MAX_ARGS or not all(
            isinstance(a, str) and len(a) <= MAX_ARG and "\x00" not in a for a in command):
        raise _bad("command", f"give a list of at most {MAX_ARGS} strings.")
    workdir = data.get("workdir")
    if workdir is not None:
        workdir = _text(data, "workdir", limit=4096)
        if not workdir.startswith("/"):
            raise _bad("workdir", "give an absolute host path (the notebook's folder).")
    mount_workdir = data.get("mount_workdir", True)
    if not isinstance(mount_workdir, bool):
        raise _bad("mount_workdir", "give true or false.")
    raw_gpus = data.get("gpus", "none")
    if not isinstance(raw_gpus, str | list) or (isinstance(raw_gpus, list) and not all(isinstance(g, str) for g in raw_gpus)):
        raise _bad("gpus", "give 'none', 'all', 'count:N', a count, or a list of device indexes/UUIDs.")
    if isinstance(raw_gpus, str) and raw_gpus.startswith("count:"):
        raw_gpus = raw_gpus[6:]
        if not raw_gpus.isdigit():
            raise _bad("gpus", "give 'count:N' with a whole number N.")
    try:
        gpus = parse_gpus(raw_gpus)
    except E.ConfigError as exc:
        raise _bad("gpus", exc.message) from None
    mounts = []
    raw_mounts = data.get("mounts") or []
    if not isinstance(raw_mounts, list) or len(raw_mounts) > MAX_MOUNTS:
        raise _bad("mounts", f"give a list of at most {MAX_MOUNTS} {{source, target, read_only}} objects.")
    for m in raw_mounts:
        if not isinstance(m, Mapping) or set(m) - {"source", "target", "read_only"}:
            raise _bad("mounts", "each mount is an object {source, target, read_only}.")
        source, target = _text(m, "source", limit=4096), _text(m, "target", default=str(m.get("source") or ""), limit=4096)
        if not source.startswith("/") or not target.startswith("/"):
            raise _bad("mounts", f"{source!r}:{target!r}: source and target must be absolute paths.")
        read_only = m.get("read_only", False)
        if not isinstance(read_only, bool):
            raise _bad("mounts", "read_only is true or false.")
        mounts.append(Mount(source, target, read_only))
    env = data.get("env") or {}
    if not isinstance(env, Mapping) or len(env) > MAX_ENV or not all(
            isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) and "\x00" not in v for k, v in env.items()):
        raise _bad("env", f"give an object of at most {MAX_ENV} NAME: 'value' strings (names: letters, digits, '_').")
    if sum(len(k) + len(v) for k, v in env.items()) > MAX_ENV_BYTES:
        raise _bad("env", f"at most {MAX_ENV_BYTES} bytes of environment in all.")
    cpus = data.get("cpus")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float) or not math.isfinite(cpus)
                             or not 0.01 <= cpus <= 4096):
        raise _bad("cpus", "give a number of CPUs from 0.01 to 4096, or null for the operator's default.")
    files = []
    raw_files = data.get("files") or []
    if not isinstance(raw_files, list) or len(raw_files) > MAX_FILES:
        raise _bad("files", f"give a list of at most {MAX_FILES} {{path, data, mode}} objects.")
    for f in raw_files:
        if not isinstance(f, Mapping) or set(f) - {"path", "data", "mode"}:
            raise _bad("files", "each file is an object {path, data (base64), mode}.")
        try:
            blob = base64.b64decode(_text(f, "data", limit=MAX_FILE_BYTES * 2), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("files", "data is not base64.") from None
        mode = f.get("mode", 0o400)
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o700:
            raise _bad("files", "mode is a number from 0 to 0o700 (the owner's bits only).")
        files.append(SpecFile(_text(f, "path", limit=256), blob, mode))
    network = _text(data, "network_mode", default="bridge", limit=32)
    return Request(
        kind=kind, image=_text(data, "image", limit=512), command=tuple(command), workdir=workdir,
        mount_workdir=mount_workdir and workdir is not None, gpus=gpus, mounts=tuple(mounts), env=dict(env),
        shm_size=positive_int(data.get("shm_size"), "shm_size", minimum=1024**2),
        mem_limit=positive_int(data.get("mem_limit"), "mem_limit", minimum=16 * 1024**2),
        cpus=float(cpus) if cpus is not None else None,
        pids_limit=positive_int(data.get("pids_limit"), "pids_limit", minimum=16, maximum=2**22),
        network_mode=network, id=_text(data, "id", limit=128, pattern=_LABEL_TEXT),
        notebook=_text(data, "notebook", limit=1024, pattern=_LABEL_TEXT), files=tuple(files),
    )


def request_identity(data: Mapping[str, Any]) -> tuple[str, int]:
    """The client's own server id and pid (labels its reaper reads; only ever among its own containers)."""
    pid = data.get("server_pid") or 0
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 2**31:
        raise _bad("server_pid", "give the server's process id.")
    return _text(data, "server_id", limit=256, pattern=_LABEL_TEXT), pid
