"""Files a job leaves next to its notebook, and the path checks the REST API needs.

``<notebook dir>/outputs/<job-id>/`` is the server's (its uid, mode 0755): ``job.log`` (the container's
output, kept after the container is removed), ``manifest.json`` (what ran, on what, with which result)
and, for a notebook, the exported ``train.py`` (0644: the container reads it). In it, ``artifacts/``
belongs to the container's user (chowned when the server is root): the job's
``$JUPYTER_PTCUDA_OUTPUT_DIR``, where a script saves its checkpoints, and where a notebook job's
matplotlib figures go: ``artifacts/figures/cell-<N>-<k>.png`` (:func:`list_figures`, :func:`open_figure`:
only such names, regular files with one link and a PNG signature, reached through no link). ``outputs/`` itself is the
container user's, as the notebook folder is. A job can thus write its artifacts but never a file the
server writes or reads back: every such file is reached through :mod:`..nofollow` (no link followed,
a folder that is the server's and nobody else's, random ``O_EXCL`` temporary files renamed into place).

All functions block (file system, ``git``); async callers run them in a worker thread.
Callers: ``JobManager`` (submit, finalise), ``JobLifecycle`` (the log tee, reading the log),
``server.job_handlers`` (:func:`resolve_under_root`, :func:`write_atomic` for a saved export).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import IO, Any

from .. import __version__
from ..containers.gpus import devices
from ..errors import ConfigError, Forbidden, NotFound, PtcudaError
from ..nofollow import DIR_FLAGS, UnsafePath, check_owned, create_at, folder, open_read, write_at
from .store import Job, iso

OUTPUTS = "outputs"
ARTIFACTS = "artifacts"
FIGURES = "figures"  # in artifacts/: what a notebook job's figures are saved as (export/runtime.py)
FIGURE_NAME = re.compile(r"^cell-(\d{1,6})-(\d{1,6})\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURES = 500  # listed per job (the first by cell and number)
MAX_FIGURE_BYTES = 32 * 1024**2
NAME_MAX = 255  # bytes in one file or folder name (Linux)
PATH_MAX = 4096  # bytes in a path, with its NUL (Linux)
log = logging.getLogger(__name__)


def _check_path_text(path: str, root: str) -> None:
    """ConfigError (400) for a path the file system would refuse: NUL, too long, not encodable."""
    if "\x00" in path:
        raise ConfigError("'path' contains a NUL character.")
    try:
        encoded = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ConfigError("'path' is not a valid file name (it has characters no file name can hold).") from None
    if len(encoded) + len(os.fsencode(root)) + 1 >= PATH_MAX or \
            any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise ConfigError(f"'path' is too long ({len(encoded)} bytes): a path has at most {PATH_MAX - 1} bytes "
                          f"with the server root, and a file or folder name at most {NAME_MAX}.")


def resolve_under_root(root: str | os.PathLike[str], path: str, *, must_exist: bool = True) -> Path:
    """``path`` (relative to the server root, as the contents API gives it) as an absolute path inside root.

    Refuses (Forbidden, 403) anything that leaves the root: ``..``, absolute paths elsewhere, and
    symlinks whose target is outside. NotFound (404) when ``must_exist`` and it does not exist.
    ConfigError (400) for an empty, NUL-containing or over-long path, before it reaches the file system.
    Callers use the result with :mod:`..nofollow` (a link planted after this check is not followed).
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError("'path' must be a non-empty string: a notebook or script path relative to the server root.")
    root_real = Path(os.path.realpath(root))
    _check_path_text(path, str(root_real))
    candidate = Path(path)
    if candidate.is_absolute():
        full = candidate
    else:
        full = root_real / path.lstrip("/")
    try:
        real = Path(os.path.realpath(full))
        if real != root_real and root_real not in real.parents:
            raise Forbidden(f"{path!r} is outside the server's root directory; give a path inside it.")
        exists = real.exists()
    except OSError as exc:
        raise ConfigError(f"{path!r} cannot be used as a path ({exc.strerror or exc}).") from None
    if must_exist and not exists:
        raise NotFound(f"{path!r} does not exist under the server's root directory.")
    return real


def relative_to_root(root: str | os.PathLike[str] | None, path: str | None) -> str | None:
    """``path`` relative to the server root (for REST replies), or unchanged when it is not inside."""
    if not root or not path:
        return path
    try:
        return Path(path).relative_to(os.path.realpath(root)).as_posix()
    except ValueError:
        return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of the regular file ``path``, read through no link (UnsafePath, 403, otherwise)."""
    digest = hashlib.sha256()
    with os.fdopen(open_read(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ids(user: str) -> tuple[int, int] | None:
    """(uid, gid) of a container user ``"uid[:gid]"``; None for a name or nothing."""
    uid, _, gid = (user or "").partition(":")
    if not uid.isdigit():
        return None
    return int(uid), int(gid) if gid.isdigit() else int(uid)


def artifacts_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The container user's folder inside a job folder: the job's ``$JUPYTER_PTCUDA_OUTPUT_DIR``."""
    return Path(out_dir) / ARTIFACTS


def make_output_dir(workdir: str, job_id: str, user: str) -> Path:
    """Create the job folder ``workdir/outputs/<job_id>`` (the server's, 0755) and its ``artifacts/``.

    ``outputs/`` is made if missing and, like ``artifacts/``, given to the container's ``uid:gid`` when
    we are root. Every step goes through folder descriptors reached through no link. Returns the job
    folder; :func:`artifacts_dir` names the container's. Called by ``JobManager.submit``.
    """
    ids = _ids(user) if os.geteuid() == 0 else None
    out = Path(workdir) / OUTPUTS / job_id
    try:
        with folder(workdir) as wfd:
            try:
                os.mkdir(OUTPUTS, 0o755, dir_fd=wfd)
                if ids:
                    os.chown(OUTPUTS, *ids, dir_fd=wfd, follow_symlinks=False)
            except FileExistsError:
                pass
            ofd = os.open(OUTPUTS, DIR_FLAGS, dir_fd=wfd)
        try:
            os.mkdir(job_id, 0o755, dir_fd=ofd)
            jfd = os.open(job_id, DIR_FLAGS, dir_fd=ofd)
        finally:
            os.close(ofd)
        try:
            check_owned(jfd, str(out), set_mode=0o755)  # what we made, not a folder swapped in since
            os.mkdir(ARTIFACTS, 0o755, dir_fd=jfd)
            if ids:
                os.chown(ARTIFACTS, *ids, dir_fd=jfd, follow_symlinks=False)
        finally:
            os.close(jfd)
    except UnsafePath:
        raise
    except OSError as exc:
        raise Forbidden(f"cannot create {out} ({exc.strerror or exc}): a job keeps its log and manifest next to "
                        "its notebook, so that folder must be writable by you.") from None
    return out


def remove_job_folder(job: Job) -> None:
    """Remove a job's folder made for a start that was refused (nothing ran in it): the server's own folder
    (checked, as in :func:`make_output_dir`) with the exported ``train.py`` and the empty ``artifacts/`` (and
    ``mlflow/``, :func:`make_container_dir`).
    Reached through no link; ``outputs/`` itself stays. A folder that is not the server's is left alone."""
    if not job.output_dir:
        return
    parent, name = os.path.split(os.path.abspath(job.output_dir))
    try:
        with folder(parent) as pfd, folder(job.output_dir, owned=True) as jfd:
            for entry in os.listdir(jfd):
                if stat.S_ISDIR(os.stat(entry, dir_fd=jfd, follow_symlinks=False).st_mode):
                    os.rmdir(entry, dir_fd=jfd)  # artifacts/, mlflow/: empty, nothing ran
                else:
                    os.unlink(entry, dir_fd=jfd)
            os.rmdir(name, dir_fd=pfd)
    except (OSError, PtcudaError) as exc:
        log.warning("jupyter-ptcuda: could not remove %s after a refused start: %s", job.output_dir, exc)


def make_container_dir(out_dir: str | os.PathLike[str], name: str, user: str) -> Path:
    """Another folder of the container user's in the job folder, like ``artifacts/`` (the job's MLflow
    store, :mod:`.tracking`): made through the job folder's descriptor, chowned to ``user`` when root."""
    ids = _ids(user) if os.geteuid() == 0 else None
    try:
        with folder(out_dir, owned=True) as jfd:
            os.mkdir(name, 0o755, dir_fd=jfd)
            if ids:
                os.chown(name, *ids, dir_fd=jfd, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        raise Forbidden(f"cannot create {out_dir}/{name} ({exc.strerror or exc}).") from None
    return Path(out_dir) / name


def write_atomic(path: str | os.PathLike[str], data: bytes, *, server_folder: bool = False) -> None:
    """Write a file atomically: readers see the old or the new content, never half; mode 0644.

    The folder is reached through no link, the data goes to a random ``O_EXCL`` temporary file that is
    renamed over ``path`` (a link planted there is replaced, not followed). ``server_folder``: the folder
    must be this server's and writable by nobody else (a job folder). Callers: the saved export
    (``POST exports`` with ``save``, a folder the user can write), the job files here and in ``submit``.
    """
    full = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(full)
    try:
        with folder(parent, owned=server_folder) as dfd:
            write_at(dfd, name, data, 0o644)
    except PtcudaError:
        raise
    except OSError as exc:
        raise Forbidden(f"cannot write {full} ({exc.strerror or exc}).") from None


def _job_file(job: Job, name: str, data: bytes) -> None:
    """Replace ``name`` in the job's folder; skipped (with a warning if it is not the server's) otherwise."""
    if not job.output_dir:
        return
    try:
        write_atomic(os.path.join(job.output_dir, name), data, server_folder=True)
    except PtcudaError as exc:
        if os.path.isdir(job.output_dir):
            log.warning("jupyter-ptcuda: job %s: %s not written: %s", job.id, name, exc.message)


def save_log(job: Job, data: bytes) -> None:
    """Store the complete container output as ``job.log`` (called when the container has exited)."""
    _job_file(job, "job.log", data)


def open_log(job: Job) -> IO[bytes] | None:
    """``job.log`` opened for writing (the tee while the job runs), or None without a job folder of ours."""
    if not job.output_dir:
        return None
    try:
        with folder(job.output_dir, owned=True) as dfd:
            return os.fdopen(create_at(dfd, "job.log", 0o644), "wb")
    except (OSError, PtcudaError) as exc:
        log.warning("jupyter-ptcuda: job %s: no log file: %s", job.id, getattr(exc, "message", exc))
        return None


def read_log(job: Job, offset: int = 0) -> bytes:
    """``job.log`` from byte ``offset``: b'' when there is none, and when it is anything but a regular
    file in a job folder of this server (a link, another user's folder: never read)."""
    if not job.output_dir:
        return b""
    try:
        with os.fdopen(open_read(os.path.join(job.output_dir, "job.log"), owned_dir=True), "rb") as f:
            f.seek(max(0, offset))
            return f.read()
    except UnsafePath as exc:
        log.warning("jupyter-ptcuda: job %s: log not read: %s", job.id, exc.message)
        return b""
    except OSError:  # no folder or no file yet
        return b""


def git_commit(directory: str, user: str | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``directory``; None if there is none.

    The repository is the user's, and git runs what its config says, so as root git runs as the job's
    container user (``"uid[:gid]"``, no other groups), and not at all without one (or for uid 0).
    Called by ``JobManager.submit``.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    drop: dict[str, Any] = {}
    if os.geteuid() == 0:
        ids = _ids(user or "")
        if ids is None or ids[0] == 0:
            return None
        drop = {"user": ids[0], "group": ids[1], "extra_groups": [], "cwd": "/"}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
               "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    try:
        out = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, env=env, **drop)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 40 else None


def figures_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Where a notebook job saves its figures: ``artifacts/figures`` (the container user's)."""
    return artifacts_dir(out_dir) / FIGURES


def list_figures(job: Job) -> list[dict[str, Any]]:
    """The job's figures, by cell and number: ``{"name", "cell", "index", "size", "path"}`` (``path``
    relative to the job folder). Only ``cell-N-k.png`` regular files; the folder is reached through no link
    (one planted by the job is not followed: no figures then). Blocking; [] without figures."""
    if not job.output_dir:
        return []
    found: list[dict[str, Any]] = []
    try:
        with folder(figures_dir(job.output_dir)) as dfd:
            with os.scandir(dfd) as entries:
                for entry in entries:
                    match = FIGURE_NAME.match(entry.name)
                    if not match:
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and 0 < st.st_size <= MAX_FIGURE_BYTES:
                        found.append({"name": entry.name, "cell": int(match.group(1)), "index": int(match.group(2)),
                                      "size": st.st_size, "path": f"{ARTIFACTS}/{FIGURES}/{entry.name}"})
    except UnsafePath as exc:
        log.warning("jupyter-ptcuda: job %s: figures not listed: %s", job.id, exc.message)
        return []
    except OSError:  # no figures folder
        return []
    return sorted(found, key=lambda f: (f["cell"], f["index"]))[:MAX_FIGURES]


def open_figure(job: Job, name: str) -> IO[bytes]:
    """One figure, opened for reading (the caller closes it): NotFound unless ``name`` is ``cell-N-k.png``
    and a regular PNG file of at most MAX_FIGURE_BYTES with one link, in a folder reached through no link
    (Forbidden: UnsafePath, when something was planted)."""
    if not job.output_dir or not FIGURE_NAME.match(name):
        raise NotFound(f"job {job.id} has no figure {name[:80]!r}: figures are named cell-<cell>-<n>.png.")
    path = figures_dir(job.output_dir) / name
    try:
        fd = open_read(path)
    except UnsafePath:
        raise
    except OSError:
        raise NotFound(f"job {job.id} has no figure {name}.") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if st.st_nlink != 1 or st.st_size > MAX_FIGURE_BYTES or f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        f.close()
        raise UnsafePath(f"{path} is not a PNG image the job wrote (a link to another file, too large, or not PNG).")
    f.seek(0)
    return f


def manifest(job: Job, figures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What ran, on what, with which result: the content of ``manifest.json``. ``figures``: the job's
    (:func:`list_figures`): name, cell, index, size and path relative to the job folder."""
    meta = job.meta
    gpu_ids = devices(job.gpus, all_devices=False)
    return {
        "job_id": job.id,
        "name": job.name,
        "owner": job.owner,
        "state": job.state,
        "reason": job.reason,
        "exit_code": job.exit_code,
        "notebook": job.notebook,
        "notebook_sha256": job.notebook_sha256,
        "script": job.script,
        "script_sha256": job.script_sha256,
        "parameters": job.parameters,
        "args": job.args,
        "command": meta.get("command"),
        "image": job.image,
        "image_digest": job.image_digest,
        "torch": meta.get("torch"),
        "cuda": meta.get("cuda"),
        "gpus": job.gpus,
        "gpu_ids": gpu_ids,
        "kernel_id": job.kernel_id,
        "rerun_of": meta.get("rerun_of"),  # the job this one reran (jobs/<id>/rerun), if any
        "git_commit": meta.get("git_commit"),
        "requirements": job.requirements,
        "limits": {"mem_limit": meta.get("mem_limit"), "timeout_s": job.timeout,
                   "nproc_per_node": meta.get("nproc_per_node")},
        "timings": {"created": iso(job.created), "started": iso(job.started), "finished": iso(job.finished),
                    "duration_s": job.duration()},
        "figures": figures or [],
        "jupyter_ptcuda": __version__,
    }


def write_manifest(job: Job) -> None:
    """(Re)write ``manifest.json``: at start (state running) and when the job ends (with its figures)."""
    _job_file(job, "manifest.json", (json.dumps(manifest(job, list_figures(job)), indent=2) + "\n").encode())
