"""Who a Hub user is on this host, what they may mount, and the kernels' private folders the broker makes.

Pure-ish helpers of the broker (:mod:`.app`): the uid:gid of a Hub user (the Unix account of the same
name by default, never root), their mount roots (templated per user; what a mount may be is checked by
:mod:`.mounts`, with no window before Docker's bind), and the kernels' ipc folders (:func:`private_dir`) —
made by the broker, never at a path the client names, at most ``c.PtcudaBroker.max_private_dirs`` each.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import ConfigError, Forbidden

_KERNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class HubUser:
    """A Hub user as the broker knows them: the Hub's name, and the host uid:gid their containers run as."""

    name: str
    uid: int
    gid: int

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


def resolve_user(name: str, user_map: Mapping[str, str], resolver: Callable[[str], tuple[int, int]] | None) -> HubUser:
    """The uid:gid of Hub user ``name``: ``c.PtcudaBroker.user_map`` ("uid:gid"), else the callable
    ``c.PtcudaBroker.user_resolver``, else the Unix account of that name. Root is refused."""
    if name in user_map:
        uid_s, _, gid_s = str(user_map[name]).partition(":")
        if not uid_s.isdigit() or (gid_s and not gid_s.isdigit()):
            raise ConfigError(f"c.PtcudaBroker.user_map[{name!r}] = {user_map[name]!r}: give 'uid:gid'.")
        uid, gid = int(uid_s), int(gid_s or uid_s)
    elif resolver is not None:
        uid, gid = resolver(name)
    else:
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise Forbidden(f"Hub user {name!r} has no Unix account on this host, so the broker does not know which uid "
                            "their containers run as: the operator creates the account, or maps the user "
                            "(c.PtcudaBroker.user_map or user_resolver).") from None
        uid, gid = account.pw_uid, account.pw_gid
    if uid == 0:
        raise Forbidden(f"Hub user {name!r} maps to uid 0: containers never run as root through the broker; "
                        "map the user to an unprivileged uid (c.PtcudaBroker.user_map).")
    return HubUser(name=name, uid=int(uid), gid=int(gid))


def home_of(name: str) -> str:
    try:
        return pwd.getpwnam(name).pw_dir
    except KeyError:
        return ""


def mount_roots(templates: Iterable[str], user: HubUser) -> tuple[str, ...]:
    """The user's mount roots: ``c.PtcudaBroker.mount_roots`` with {username}, {uid}, {home} filled in,
    each resolved (symlinks followed once, here, by the operator's choice)."""
    out = []
    for t in templates:
        path = t.format(username=user.name, uid=user.uid, home=home_of(user.name) or f"/home/{user.name}")
        if path.startswith("/"):
            out.append(os.path.realpath(path))
    return tuple(dict.fromkeys(out))


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return root == "/" or path == root or path.startswith(root + "/")


def check_kernel_id(kernel_id: str) -> str:
    if not _KERNEL_ID.match(kernel_id or ""):
        raise ConfigError(f"kernel id {kernel_id!r}: give the kernel's id (letters, digits, '-', '_').")
    return kernel_id


def _root_dir(path: Path) -> None:
    """A folder of root's, 0711: its users may pass through it to their own folder, not list it or add to it."""
    path.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != 0:
        raise ConfigError(f"{path} must be a folder of root's (c.PtcudaBroker.private_root): remove it and restart the broker.")
    os.chmod(path, 0o711)


def private_dir(root: str, user: HubUser, kernel_id: str) -> Path:
    """``<root>/<uid>/<kernel id>``: a kernel's ipc folder, 0700, owned by the user; its parents are root's
    (0711), so nobody but root can swap it for a link, and no other user can enter it."""
    base = Path(root) / str(user.uid)
    _root_dir(Path(root))
    _root_dir(base)
    path = base / check_kernel_id(kernel_id)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise ConfigError(f"{path} is not a folder: remove it.") from None
    os.chown(path, user.uid, user.gid)
    os.chmod(path, 0o700)
    return path


def remove_private_dir(root: str, path: str) -> None:
    """Remove a kernel's ipc folder made by :func:`private_dir` (only ever under ``root``)."""
    p = Path(path)
    if p.parent.parent == Path(root) and not p.is_symlink() and p.is_dir():
        shutil.rmtree(p, ignore_errors=True)


def count_private_dirs(root: str, user: HubUser, kernel_id: str) -> int:
    """How many kernel folders ``user`` has at the broker, not counting ``kernel_id``'s own (asking again for
    the same kernel never counts twice)."""
    base = Path(root) / str(user.uid)
    try:
        return sum(1 for e in os.scandir(base) if e.name != kernel_id)
    except FileNotFoundError:
        return 0


def sweep_private_dirs(root: str, user: HubUser, keep: set[str]) -> None:
    """Remove ``user``'s kernel folders whose kernel has no container any more."""
    base = Path(root) / str(user.uid)
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name not in keep:
            remove_private_dir(root, e.path)
