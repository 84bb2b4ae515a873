"""A kernel's files on the host, and their removal however the kernel goes.

The key never sits in a host folder that the kernel's uid owns: the container's copy of the
connection file is placed inside the container before it starts (``ContainerSpec.files``). On the
host there remain:

- the server's own connection file (written by jupyter_client: mode 0600, the server's runtime dir);
- with ``transport = "ipc"``: the kernel's socket folder ``<private>/<kernel id>/`` (0700, owned by the
  kernel's uid, bind-mounted at the same path), inside a private folder of the server's uid
  (:func:`private_base`: ``/run/jupyter-ptcuda`` as root, else ``$XDG_RUNTIME_DIR/jupyter-ptcuda``,
  else ``jupyter-ptcuda`` in Jupyter's runtime folder in the user's home — never a name in a shared folder
  such as ``/tmp``, which another local user could make first; a folder someone else made or can write is
  refused with 409 and the fix);
- one record per kernel, ``<private>/records/<kernel id>.json``: the server that started it and the
  two paths above.

Callers: the provisioner writes the record in ``pre_launch`` and calls :func:`remove` in ``cleanup``;
the reaper calls :func:`sweep` (server start, every ``reap_interval``, ``jupyter ptcuda reap``) for
kernels that went another way: their server was SIGKILLed (its pid is gone), or they died through the
restart limit (jupyter_server forgets such a kernel without cleaning up: its server no longer knows it).
All functions block briefly (small files); the provisioner calls them from its coroutines.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from .errors import Conflict, LaunchError

RECORDS = "records"


def private_base() -> Path:
    """The server's private folder for kernel files (made if missing, checked every time)."""
    override = os.environ.get("JUPYTER_PTCUDA_RUNTIME_DIR")
    if override:
        base = Path(override)
    elif os.geteuid() == 0:
        base = Path("/run/jupyter-ptcuda")
    elif os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "jupyter-ptcuda"
    else:  # a JupyterHub user's server has no XDG_RUNTIME_DIR: the home, which no other user can write
        from jupyter_core.paths import jupyter_runtime_dir

        base = Path(jupyter_runtime_dir()) / "jupyter-ptcuda"
    _private_dir(base)
    return base


def _private_dir(path: Path) -> None:
    """Make ``path`` (0700) or accept it only if it is a real folder of ours that nobody else can write."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LaunchError(f"cannot create the kernels' private folder {path} ({exc.strerror}); set "
                          "JUPYTER_PTCUDA_RUNTIME_DIR to a folder only this user can write.") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise Conflict(
            f"{path} is not a private folder of uid {os.geteuid()} (owner {st.st_uid}, mode "
            f"{stat.filemode(st.st_mode)}): somebody else may have made it to read kernel keys. Remove it, "
            "or set JUPYTER_PTCUDA_RUNTIME_DIR to a folder only this user can write.")


def ipc_dir(kernel_id: str, user: str) -> Path:
    """``<private>/<kernel id>/``: the kernel's ipc sockets, 0700, owned by the container's ``uid:gid``."""
    path = private_base() / kernel_id
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:  # a restart keeps it
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise LaunchError(f"{path} is not a folder; remove it and start the kernel again.") from None
    if os.geteuid() == 0:
        uid, _, gid = user.partition(":")
        os.chown(path, int(uid), int(gid or uid), follow_symlinks=False)
    os.chmod(path, 0o700)
    return path


def _records() -> Path:
    path = private_base() / RECORDS
    _private_dir(path)
    return path


def write_record(kernel_id: str, server_id: str, connection_file: str, ipc: Path | None) -> None:
    """Note what this kernel leaves on the host (before its container exists)."""
    record = {"kernel_id": kernel_id, "server_id": server_id, "connection_file": connection_file,
              "ipc_dir": str(ipc) if ipc else None, "created": time.time()}
    path = _records() / f"{kernel_id}.json"
    tmp = path.with_name(f".{kernel_id}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def read_records() -> list[dict[str, Any]]:
    out = []
    for path in _records().glob("*.json"):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def remove(kernel_id: str, connection_file: str | None = None) -> None:
    """Remove the kernel's connection file, socket folder and record (idempotent)."""
    rec_path = _records() / f"{kernel_id}.json"
    try:
        record = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        record = {}
    for path in {connection_file, record.get("connection_file")} - {None, ""}:
        try:
            os.unlink(str(path))
        except FileNotFoundError:
            pass
    ipc = record.get("ipc_dir") or str(private_base() / kernel_id)
    if Path(ipc).parent == private_base():  # only ever inside our own private folder
        shutil.rmtree(ipc, ignore_errors=True)
    try:
        rec_path.unlink()
    except FileNotFoundError:
        pass


def stale_reason(record: dict[str, Any], *, own_server_id: str | None, known_kernels: Collection[str] | None,
                 pid_alive: Callable[[int], bool], grace: float = 60.0) -> str | None:
    """Why a record's kernel is gone (pure apart from ``pid_alive``), or None while it may live."""
    sid = str(record.get("server_id") or "")
    host, _, rest = sid.partition(":")
    if own_server_id is not None and sid == own_server_id:
        if known_kernels is not None and record.get("kernel_id") not in known_kernels \
                and time.time() - float(record.get("created") or 0) > grace:
            return "its kernel is no longer managed by this server"
        return None
    if host == socket.gethostname():
        pid = rest.partition(":")[0]
        if not pid.isdigit() or not pid_alive(int(pid)):
            return f"the server that started it (pid {pid or '?'}) is gone"
    return None


def sweep(*, own_server_id: str | None, known_kernels: Collection[str] | None, pid_alive: Callable[[int], bool],
          dry_run: bool = False, grace: float = 60.0) -> list[dict[str, Any]]:
    """Remove the files of kernels that are gone; returns ``[{kernel_id, why}]``."""
    removed = []
    for record in read_records():
        why = stale_reason(record, own_server_id=own_server_id, known_kernels=known_kernels, pid_alive=pid_alive,
                           grace=grace)
        if why is None:
            continue
        removed.append({"kernel_id": record.get("kernel_id"), "why": why})
        if not dry_run:
            remove(str(record.get("kernel_id")))
    return removed
