"""Read and write files the way a privileged server must: through no symbolic link, planted or not.

A server running as root reads and writes in folders that less privileged users can change: the
notebook folder (the user's kernel writes there), a job's ``outputs/`` (the job's container writes
there). A path checked once and used later can meanwhile have any component replaced by a link, so
nothing here uses a path string for the work itself. A path is walked from ``/`` one component at a
time, each opened with ``O_NOFOLLOW | O_DIRECTORY`` (a link anywhere is refused), and the file is then
opened, created or renamed relative to the last folder's descriptor (``dir_fd``): the folder that was
checked is the folder that is used. New files are written to an ``O_EXCL`` temporary file with a
random name and renamed over the target (a rename replaces a link planted there; it never follows it).

A server running as another user works with that user's own rights, which no link can raise; there
a path is resolved first (``os.path.realpath``), so the user's own links (a linked home folder) keep
working. As root a path with a link in it is refused with :class:`UnsafePath`, naming the real path.

Callers: :mod:`.jobs.outputs` (a job's log, manifest and ``train.py``, the saved export, digests),
:mod:`.jobs.lifecycle` (through outputs: the log tee) and :mod:`.export.notebook` (reading the notebook).
Every function blocks (file system); async callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator

from .errors import Forbidden

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(Forbidden):
    """A path the server will not use: a link in it, not a regular file, or a folder someone else can change."""


def _parts(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """(the absolute path as given, its components). No file system access as root."""
    text = os.fspath(path)
    if "\x00" in text:
        raise UnsafePath(f"{text!r} contains a NUL character.")
    full = os.path.abspath(text)
    if os.geteuid() != 0:
        full = os.path.realpath(full)
    return full, [c for c in full.split("/") if c]


def _refusal(fd: int, part: str, full: str) -> UnsafePath | None:
    """Why ``part`` (in the folder ``fd``) cannot be walked through, or None if it is merely missing."""
    try:
        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return UnsafePath(f"{full}: {part!r} is a symbolic link, which the server does not follow here; "
                          f"give the real path (`realpath {full}`).")
    return UnsafePath(f"{full}: {part!r} is not a folder.")


def open_dir(path: str | os.PathLike[str], *, owned: bool = False) -> int:
    """A descriptor of the folder ``path``, reached from ``/`` through no link (the caller closes it).

    ``owned``: the folder must also belong to this process's effective uid and be writable by nobody
    else (a job's own folder). Raises UnsafePath, or FileNotFoundError when a component is missing.
    """
    full, parts = _parts(path)
    fd = os.open("/", DIR_FLAGS)
    try:
        for part in parts:
            try:
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                why = _refusal(fd, part, full) if exc.errno != errno.ENOENT else None
                if why is not None:
                    raise why from None
                raise
            os.close(fd)
            fd = nxt
        if owned:
            check_owned(fd, full)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_owned(fd: int, path: str, *, set_mode: int | None = None) -> None:
    """UnsafePath unless the folder ``fd`` is this process's and (after ``set_mode``, if given) not
    writable by group or others."""
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}, not to this server (uid {os.geteuid()}): the "
                         "server keeps a job's log and manifest only in a folder it owns. Is it a job folder "
                         "of an older version? Its files can still be read directly.")
    if set_mode is not None:
        os.fchmod(fd, set_mode)
        st = os.fstat(fd)
    if st.st_mode & 0o022:
        raise UnsafePath(f"{path} can be written by others (mode {stat.S_IMODE(st.st_mode):o}); the server "
                         "keeps a job's log and manifest only in a folder nobody else can change.")


@contextlib.contextmanager
def folder(path: str | os.PathLike[str], *, owned: bool = False) -> Iterator[int]:
    """``with folder(p) as fd``: :func:`open_dir`, closed afterwards."""
    fd = open_dir(path, owned=owned)
    try:
        yield fd
    finally:
        os.close(fd)


def _single(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise UnsafePath(f"{name!r} is not a file name.")
    return name


def open_regular(dir_fd: int, name: str, full: str) -> int:
    """A read descriptor of the regular file ``name`` in ``dir_fd`` (a link or FIFO is refused)."""
    try:
        fd = os.open(_single(name), READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file itself is a link
            raise UnsafePath(f"{full} is a symbolic link, which the server does not follow; give the real "
                             f"path (`realpath {full}`).") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{full} is not a regular file.")
    os.set_blocking(fd, True)
    return fd


def open_read(path: str | os.PathLike[str], *, owned_dir: bool = False) -> int:
    """A read descriptor of the regular file ``path``, reached through no link (the caller closes it)."""
    full, _ = _parts(path)
    parent, name = os.path.split(full)
    with folder(parent, owned=owned_dir) as dfd:
        return open_regular(dfd, name, full)


def read_bytes(path: str | os.PathLike[str], *, offset: int = 0, owned_dir: bool = False) -> bytes:
    """The content of the regular file ``path`` from byte ``offset``, read through no link."""
    with os.fdopen(open_read(path, owned_dir=owned_dir), "rb") as f:
        if offset:
            f.seek(offset)
        return f.read()


def write_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically (re)place ``name`` in the folder ``dir_fd`` with ``data``, file mode ``mode``.

    An ``O_EXCL | O_NOFOLLOW`` temporary file with a random name, ``fchmod``, then a rename within the
    folder: readers see the old or the new content, and a link planted at ``name`` is replaced.
    """
    name = _single(name)
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def create_at(dir_fd: int, name: str, mode: int = 0o644) -> int:
    """A write descriptor of ``name`` in ``dir_fd``, created or truncated, never through a link.

    For a folder only this server can write (a job's folder): there no one can swap the file between
    this call and a later rename.
    """
    fd = os.open(_single(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                 dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(f"{name} is not a regular file.")
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd
