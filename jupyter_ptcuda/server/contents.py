"""A root server's contents manager: every write in a kernel's folder through no link.

jupyter_server writes by path. Saving ``data.csv`` first copies it to ``.~data.csv`` (``atomic_writing``),
a checkpoint goes to ``.ipynb_checkpoints/data-checkpoint.csv``, an upload's later chunks are appended to
``data.csv``, a folder copy follows every link inside it. A kernel writes in its notebook folder, so it
can plant any of those names as a symbolic link (``.~data.csv -> /etc/profile.d/x.sh``) and a server
running as **root** would write the user's bytes through it. :class:`NoFollowContentsManager` and
:class:`NoFollowCheckpoints` (the stock ``AsyncLargeFileManager`` and ``AsyncFileCheckpoints`` with
their writes replaced) do each of those writes relative to a folder descriptor reached through no link
(:meth:`OwnershipRule.open_parent`), the file opened with ``O_NOFOLLOW``:

- a save writes in place (inode, owner and mode kept, as jupyter_server does), its backup an
  ``O_EXCL | O_NOFOLLOW`` file with a random name, put back by a rename on failure;
- an upload's later chunks are appended to the same regular file (a link swapped in between chunks is
  refused), a copied folder copies links as links, a rename moves between two checked folders;
- a symbolic link where a write would go, in a folder that is not root's, is refused (HTTP 400, with
  what to do); a link in a root-owned folder was put there by root and is followed, as before.

Only a server running as root needs this (:attr:`OwnershipRule.active`): a server running as the user
writes with the user's rights. :func:`adopt` switches the server's contents manager to these classes
when it is the stock one; any other is left alone, with a warning.

Callers: :class:`~.extension.PtcudaExtension` at start. Reads and writes block (file system); the async
methods run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
from base64 import b64decode
from typing import Any

import nbformat
from jupyter_core.paths import is_hidden
from jupyter_server.services.contents.filecheckpoints import AsyncFileCheckpoints
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

from .ownership import LinkInTheWay, OwnershipRule

CHUNK = 1 << 20


class NoFollowFiles:
    """The writes of a root server under ``rule.root_dir`` (see the module docstring). Every method blocks."""

    def __init__(self, rule: OwnershipRule) -> None:
        self.rule = rule

    # -- where ---------------------------------------------------------------------------------------------
    def _parent(self, os_path: str) -> tuple[int, str]:
        """(a descriptor of the folder holding ``os_path``, the entry's name); HTTP 400 for a link on the way."""
        parts = self.rule.parts(os_path)
        if not parts:
            raise web.HTTPError(400, "The server's root folder itself cannot be written.")
        try:
            return self.rule.open_parent(parts), parts[-1]
        except LinkInTheWay as exc:
            raise web.HTTPError(400, self.rule.link_message(exc.where)) from None

    def _refuse_link(self, dfd: int, os_path: str) -> None:
        if os.fstat(dfd).st_uid == 0:
            return  # root's own folder: its links are the operator's
        raise web.HTTPError(400, self.rule.link_message(self._api(os_path)))

    def _api(self, os_path: str) -> str:
        return "/".join(self.rule.parts(os_path))

    def _open_existing(self, dfd: int, name: str, os_path: str, flags: int) -> int | None:
        """A descriptor of the regular file ``name`` (None: there is none); a link in a folder that is not
        root's, a FIFO, a device or a file with other hard links: HTTP 400."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._refuse_link(dfd, os_path)
            fd = os.open(os_path, flags | os.O_NONBLOCK | os.O_CLOEXEC)  # the operator's link
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 and os.fstat(dfd).st_uid != 0:
            os.close(fd)
            what = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "has other hard links"
            raise web.HTTPError(400, f"{self._api(os_path)} {what}; this server runs as root and does not write "
                                     "it. Save under another name.")
        os.set_blocking(fd, True)
        return fd

    # -- the writes ----------------------------------------------------------------------------------------
    def write(self, os_path: str, data: bytes) -> None:
        """Replace the content of ``os_path`` with ``data`` (created when missing), in place, with a backup
        that a failure puts back."""
        dfd, name = self._parent(os_path)
        try:
            fd = self._open_existing(dfd, name, os_path, os.O_RDWR)
            if fd is None:
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o666, dir_fd=dfd)
                except FileExistsError:  # something appeared meanwhile: a link planted in the race
                    self._refuse_link(dfd, os_path)
                    raise web.HTTPError(409, f"{self._api(os_path)} appeared while saving; save again.") from None
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                return
            with os.fdopen(fd, "r+b") as f:
                backup = self._backup(dfd, name, f) if os.fstat(f.fileno()).st_size else None
                try:
                    f.seek(0)
                    f.truncate()
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                except BaseException:
                    if backup is not None:
                        os.replace(backup, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    raise
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup, dir_fd=dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _backup(dfd: int, name: str, f: Any) -> str:
        backup = f".~{name[:200]}.{secrets.token_hex(6)}"
        bfd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        with os.fdopen(bfd, "wb") as b:
            f.seek(0)
            while block := f.read(CHUNK):
                b.write(block)
        return backup

    def append(self, os_path: str, data: bytes) -> None:
        """Append ``data`` to the regular file ``os_path`` (an upload's later chunk)."""
        dfd, name = self._parent(os_path)
        try:
            fd = self._open_existing(dfd, name, os_path, os.O_WRONLY | os.O_APPEND)
            if fd is None:
                raise web.HTTPError(404, f"{self._api(os_path)} is gone: the upload's first chunk made it. "
                                         "Upload the file again.")
            with os.fdopen(fd, "ab") as f:
                f.write(data)
        finally:
            os.close(dfd)

    def read(self, os_path: str) -> bytes:
        """The content of the regular file ``os_path`` (a checkpoint's source)."""
        dfd, name = self._parent(os_path)
        try:
            fd = self._open_existing(dfd, name, os_path, os.O_RDONLY)
            if fd is None:
                raise web.HTTPError(404, f"{self._api(os_path)} does not exist.")
            with os.fdopen(fd, "rb") as f:
                return f.read()
        finally:
            os.close(dfd)

    def mkdir(self, os_path: str) -> None:
        """Make the folder ``os_path`` (nothing when it is one already)."""
        dfd, name = self._parent(os_path)
        try:
            try:
                os.mkdir(name, 0o777, dir_fd=dfd)
            except FileExistsError:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    self._refuse_link(dfd, os_path)
                elif not stat.S_ISDIR(st.st_mode):
                    raise web.HTTPError(400, f"Not a directory: {self._api(os_path)}") from None
        finally:
            os.close(dfd)

    def check_no_link(self, os_path: str) -> None:
        """HTTP 400 when ``os_path`` or a folder on its way is a link in a folder that is not root's."""
        dfd, name = self._parent(os_path)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    self._refuse_link(dfd, os_path)
        finally:
            os.close(dfd)

    def rename(self, old: str, new: str) -> None:
        """Move ``old`` to ``new`` between two checked folders (a link at ``new`` is replaced, never followed;
        an existing ``new`` is the caller's 409)."""
        odfd, oname = self._parent(old)
        try:
            ndfd, nname = self._parent(new)
            try:
                os.rename(oname, nname, src_dir_fd=odfd, dst_dir_fd=ndfd)
            finally:
                os.close(ndfd)
        finally:
            os.close(odfd)


def _decode(os_path: str, content: str, format: str | None) -> bytes:
    if format not in {"text", "base64"}:
        raise web.HTTPError(400, "Must specify format of file contents as 'text' or 'base64'")
    try:
        return content.encode("utf8") if format == "text" else b64decode(content.encode("ascii"))
    except Exception as exc:
        raise web.HTTPError(400, f"Encoding error saving {os_path}: {exc}") from exc


class NoFollowContentsManager(AsyncLargeFileManager):
    """The stock contents manager whose writes go through :class:`NoFollowFiles` once :func:`adopt` gave
    it one (until then, and on a server not running as root, it is the stock one)."""

    nofollow: NoFollowFiles | None = None

    async def _save_file(self, os_path: str, content: str, format: str | None) -> None:  # type: ignore[override]
        if self.nofollow is None:
            return await super()._save_file(os_path, content, format)
        await self._put(self.nofollow.write, os_path, content, format)

    async def _save_large_file(self, os_path: str, content: str, format: str | None) -> None:  # type: ignore[override]
        if self.nofollow is None:
            return await super()._save_large_file(os_path, content, format)
        await self._put(self.nofollow.append, os_path, content, format)  # an upload's later chunk

    async def _put(self, how: Any, os_path: str, content: str, format: str | None) -> None:
        data = _decode(os_path, content, format)
        with self.perm_to_403(os_path):
            await asyncio.to_thread(how, os_path, data)

    async def _save_notebook(self, os_path: str, nb: Any, capture_validation_error: Any = None) -> None:
        if self.nofollow is None:
            return await super()._save_notebook(os_path, nb, capture_validation_error)
        text = nbformat.writes(nb, version=nbformat.NO_CONVERT, capture_validation_error=capture_validation_error)
        if not text.endswith("\n"):
            text += "\n"  # as nbformat.write does
        with self.perm_to_403(os_path):
            await asyncio.to_thread(self.nofollow.write, os_path, text.encode("utf-8"))

    async def _save_directory(self, os_path: str, model: Any, path: str = "") -> None:
        if self.nofollow is None:
            return await super()._save_directory(os_path, model, path)
        if not self.allow_hidden and is_hidden(os_path, self.root_dir):
            raise web.HTTPError(400, f"Cannot create hidden directory {os_path!r}")
        with self.perm_to_403():
            await asyncio.to_thread(self.nofollow.mkdir, os_path)

    async def rename_file(self, old_path: str, new_path: str) -> None:
        if self.nofollow is None:
            return await super().rename_file(old_path, new_path)
        old_path, new_path = old_path.strip("/"), new_path.strip("/")
        if new_path == old_path:
            return None
        old_os, new_os = self._get_os_path(old_path), self._get_os_path(new_path)
        if not self.allow_hidden and (is_hidden(old_os, self.root_dir) or is_hidden(new_os, self.root_dir)):
            raise web.HTTPError(400, f"Cannot rename file or directory {old_os!r}")
        if os.path.lexists(new_os):
            raise web.HTTPError(409, f"File already exists: {new_path}")
        try:
            with self.perm_to_403():
                await asyncio.to_thread(self.nofollow.rename, old_os, new_os)
        except web.HTTPError:
            raise
        except FileNotFoundError:
            raise web.HTTPError(404, f"File or directory does not exist: {old_path}") from None
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise web.HTTPError(500, f"Unknown error renaming file: {old_path} {exc}") from exc
            return await super().rename_file(old_path, new_path)  # another file system: shutil.move
        return None

    async def copy(self, from_path: str, to_path: str | None = None) -> Any:
        if self.nofollow is not None:  # a link's target is not copied (and then handed to the kernel's user)
            await asyncio.to_thread(self.nofollow.check_no_link, self._get_os_path(from_path.strip("/")))
        return await super().copy(from_path, to_path)

    async def _copy_dir(self, from_path: str, to_path_original: str, to_name: str, to_path: str) -> Any:
        if self.nofollow is None:
            return await super()._copy_dir(from_path, to_path_original, to_name, to_path)
        os_from = self._get_os_path(from_path.strip("/"))
        os_to = f"{self._get_os_path(to_path_original.strip('/'))}/{to_name}"
        try:
            await asyncio.to_thread(self.nofollow.check_no_link, os_to)
            await asyncio.to_thread(shutil.copytree, os_from, os_to, symlinks=True)  # links copied as links
        except OSError as err:
            self.log.error(f"OSError in _copy_dir: {err}")
            raise web.HTTPError(400, f"Can't copy '{from_path}' into read-only Folder '{to_path}'") from err
        return await self.get(to_path, content=False)


class NoFollowCheckpoints(AsyncFileCheckpoints):
    """The stock file checkpoints, copied through :class:`NoFollowFiles` once :func:`adopt` gave it one."""

    nofollow: NoFollowFiles | None = None

    def checkpoint_path(self, checkpoint_id: str, path: str) -> str:
        if self.nofollow is not None:  # .ipynb_checkpoints made here, or refused when it is a planted link
            parent = ("/" + path.strip("/")).rsplit("/", 1)[0].strip("/")
            cp_dir = os.path.join(self._get_os_path(path=parent), self.checkpoint_dir)
            if os.access(os.path.dirname(cp_dir), os.W_OK):
                self.nofollow.mkdir(cp_dir)
        return str(super().checkpoint_path(checkpoint_id, path))

    async def _copy(self, src: str, dest: str) -> None:  # type: ignore[override]
        if self.nofollow is None:
            return await super()._copy(src, dest)
        nofollow = self.nofollow

        def copy() -> None:
            nofollow.write(dest, nofollow.read(src))

        with self.perm_to_403():
            await asyncio.to_thread(copy)

    async def rename_checkpoint(self, checkpoint_id: str, old_path: str, new_path: str) -> None:
        if self.nofollow is None:
            return await super().rename_checkpoint(checkpoint_id, old_path, new_path)
        old_cp = self.checkpoint_path(checkpoint_id, old_path)
        new_cp = self.checkpoint_path(checkpoint_id, new_path)
        with contextlib.suppress(FileNotFoundError), self.perm_to_403():
            await asyncio.to_thread(self.nofollow.rename, old_cp, new_cp)


def adopt(contents_manager: Any, rule: OwnershipRule, log: Any = None) -> bool:
    """Make ``contents_manager`` (and its checkpoints) write through no link, when this server runs as root.
    The stock classes are switched to the ones above; True when every write is covered."""
    if not rule.active:
        return False
    files = NoFollowFiles(rule)
    covered = True
    if type(contents_manager) is AsyncLargeFileManager:
        contents_manager.__class__ = NoFollowContentsManager
    if isinstance(contents_manager, NoFollowContentsManager):
        contents_manager.nofollow = files
    else:
        covered = False
    checkpoints = getattr(contents_manager, "checkpoints", None)
    if type(checkpoints) is AsyncFileCheckpoints:
        checkpoints.__class__ = NoFollowCheckpoints
    if isinstance(checkpoints, NoFollowCheckpoints):
        checkpoints.nofollow = files
    else:
        covered = False
    if not covered and log is not None:
        log.warning("jupyter-ptcuda: this server runs as root with the contents manager %s (checkpoints %s): "
                    "its saves can be made to write through a symbolic link a kernel plants in its folder. "
                    "Use the default contents manager, or run the server as a user that is not root.",
                    type(contents_manager).__name__, type(checkpoints).__name__)
    return covered
