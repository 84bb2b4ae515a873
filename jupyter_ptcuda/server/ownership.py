"""Files a root server makes in a folder its kernels write belong to the kernels' user.

A server running as root (``scripts/quickstart`` as root, a container's entrypoint) runs a notebook's
kernel as the owner of the notebook's folder (or ``c.ContainerOptions.unprivileged_uid``): see
:func:`~jupyter_ptcuda.containers.identity.container_user`. What JupyterLab makes there — File › New,
an upload, "Save as", a copy, a new notebook or folder, a rename, the saved export — is written by the
server, so it would be ``root:root 0644`` and the kernel's ``open(name, "a")`` would fail with
``PermissionError``. :class:`OwnershipRule` gives each such new entry to the kernels' uid:gid:

- only when this server runs as root, and only in a folder that is not root's (in a root-owned folder
  kernels run as 65533 and cannot write anyway: the kernel says so at its first cell);
- only entries that are root's now (a file the user already owns is left alone), and a regular file only
  with one link (a hard link planted to another file is never handed over);
- without following links: the path is walked from the server's root one component at a time with
  ``O_NOFOLLOW``, the entry is opened with ``O_NOFOLLOW`` and changed through its descriptor
  (``fchown``); a symbolic link is never changed, nor what it points to.

Before the server writes, :meth:`OwnershipRule.refuse_links` (a pre-save hook) refuses to save through a
symbolic link found in such a folder: a kernel can plant ``data.csv -> /etc/passwd`` there, and a root
server writing "data.csv" would otherwise write (and a naive chown would hand over) the file it points to.

Callers: the server extension (:meth:`install`, at start: a pre-save and a post-save hook on the contents
manager, a listener for its rename and copy events) and ``POST jupyter-ptcuda/exports`` (the saved
``<notebook>.train.py``). Every method blocks (file system); they are quick (a few ``openat`` calls).
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from typing import Any

from tornado import web

from ..containers.options import ContainerOptions
from ..nofollow import DIR_FLAGS

#: Opens a file or a folder for fchown: never through a link, never blocking on a FIFO.
ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"


class LinkInTheWay(Exception):
    """A component of the path is a symbolic link (``where``) in a folder another uid can change."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


class OwnershipRule:
    """Who owns what a root server makes under ``root_dir`` (see the module docstring)."""

    def __init__(self, root_dir: str, options: ContainerOptions, log: Any = None) -> None:
        self.root_dir = os.path.realpath(root_dir)  # the operator's choice: its own links are trusted
        self.options = options
        self.log = log

    @property
    def active(self) -> bool:
        return os.geteuid() == 0 and not self.options.allow_root

    def owner_for(self, folder_fd: int) -> tuple[int, int] | None:
        """uid:gid that kernels working in the folder ``folder_fd`` run as, when that is not root and the
        folder is not root's; else None (nothing to hand over)."""
        st = os.fstat(folder_fd)
        if st.st_uid == 0:
            return None
        if self.options.unprivileged_uid is not None:
            return self.options.unprivileged_uid, self.options.unprivileged_gid
        return st.st_uid, st.st_gid

    # -- walking ------------------------------------------------------------------------------------------
    def parts(self, path: str) -> list[str]:
        """The components of ``path`` (an API path, or an absolute path under the root)."""
        if os.path.isabs(path):
            rel = os.path.relpath(os.path.abspath(path), self.root_dir)
            if rel == ".." or rel.startswith("../"):
                raise ValueError(f"{path} is outside the server's root {self.root_dir}")
            path = "" if rel == "." else rel
        parts = [p for p in path.split("/") if p and p != "."]
        if ".." in parts:
            raise ValueError(f"{path!r} has a '..' component")
        return parts

    def open_parent(self, parts: list[str]) -> int:
        """A descriptor of the folder holding ``parts[-1]``, reached from the root through no link.

        Raises LinkInTheWay for a link in a folder that is not root's (a kernel could have planted it);
        a link in a root-owned folder was put there by root and is followed, as jupyter_server does."""
        fd = os.open(self.root_dir, DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if os.fstat(fd).st_uid != 0:
                        raise LinkInTheWay("/".join(parts[: i + 1])) from None
                    nxt = os.open(part, DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- before a save -------------------------------------------------------------------------------------
    def refuse_links(self, path: str) -> None:
        """HTTP 400 when saving ``path`` (an API path) would write through a symbolic link that a kernel's
        user could have planted. Called before every save (a pre-save hook)."""
        if not self.active:
            return
        parts = self.parts(path)
        if not parts:
            return
        try:
            fd = self.open_parent(parts)
        except LinkInTheWay as exc:
            raise web.HTTPError(400, self.link_message(exc.where)) from None
        except OSError:
            return  # a missing folder: jupyter_server says so itself
        try:
            try:
                st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except OSError:
                return
            if stat.S_ISLNK(st.st_mode) and os.fstat(fd).st_uid != 0:
                raise web.HTTPError(400, self.link_message("/".join(parts)))
        finally:
            os.close(fd)

    @staticmethod
    def link_message(where: str) -> str:
        return (f"{where} is a symbolic link in a folder a kernel can change; this server runs as root and "
                "does not write through it. Delete the link or save under another name.")

    # -- after the server made something ---------------------------------------------------------------------
    def settle(self, path: str, *, recursive: bool = False) -> int:
        """Give the entry ``path`` (an API path or an absolute path under the root) to the kernels' user
        of its folder, as the module docstring says; ``recursive``: and everything in it (a copied or
        moved folder). Returns how many entries changed owner; never raises for a link or a vanished file."""
        if not self.active:
            return 0
        try:
            parts = self.parts(path)
        except ValueError:
            return 0
        if not parts:
            return 0
        try:
            fd = self.open_parent(parts)
        except (LinkInTheWay, OSError) as exc:
            self._say("not handing %s over to the kernel's user: %s", path, exc)
            return 0
        try:
            owner = self.owner_for(fd)
            if owner is None:
                return 0
            return self._settle_at(fd, parts[-1], owner, recursive)
        finally:
            os.close(fd)

    def _settle_at(self, dir_fd: int, name: str, owner: tuple[int, int], recursive: bool) -> int:
        try:
            fd = os.open(name, ENTRY_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._say("%s is a symbolic link: left as it is (links are never followed)", name)
            return 0
        try:
            changed = self._give(fd, owner)
            if recursive and stat.S_ISDIR(os.fstat(fd).st_mode):
                for _, dirs, files, top in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
                    for entry in dirs + files:
                        changed += self._give_at(top, entry, owner)
            return changed
        finally:
            os.close(fd)

    def _give_at(self, dir_fd: int, name: str, owner: tuple[int, int]) -> int:
        try:
            fd = os.open(name, ENTRY_FLAGS, dir_fd=dir_fd)
        except OSError:  # a link (ELOOP), a socket, gone: left alone
            return 0
        try:
            return self._give(fd, owner)
        finally:
            os.close(fd)

    @staticmethod
    def _give(fd: int, owner: tuple[int, int]) -> int:
        st = os.fstat(fd)
        if st.st_uid != 0 or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
            return 0
        os.fchown(fd, *owner)
        return 1

    def _say(self, msg: str, *args: Any) -> None:
        if self.log is not None:
            self.log.warning("jupyter-ptcuda: " + msg, *args)

    # -- wiring -------------------------------------------------------------------------------------------
    def install(self, contents_manager: Any, event_logger: Any = None) -> None:
        """Hook into the server's contents manager: refuse links before a save, settle after it; settle
        the target of a rename or copy (folders recursively) when the contents service reports one."""
        if not hasattr(contents_manager, "register_post_save_hook"):
            return

        def pre_save(model: Any = None, path: str = "", **_: Any) -> None:
            self.refuse_links(path)

        def post_save(os_path: str = "", model: Any = None, **_: Any) -> None:
            self.settle(os_path)

        contents_manager.register_pre_save_hook(pre_save)
        contents_manager.register_post_save_hook(post_save)
        if event_logger is not None and hasattr(event_logger, "add_listener"):
            async def on_contents(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
                if data.get("action") in ("rename", "copy") and data.get("path"):
                    await asyncio.to_thread(self.settle, str(data["path"]), recursive=True)

            event_logger.add_listener(schema_id=CONTENTS_EVENTS, listener=on_contents)
