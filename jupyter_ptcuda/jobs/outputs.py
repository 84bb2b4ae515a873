"""Files a job leaves next to its notebook, and the path checks the REST API needs.

``<notebook dir>/outputs/<job-id>/`` holds ``job.log`` (the container's output, kept after the
container is removed), ``manifest.json`` (what ran, on what, with which result) and, for a notebook,
the exported ``train.py``. The folder belongs to the container's user, so a script can save its
checkpoints there (``$JUPYTER_PTCUDA_OUTPUT_DIR``).

All functions block (file system, ``git``); async callers run them in a worker thread.
Callers: ``JobManager`` (submit, finalise), ``server.job_handlers`` (:func:`resolve_under_root`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, Forbidden, NotFound
from .store import Job, iso

OUTPUTS = "outputs"


def resolve_under_root(root: str | os.PathLike[str], path: str, *, must_exist: bool = True) -> Path:
    """``path`` (relative to the server root, as the contents API gives it) as an absolute path inside root.

    Refuses (Forbidden, 403) anything that leaves the root: ``..``, absolute paths elsewhere, and
    symlinks whose target is outside. NotFound (404) when ``must_exist`` and it does not exist.
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError("'path' must be a non-empty string: a notebook or script path relative to the server root.")
    if "\x00" in path:
        raise ConfigError("'path' contains a NUL character.")
    root_real = Path(os.path.realpath(root))
    candidate = Path(path)
    if candidate.is_absolute():
        full = candidate
    else:
        full = root_real / path.lstrip("/")
    real = Path(os.path.realpath(full))
    if real != root_real and root_real not in real.parents:
        raise Forbidden(f"{path!r} is outside the server's root directory; give a path inside it.")
    if must_exist and not real.exists():
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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_output_dir(workdir: str, job_id: str, user: str) -> Path:
    """Create ``workdir/outputs/<job_id>``, owned by the container's ``uid:gid`` when we are root."""
    outputs = Path(workdir) / OUTPUTS
    created_outputs = not outputs.exists()
    out = outputs / job_id
    try:
        out.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise Forbidden(f"cannot create {out} ({exc.strerror or exc}): a job keeps its log and manifest next to "
                        "its notebook, so that folder must be writable by you.") from None
    if os.geteuid() == 0 and user:
        uid, _, gid = user.partition(":")
        if uid.isdigit():
            ids = int(uid), int(gid) if gid.isdigit() else int(uid)
            os.chown(out, *ids)
            if created_outputs:
                os.chown(outputs, *ids)
    return out


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a file atomically (temp file + rename): readers see the old or the new content, never half."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_log(job: Job, data: bytes) -> None:
    """Store the complete container output as ``job.log`` (called when the container has exited)."""
    if job.output_dir and os.path.isdir(job.output_dir):
        write_atomic(job.log_path, data)


def read_log(job: Job, offset: int = 0) -> bytes:
    """``job.log`` from byte ``offset`` (b'' when there is no file yet)."""
    try:
        with open(job.log_path, "rb") as f:
            f.seek(max(0, offset))
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return b""


def git_commit(directory: str) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``directory``; None if there is none."""
    try:
        out = subprocess.run(["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 40 else None


def manifest(job: Job) -> dict[str, Any]:
    """What ran, on what, with which result: the content of ``manifest.json``."""
    meta = job.meta
    gpu_ids = job.gpus.split(",") if job.gpus not in ("", "none", "all") and not job.gpus.startswith("count:") else []
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
        "git_commit": meta.get("git_commit"),
        "requirements": job.requirements,
        "limits": {"mem_limit": meta.get("mem_limit"), "timeout_s": job.timeout,
                   "nproc_per_node": meta.get("nproc_per_node")},
        "timings": {"created": iso(job.created), "started": iso(job.started), "finished": iso(job.finished),
                    "duration_s": job.duration()},
        "jupyter_ptcuda": __version__,
    }


def write_manifest(job: Job) -> None:
    """(Re)write ``manifest.json``: at start (state running) and when the job ends."""
    if job.output_dir and os.path.isdir(job.output_dir):
        write_atomic(job.manifest_path, (json.dumps(manifest(job), indent=2) + "\n").encode())
