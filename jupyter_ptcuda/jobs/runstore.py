"""Reading what a job's script logged with MLflow, from the file store in the job's own artifacts folder.

The job's container gets ``MLFLOW_TRACKING_URI=file://<job folder>/mlflow/mlruns`` (no address or
credential of the user's tracking store enters a container): ``mlflow.log_metric``/``log_param``/
``set_tag``/``log_artifact``/``pytorch.log_model`` there write MLflow's file-store layout::

    mlruns/<experiment>/<run id>/metrics/<key>          one "timestamp value step" line per value
    mlruns/<experiment>/<run id>/params/<key>           the value
    mlruns/<experiment>/<run id>/tags/<key>             the value
    mlruns/<experiment>/<run id>/artifacts/...          log_artifact(s)
    mlruns/<experiment>/models/<model id>/meta.yaml     a logged model (MLflow 3): "name: <name>"
    mlruns/<experiment>/models/<model id>/artifacts/... its files (MLmodel, weights)

The folder belongs to the job, so everything in it is hostile until read: this module parses the
layout itself (no MLflow code reads it), every folder is opened ``O_NOFOLLOW | O_DIRECTORY`` relative to
its parent's descriptor and every file through :func:`..nofollow.open_regular` (a link anywhere is
skipped, never followed), files with more than one link are skipped, and every count and size is
bounded (:data:`LIMITS`). Which run or experiment the job's store names does not matter: the server
copies every value into *the job's* run (:mod:`.tracking`) and nowhere else.

:func:`read_new` reads what was appended since a cursor (byte offsets per metric file), for the
live copy while a job runs and the rest at the end; :func:`copy_tree` copies regular files (artifacts,
models) out of the job's folder into a server-owned folder before MLflow uploads them.
All functions block (file system); :mod:`.tracking` runs them in its MLflow worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..nofollow import DIR_FLAGS, UnsafePath, folder, open_regular

FOLDER = "mlflow"  # the container user's, in the job's folder beside artifacts/ (MLflow's file store refuses
STORE = "mlruns"  # a run below a folder named "artifacts", and makes its default experiment only in a new root)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one job's store may make the server read and copy."""

    runs: int = 20  # run folders looked at (all experiments)
    keys: int = 500  # metric keys (all runs)
    values: int = 200_000  # metric values copied per job, in all
    chunk: int = 1 << 20  # bytes read from one metric file per pass
    param_bytes: int = 6000  # MLflow's own limit on a parameter value
    params: int = 500
    tags: int = 200
    depth: int = 8  # folders below a run's metrics/ or artifacts/
    artifact_files: int = 5000
    artifact_bytes: int = 4 << 30


LIMITS = Limits()
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[\w\-. ]{1,250}$")
_MODEL_NAME = re.compile(r"^name:\s*['\"]?([\w\-. ]{1,100})['\"]?\s*$", re.M)


@dataclasses.dataclass
class Batch:
    """What :func:`read_new` found: new metric values ``(key, value, timestamp ms, step)``, params, tags,
    the advanced cursor, and whether a limit cut something off (said in the run's tags)."""

    metrics: list[tuple[str, float, int, int]] = dataclasses.field(default_factory=list)
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    cursor: dict[str, Any] = dataclasses.field(default_factory=dict)
    truncated: list[str] = dataclasses.field(default_factory=list)


def _subdir(fd: int, name: str) -> int | None:
    """A descriptor of the folder ``name`` in ``fd``, or None (missing, a link, not a folder)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except OSError:
        return None


@contextlib.contextmanager
def _opened(fd: int, name: str) -> Iterator[int | None]:
    sub = _subdir(fd, name)
    try:
        yield sub
    finally:
        if sub is not None:
            os.close(sub)


MAX_ENTRIES = 10_000  # looked at in one folder (a job could make millions)


def _entries(fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of the folder's first MAX_ENTRIES entries, sorted by name; no link followed."""
    out = []
    with os.scandir(fd) as it:
        for n, entry in enumerate(it):
            if n >= MAX_ENTRIES:
                break
            with contextlib.suppress(OSError):
                out.append((entry.name, entry.stat(follow_symlinks=False)))
    return sorted(out)


def _read_small(fd: int, name: str, limit: int) -> str | None:
    """The text of the regular, singly linked file ``name`` (at most ``limit`` bytes), else None."""
    try:
        f = os.fdopen(open_regular(fd, name, name), "rb")
    except (OSError, UnsafePath):
        return None
    with f:
        if os.fstat(f.fileno()).st_nlink != 1:
            return None
        return f.read(limit + 1)[:limit].decode("utf-8", "replace")


def _runs(store_fd: int, limits: Limits) -> Iterator[tuple[str, int]]:
    """(``experiment/run``, descriptor) of each run folder, at most ``limits.runs``; closes each after use."""
    seen = 0
    for exp, st in _entries(store_fd):
        if not stat.S_ISDIR(st.st_mode) or not _NAME.match(exp) or exp.startswith("."):
            continue
        with _opened(store_fd, exp) as efd:
            if efd is None:
                continue
            for run, rst in _entries(efd):
                if not stat.S_ISDIR(rst.st_mode) or not _RUN_ID.match(run):
                    continue
                if seen >= limits.runs:
                    return
                with _opened(efd, run) as rfd:
                    if rfd is not None:
                        seen += 1
                        yield f"{exp}/{run}", rfd


def _files(fd: int, prefix: str, depth: int) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """(key, folder fd, name, lstat) of the regular files below ``fd``; keys may hold "/" (nested)."""
    for name, st in _entries(fd):
        if name.startswith(".") or not _NAME.match(name):
            continue
        key = f"{prefix}{name}"
        if stat.S_ISREG(st.st_mode):
            yield key, fd, name, st
        elif stat.S_ISDIR(st.st_mode) and depth > 0:
            with _opened(fd, name) as sub:
                if sub is not None:
                    yield from _files(sub, key + "/", depth - 1)


def _parse_metrics(data: bytes) -> tuple[list[tuple[float, int, int]], int]:
    """The complete lines of ``data``: ([(value, timestamp, step)], bytes consumed). Bad lines are skipped."""
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        parts = line.split()
        if len(parts) not in (2, 3):
            continue
        try:
            ts, value = int(parts[0]), float(parts[1])
            step = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            continue
        out.append((value, ts, step))
    return out, end


def store_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The job's MLflow file store: ``<job folder>/mlflow/mlruns`` (``mlflow/`` is the container user's, like
    ``artifacts/``)."""
    return Path(out_dir) / FOLDER / STORE


def read_new(out_dir: str | os.PathLike[str], cursor: dict[str, Any], limits: Limits | None = None) -> Batch:
    """What the job's store holds beyond ``cursor`` (a previous Batch's ``cursor``; {} at first).

    Metric values appended since; params and tags not seen before (a param seen once is not read
    again: MLflow params never change). Keys named ``mlflow.*`` or ``jupyter_ptcuda.*`` are the server's
    and are dropped. Nothing is read through a link; a store that is missing or a link gives an empty batch.
    """
    limits = limits or LIMITS
    offsets: dict[str, int] = dict(cursor.get("offsets") or {})
    copied = int(cursor.get("values") or 0)
    seen_params: set[str] = set(cursor.get("params") or [])
    seen_tags: set[str] = set(cursor.get("tags") or [])
    batch = Batch(cursor=dict(cursor))
    with contextlib.ExitStack() as stack:
        try:
            afd = stack.enter_context(folder(Path(out_dir) / FOLDER))
        except (OSError, UnsafePath):
            return batch
        with _opened(afd, STORE) as sfd:
            if sfd is None:
                return batch
            for run_key, rfd in _runs(sfd, limits):
                with _opened(rfd, "metrics") as mfd:
                    if mfd is not None:
                        copied = _read_metrics(mfd, run_key, offsets, copied, batch, limits)
                for kind, seen, out, most in (("params", seen_params, batch.params, limits.params),
                                              ("tags", seen_tags, batch.tags, limits.tags)):
                    with _opened(rfd, kind) as pfd:
                        if pfd is None:
                            continue
                        for key, dfd, name, st in _files(pfd, "", 0):
                            if key in seen or key.startswith(("mlflow.", "jupyter_ptcuda.")):
                                continue
                            if len(seen) >= most:
                                batch.truncated.append(kind)
                                break
                            text = _read_small(dfd, name, limits.param_bytes)
                            if text is not None and st.st_nlink == 1:
                                seen.add(key)
                                out[key] = text
    batch.cursor = {"offsets": offsets, "values": copied, "params": sorted(seen_params), "tags": sorted(seen_tags)}
    return batch


def _read_metrics(mfd: int, run_key: str, offsets: dict[str, int], copied: int, batch: Batch,
                  limits: Limits) -> int:
    for key, dfd, name, st in _files(mfd, "", limits.depth):
        if st.st_nlink != 1 or key.startswith(("mlflow.", "jupyter_ptcuda.")):
            continue
        where = f"{run_key}/{key}"
        if where not in offsets and len(offsets) >= limits.keys:
            batch.truncated.append("metric keys")
            break
        offset = offsets.get(where, 0)
        if st.st_size <= offset or copied >= limits.values:
            if copied >= limits.values and st.st_size > offset:
                batch.truncated.append("metric values")
            offsets.setdefault(where, offset)
            continue
        try:
            fd = open_regular(dfd, name, name)
        except (OSError, UnsafePath):
            continue
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read(limits.chunk)
        values, used = _parse_metrics(data)
        room = limits.values - copied
        if len(values) > room:
            values = values[:room]
            batch.truncated.append("metric values")
        batch.metrics.extend((key, v, ts, step) for v, ts, step in values)
        copied += len(values)
        offsets[where] = offset + used
    return copied


def model_folders(out_dir: str | os.PathLike[str], limits: Limits | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """The models the job logged: ``(name, path of its artifacts folder in the job folder)``, e.g.
    ``("model", ("mlruns", "1", "models", "m-…", "artifacts"))``. MLflow 3 logged models only
    (MLflow 2 put a model among its run's artifacts, which :func:`run_artifact_folders` copies)."""
    limits = limits or LIMITS
    found: list[tuple[str, tuple[str, ...]]] = []
    with contextlib.ExitStack() as stack:
        try:
            afd = stack.enter_context(folder(Path(out_dir) / FOLDER))
        except (OSError, UnsafePath):
            return []
        sfd = _subdir(afd, STORE)
        if sfd is None:
            return []
        stack.callback(os.close, sfd)
        for exp, st in _entries(sfd):
            if not stat.S_ISDIR(st.st_mode) or not _NAME.match(exp) or exp.startswith("."):
                continue
            with _opened(sfd, exp) as efd:
                if efd is not None:
                    found += _models(efd, exp, limits.runs - len(found))
    return found


def _models(efd: int, exp: str, room: int) -> list[tuple[str, tuple[str, ...]]]:
    found: list[tuple[str, tuple[str, ...]]] = []
    with _opened(efd, "models") as mfd:
        if mfd is None:
            return found
        for model, st in _entries(mfd):
            if not stat.S_ISDIR(st.st_mode) or not _NAME.match(model) or len(found) >= room:
                continue
            with _opened(mfd, model) as dfd:
                meta = _read_small(dfd, "meta.yaml", 64 << 10) if dfd is not None else None
            match = _MODEL_NAME.search(meta or "")
            found.append((match.group(1) if match else model, (FOLDER, STORE, exp, "models", model, "artifacts")))
    return found


def run_artifact_folders(out_dir: str | os.PathLike[str], limits: Limits | None = None) -> list[tuple[str, ...]]:
    """The ``artifacts/`` folders of the job store's runs (paths in the job folder)."""
    limits = limits or LIMITS
    out = []
    try:
        with folder(Path(out_dir) / FOLDER) as afd, _opened(afd, STORE) as sfd:
            if sfd is None:
                return []
            for run_key, _ in _runs(sfd, limits):
                out.append((FOLDER, STORE, *run_key.split("/"), "artifacts"))
    except (OSError, UnsafePath):
        return []
    return out


@dataclasses.dataclass
class Budget:
    """What a copy may still take: files, bytes, and folders (a job could make millions of empty ones)."""

    files: int
    bytes: int
    cut: bool = False
    folders: int = 10_000


def copy_tree(out_dir: str | os.PathLike[str], parts: tuple[str, ...], dest: Path, budget: Budget, *,
              skip_top: tuple[str, ...] = (), depth: int = LIMITS.depth) -> None:
    """Copy the regular, singly linked files below ``<job folder>/<parts...>`` into ``dest`` (a
    server-owned folder), walking folders through no link; stops when ``budget`` runs out (``budget.cut``).
    ``skip_top``: names left out at the top."""
    with contextlib.ExitStack() as stack:
        try:
            fd = stack.enter_context(folder(Path(out_dir)))
        except (OSError, UnsafePath):
            return
        for part in parts:
            sub = _subdir(fd, part)
            if sub is None:
                return
            stack.callback(os.close, sub)
            fd = sub
        _copy(fd, dest, budget, skip_top, depth)


def _copy(fd: int, dest: Path, budget: Budget, skip: tuple[str, ...], depth: int) -> None:
    for name, st in _entries(fd):
        if name in skip or name in (".", ".."):
            continue
        if stat.S_ISDIR(st.st_mode) and depth > 0:
            if budget.folders <= 0:
                budget.cut = True
                continue
            budget.folders -= 1
            with _opened(fd, name) as sub:
                if sub is not None:
                    _copy(sub, dest / name, budget, (), depth - 1)
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            continue
        if budget.files <= 0 or st.st_size > budget.bytes:
            budget.cut = True
            continue
        try:
            src = os.fdopen(open_regular(fd, name, name), "rb")
        except (OSError, UnsafePath):
            continue
        with src:
            if os.fstat(src.fileno()).st_nlink != 1:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            left = budget.bytes
            try:
                with open(dest / name, "xb") as out:
                    while left > 0:
                        block = src.read(min(1 << 20, left))
                        if not block:
                            break
                        out.write(block)
                        left -= len(block)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENAMETOOLONG):
                    continue
                raise
            budget.bytes = left
            budget.files -= 1
