"""Host folders a user's container mounts, with no window between the broker's check and Docker's bind.

A path string can be swapped for a symlink between any check and the engine's bind (an attack run as a
second Unix user did it in three launches with ``renameat2(RENAME_EXCHANGE)`` in a loop). So the broker
never hands Docker a path the user can change:

1. :func:`open_beneath` walks the path from ``/`` one component at a time with ``O_PATH|O_NOFOLLOW`` (a
   symlink anywhere on the way, or a special file at the end, is refused): the file descriptor it ends
   with *is* the folder that was checked, whatever the path names a moment later;
2. :class:`Staging` bind-mounts that descriptor (``/proc/self/fd/N``, the exact inode) onto a fresh
   entry of the broker's own staging folder (root's, 0700, nobody else can enter it) and gives Docker
   that path; the engine binds it into the container;
3. once the container has started (or failed to), the staging mounts are detached and removed: the
   container's own bind is a separate mount and stays.

The logical paths (what the user asked, checked) go into the container's label
:data:`~jupyter_ptcuda.containers.labels.MOUNTS`, so reading the container back (a job copied from a
kernel) gives the user's paths, not the staging ones. Needs root in the engine's mount namespace (the
broker runs there: it holds the Docker socket).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import secrets
import stat
from pathlib import Path

from ..errors import ConfigError, EngineError, Forbidden

_MS_BIND, _MS_REC, _MS_PRIVATE, _MNT_DETACH = 4096, 16384, 1 << 18, 2
_libc = ctypes.CDLL(None, use_errno=True)


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return root == "/" or path == root or path.startswith(root + "/")


def open_beneath(source: str, roots: tuple[str, ...], forbidden: tuple[str, ...], what: str) -> tuple[str, int]:
    """``(normalised path, O_PATH descriptor)`` of a folder or file the user may mount: absolute, inside one of
    ``roots``, not one of ``forbidden``, no symlink on the way. The caller closes the descriptor."""
    if not source.startswith("/") or "\x00" in source:
        raise ConfigError(f"{what} {source[:200]!r}: give an absolute host path.")
    path = posixpath.normpath(source)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path in forbidden or not any(_inside(path, r) for r in roots):
        raise Forbidden(f"{what} {source[:200]!r} is outside the folders you may mount ({', '.join(roots) or 'none'}): "
                        "move it under one of them, or ask the operator to add a root (c.PtcudaBroker.mount_roots).",
                        path=path[:200])
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if last else os.O_DIRECTORY)
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise Forbidden(f"{what} {source[:200]!r} passes through a symbolic link or a file "
                                    f"({'/' + '/'.join(parts[:i + 1])}): the broker mounts only real folders; give "
                                    "the real path, inside your mount roots.", path=path[:200]) from None
                raise ConfigError(f"{what} {source[:200]!r}: {exc.strerror}.") from None
            os.close(fd)
            fd = nxt
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            raise Forbidden(f"{what} {source[:200]!r} is a symbolic link: the broker mounts only real folders; give "
                            "the real path, inside your mount roots.", path=path[:200])
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise Forbidden(f"{what} {source[:200]!r} is not a folder or a regular file.", path=path[:200])
        return path, fd
    except BaseException:
        os.close(fd)
        raise


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise EngineError(f"the broker could not bind-mount a checked folder ({os.strerror(err)}): it must run as "
                          "root in the Docker engine's mount namespace (the host's).")


def _detach(path: str) -> None:
    _libc.umount2(path.encode(), _MNT_DETACH)


class Staging:
    """The broker's staging folder (``<private_root>/staging/<pid>``, root's, 0700, a private mount when it can be
    made one). One :meth:`stage` per checked descriptor; :meth:`release` after the engine's start."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.prepared = False
        self.bound = False  # whether prepare() bind-mounted the folder onto itself (close() undoes it)

    def prepare(self) -> None:
        """Make the folder (root's, 0700; one per broker process: ``<staging>/<pid>``), clear what killed brokers
        left beside it, and make it a private mount so no staged bind propagates to other mount namespaces
        (best effort)."""
        base = self.root.parent
        for folder in (base, self.root):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                raise ConfigError(f"{folder} must be a folder of root's: remove it and restart the broker.")
            os.chmod(folder, 0o700)
        for other in os.scandir(base):
            if other.name.isdigit() and other.path != str(self.root) and not os.path.exists(f"/proc/{other.name}"):
                self._clear(other.path)
                _detach(other.path)
                with contextlib.suppress(OSError):
                    os.rmdir(other.path)
        self._clear(str(self.root))
        if not os.path.ismount(self.root):
            with contextlib.suppress(EngineError):
                _mount(str(self.root), str(self.root), _MS_BIND)
                self.bound = True
        _libc.mount(b"none", str(self.root).encode(), None, _MS_PRIVATE, None)
        self.prepared = True

    @staticmethod
    def _clear(folder: str) -> None:
        for entry in os.scandir(folder):
            _detach(entry.path)
            with contextlib.suppress(OSError):
                os.rmdir(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)

    def close(self) -> None:
        """Undo :meth:`prepare`'s mount of the folder onto itself (the broker stops)."""
        if self.bound:
            _detach(str(self.root))
            self.bound = False
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
        self.prepared = False

    def stage(self, fd: int) -> str:
        """A path of the broker's own that is the descriptor's folder (or file): what Docker binds."""
        if not self.prepared:
            self.prepare()
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        target = str(self.root / secrets.token_hex(12))
        if is_dir:
            os.mkdir(target, 0o700)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        try:
            _mount(f"/proc/self/fd/{fd}", target, _MS_BIND)
        except BaseException:
            self._remove(target)
            raise
        return target

    def release(self, paths: list[str]) -> None:
        for target in paths:
            _detach(target)
            self._remove(target)

    @staticmethod
    def _remove(target: str) -> None:
        with contextlib.suppress(OSError):
            if os.path.isdir(target):
                os.rmdir(target)
            else:
                os.unlink(target)
