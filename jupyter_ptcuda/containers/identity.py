"""Who asks for a container: :class:`Identity` (owner uid:gid and name, the server's id), and which
uid:gid a container of theirs runs as (:func:`container_user`).

In a single user's server the identity is the server process's own (:func:`this_server`); under the
JupyterHub broker it is the Hub user's, resolved by the broker from the Hub — never from a request.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import socket
import time

from ..errors import ConfigError

#: The uid:gid of containers of a root server whose folder is root's (or that mounts no folder): held by
#: no host account, so no local user can read its keys, signal it or read its memory.
ISOLATED_UID = ISOLATED_GID = 65533
SERVER_STARTED = time.time()


def server_id() -> str:
    """Identifies this server process in container labels: host, pid and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(SERVER_STARTED)}"


def username(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a container is for. ``uid``/``gid``: the owner's; ``server_id``/``server_pid``: the process
    that started it (the reaper's key)."""

    uid: int
    gid: int
    name: str
    server_id: str
    server_pid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def this_server() -> Identity:
    """The identity of this process (a single user's server, or a CLI command)."""
    return Identity(uid=os.geteuid(), gid=os.getegid(), name=username(), server_id=server_id(),
                    server_pid=os.getpid())


def container_user(identity: Identity, workdir: str | None = None, *, allow_root: bool = False,
                   uid: int | None = None, gid: int = 100) -> str:
    """uid:gid a container with ``workdir`` mounted runs as.

    A non-root owner: their own uid:gid. A root owner (a root server): root only with ``allow_root``; an
    explicit ``uid`` (with ``gid``); else the owner of the notebook folder when that is not root; else
    :data:`ISOLATED_UID`, refused when a host account holds it.
    """
    if not identity.is_root:
        return f"{identity.uid}:{identity.gid}"
    if allow_root:
        return "0:0"
    if uid is not None:
        return f"{uid}:{gid}"
    if workdir:
        try:
            st = os.stat(workdir)
        except OSError:
            st = None
        if st is not None and st.st_uid != 0:
            return f"{st.st_uid}:{st.st_gid}"
    try:
        holder = pwd.getpwuid(ISOLATED_UID).pw_name
    except KeyError:
        return f"{ISOLATED_UID}:{ISOLATED_GID}"
    raise ConfigError(f"uid {ISOLATED_UID} (for containers of a root server in root's folders) belongs to "
                      f"the host account {holder!r}: set c.ContainerOptions.unprivileged_uid to a uid that no "
                      "local user holds.")
