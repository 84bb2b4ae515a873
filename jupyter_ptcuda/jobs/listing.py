"""What the REST API shows of a job (:func:`job_json`), and ``GET jobs`` as JSON text (:class:`JobListing`).

``GET jobs`` with 1,000 jobs spent its time making each job's dict (``Job.to_json``, three ``realpath`` calls
for its paths) and encoding it, again at every poll of the Jobs view, although a finished job's row rarely
changes (bench/tracking_bench.py). :class:`JobListing` keeps the JSON text of each *finished* job with the
row it was made from (the stored values, compared whole: a new MLflow status or metric of a finished job
changes its ``meta`` column, so its text is made again) and the server root it was made for. A queued or
running job is made every time: its ``duration_s``/``waited_s`` move with the clock and its ``place`` with
the GPU queue. The reply is the same text as ``json.dumps([job_json(...), ...], default=str)``.

Callers: :meth:`~.manager.JobManager.list_json` (in the manager's one SQLite worker thread, so the cache
is touched by one thread only and nothing of this runs on the event loop) and the server's job handlers
(:func:`job_json` for one job).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .store import ROW_ID, ROW_STATE, TERMINAL, Job, job_of_row

#: Finished jobs whose text is kept at most (a listing of more keeps the newest).
MAX_KEPT = 20_000


def relative_to(real_root: str | None, path: str | None) -> str | None:
    """``path`` relative to ``real_root`` (already resolved: ``os.path.realpath`` of the server root), or
    unchanged when it is not inside (what :func:`.outputs.relative_to_root` gives, without a realpath each)."""
    if not real_root or not path:
        return path
    try:
        return Path(path).relative_to(real_root).as_posix()
    except ValueError:
        return path


def job_json(job: Job, real_root: str | None, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The job as the REST API shows it: :meth:`Job.to_json`, its paths relative to the server root (what the
    frontend opens) and, while it waits for GPUs, its place in the queue (``live``: the queue's entry for it)."""
    data = job.to_json()
    if job.state == "queued" and live is not None:
        data["place"], data["reason"] = live["place"], live["reason"] or data["reason"]
    data["notebook_path"] = relative_to(real_root, job.notebook)
    data["script_path"] = relative_to(real_root, job.script)
    data["output_path"] = relative_to(real_root, job.output_dir)
    return data


def real_root(root: str | os.PathLike[str] | None) -> str | None:
    return os.path.realpath(root) if root else None


class JobListing:
    """``GET jobs``' reply, each finished job's JSON text kept while its row is unchanged. One thread only."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[Any, ...], str | None, str]] = {}  # id -> (row, real root, text)

    def render(self, rows: list[tuple[Any, ...]], root: str | os.PathLike[str] | None,
               waiting: Mapping[str, Mapping[str, Any]] | None = None, *, complete: bool = True) -> str:
        """The JSON array of ``rows`` (:meth:`~.store.JobStore.list_rows`, newest first). ``waiting``: the GPU
        queue's view (job id → place, reason). ``complete``: the rows are every job (not a filtered or limited
        list), so what is kept for jobs no longer there is dropped."""
        real = real_root(root)
        waiting = waiting or {}
        kept = self._kept
        fresh: dict[str, tuple[tuple[Any, ...], str | None, str]] = {}
        parts = []
        for row in rows:
            job_id = row[ROW_ID]
            hit = kept.get(job_id)
            if hit is not None and hit[1] == real and hit[0] == row:
                text = hit[2]
            else:
                text = json.dumps(job_json(job_of_row(row), real, waiting.get(job_id)), default=str)
                if row[ROW_STATE] not in TERMINAL:
                    parts.append(text)
                    continue
                hit = (row, real, text)
            if len(fresh) < MAX_KEPT:
                fresh[job_id] = hit
            parts.append(text)
        if complete:
            self._kept = fresh
        else:
            kept.update(fresh)
            if len(kept) > MAX_KEPT:
                self._kept = fresh
        return "[" + ", ".join(parts) + "]"
