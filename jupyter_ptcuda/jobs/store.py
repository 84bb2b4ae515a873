"""The job store: one SQLite file, one row per job, shared by the server and the CLI.

Where: ``JobManager.db_path`` (default ``$JUPYTER_PTCUDA_JOBS_DB``, else
``jupyter_data_dir()/jupyter_ptcuda/jobs.sqlite``). Several processes use it at once (the server, a
``jupyter ptcuda run --wait``, a ``jobs list``): WAL mode, a busy timeout, and state changes made by
one conditional ``UPDATE`` (:meth:`JobStore.transition`) so that exactly one process finalises a job.

Everything here is blocking. Async callers (the JobManager) run every call in the manager's single
SQLite worker thread; nothing in this module touches the event loop. A connection is opened per call
(tens of microseconds) so the store can be used from any thread.

Job states: ``queued`` (recorded, container not started yet) → ``running`` → one of ``completed`` |
``failed`` | ``cancelled`` | ``timed_out``; a queued job may also go straight to ``failed`` or
``cancelled``. Terminal states never change again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import NotFound

QUEUED, RUNNING = "queued", "running"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "completed", "failed", "cancelled", "timed_out"
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)
STATES = ACTIVE + TERMINAL
#: Allowed transitions (anything else is a bug in the caller).
TRANSITIONS = {QUEUED: {RUNNING, FAILED, CANCELLED}, RUNNING: set(TERMINAL)}

_JSON_FIELDS = ("parameters", "args", "requirements", "meta")


@dataclasses.dataclass
class Job:
    """One row of the store. Times are epoch seconds; ``to_json`` gives ISO 8601 (UTC)."""

    id: str
    owner: str = ""
    name: str = ""
    notebook: str | None = None  # the notebook it came from (absolute path), if any
    notebook_sha256: str | None = None
    script: str = ""  # absolute path of the script the container runs
    script_sha256: str = ""
    workdir: str = ""  # the notebook's (or script's) directory: the job's cwd, mounted at the same path
    output_dir: str = ""  # workdir/outputs/<id>: job.log, manifest.json (and train.py for notebooks)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    args: list[str] = dataclasses.field(default_factory=list)  # all arguments given to the script
    image: str = ""  # as asked for (tag)
    image_digest: str = ""  # what the container runs: RepoDigests[0], else the image id
    gpus: str = "none"  # the GPU label of the container (device ids once assigned)
    kernel_id: str | None = None
    container_id: str | None = None
    state: str = QUEUED
    reason: str | None = None
    exit_code: int | None = None
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    timeout: float | None = None
    cancel_reason: str | None = None  # set before a cancel/timeout signal; the finaliser reads it
    requirements: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # torch/cuda/git/command/...

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def log_path(self) -> str:
        return os.path.join(self.output_dir, "job.log") if self.output_dir else ""

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.output_dir, "manifest.json") if self.output_dir else ""

    def duration(self) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or time.time()) - self.started, 3)

    def waited(self) -> float | None:
        """Seconds from submit to start (so far, while queued; to the end, for one that never started)."""
        if not self.created:
            return None
        until = self.started or self.finished or (None if self.terminal else time.time())
        return None if until is None else round(max(0.0, until - self.created), 1)

    def to_json(self) -> dict[str, Any]:
        """The job as the REST API and ``jobs list --json`` show it. A shallow copy of the fields (each dict or
        list field copied one level): ``dataclasses.asdict`` deep-copied every job's meta, most of ``GET jobs``'s
        time with 1,000 jobs (bench/tracking_bench.py)."""
        out = {name: getattr(self, name) for name in _COLUMNS}
        for key, value in out.items():
            if isinstance(value, dict):
                out[key] = dict(value)
            elif isinstance(value, list):
                out[key] = list(value)
        for key in ("created", "started", "finished"):
            out[key] = iso(out[key])
        out["duration_s"] = self.duration()
        out["waited_s"] = self.waited()
        out["place"] = None  # a queued job's place in the GPU queue (1: next), where a server knows it
        out["log_path"] = self.log_path
        out["manifest_path"] = self.manifest_path
        return out


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


_COLUMNS = [f.name for f in dataclasses.fields(Job)]
#: Every column, in :data:`_COLUMNS` order (``SELECT *`` follows the table's order, which an old store may not share).
SELECT_COLUMNS = "SELECT " + ", ".join(_COLUMNS) + " FROM jobs"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT, name TEXT, notebook TEXT, notebook_sha256 TEXT,
    script TEXT, script_sha256 TEXT, workdir TEXT, output_dir TEXT,
    parameters TEXT, args TEXT, image TEXT, image_digest TEXT, gpus TEXT, kernel_id TEXT,
    container_id TEXT, state TEXT NOT NULL, reason TEXT, exit_code INTEGER,
    created REAL NOT NULL, started REAL, finished REAL, timeout REAL, cancel_reason TEXT,
    requirements TEXT, meta TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS launches (job_id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


def _to_row(job: Job) -> dict[str, Any]:
    row = dataclasses.asdict(job)
    for key in _JSON_FIELDS:
        row[key] = json.dumps(row[key])
    return row


def _from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    """A Job from a row of :data:`SELECT_COLUMNS` (a tuple in :data:`_COLUMNS` order, or a ``sqlite3.Row``)."""
    data = dict(zip(_COLUMNS, tuple(row), strict=True))
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key]) if data[key] else ({} if key in ("parameters", "meta") else [])
    return Job(**data)


def job_of_row(row: tuple[Any, ...]) -> Job:
    """The Job of a row of :meth:`JobStore.list_rows`."""
    return _from_row(row)


#: Where a row of :meth:`JobStore.list_rows` has the job's id and state.
ROW_ID, ROW_STATE = _COLUMNS.index("id"), _COLUMNS.index("state")


class JobStore:
    """SQLite-backed job records. Blocking; see the module docstring for threading."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._init_lock = threading.Lock()
        self._ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._init_lock:
            if not self._ready:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                finally:
                    conn.close()
                self._ready = True
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    def insert(self, job: Job) -> Job:
        """Record a new job (``JobManager.submit``, before anything is started)."""
        if job.state not in STATES:
            raise ValueError(f"unknown job state {job.state!r}")
        row = _to_row(job)
        cols = ", ".join(row)
        with self._connect() as db:
            db.execute(f"INSERT INTO jobs ({cols}) VALUES ({', '.join(':' + c for c in row)})", row)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id, or with this unique id prefix (the CLI accepts prefixes); NotFound."""
        with self._connect() as db:
            row = db.execute(SELECT_COLUMNS + " WHERE id = ?", (job_id,)).fetchone()
            if row is None and job_id and len(job_id) >= 4:
                rows = db.execute(SELECT_COLUMNS + " WHERE id LIKE ? ESCAPE '\\'",
                                  (job_id.replace("%", r"\%").replace("_", r"\_") + "%",)).fetchall()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise NotFound(f"no job {job_id!r}: `jupyter ptcuda jobs list` shows the jobs there are.")
        return _from_row(row)

    def list_jobs(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first, optionally only those in ``states``."""
        return [_from_row(r) for r in self.list_rows(states, limit)]

    def list_rows(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[tuple[Any, ...]]:
        """The rows of :meth:`list_jobs` as they are stored (one query; :func:`job_of_row` makes a Job of one):
        ``GET jobs`` keeps each finished job's JSON while its row is unchanged (:mod:`.listing`)."""
        query, params = SELECT_COLUMNS, []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            params = list(states)
        query += " ORDER BY created DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        with self._connect() as db:
            db.row_factory = None
            return db.execute(query, params).fetchall()

    def count_by_state(self) -> dict[str, int]:
        """{state: number of jobs}, every state present (zeros included)."""
        with self._connect() as db:
            found = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}

    def update(self, job_id: str, **fields: Any) -> Job:
        """Set fields that are not the state (container id, digest, cancel_reason, meta...)."""
        if "state" in fields:
            raise ValueError("change the state with transition()")
        self._set(job_id, fields, None)
        return self.get(job_id)

    def merge_meta(self, job_id: str, key: str, value: Any) -> Job:
        """Set ``meta[key]`` (read, merge, write in one transaction)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT meta FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no job {job_id}")
                meta = json.loads(row["meta"]) if row["meta"] else {}
                meta[key] = value
                conn.execute("UPDATE jobs SET meta = ? WHERE id = ?", (json.dumps(meta), job_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self.get(job_id)

    def transition(self, job_id: str, to: str, **fields: Any) -> bool:
        """Move a job to state ``to`` if its current state allows it; False if someone else did first.

        One conditional UPDATE, so of two processes finalising the same job exactly one wins.
        """
        sources = [s for s, targets in TRANSITIONS.items() if to in targets]
        if to not in STATES or not sources:
            raise ValueError(f"no transition leads to state {to!r}")
        return self._set(job_id, {**fields, "state": to}, sources) > 0

    def _set(self, job_id: str, fields: Mapping[str, Any], sources: list[str] | None) -> int:
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        row = {k: (json.dumps(v) if k in _JSON_FIELDS else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = :{k}" for k in row)
        query = f"UPDATE jobs SET {sets} WHERE id = :_id"
        params: dict[str, Any] = {**row, "_id": job_id}
        if sources is not None:
            query += f" AND state IN ({', '.join(':_s' + str(i) for i in range(len(sources)))})"
            params.update({f"_s{i}": s for i, s in enumerate(sources)})
        with self._connect() as db:
            count = db.execute(query, params).rowcount
        if count == 0 and sources is None:
            self.get(job_id)  # raises NotFound
        return count

    def note(self, job_id: str, state: str, **fields: Any) -> bool:
        """Set fields (not the state) only while the job is in ``state`` (a queued job's reason: never written
        over a job that has moved on). False when it is not."""
        if "state" in fields:
            raise ValueError("change the state with transition()")
        return self._set(job_id, fields, [state]) > 0

    # -- the GPU queue's durable part: what a waiting job needs to start after a restart -------------
    def save_launch(self, job_id: str, record: Mapping[str, Any]) -> None:
        """Keep how a queued job is launched (its container spec and launch options) until it starts."""
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO launches (job_id, record) VALUES (?, ?)", (job_id, json.dumps(record)))

    def launch_of(self, job_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM launches WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row["record"]) if row else None

    def drop_launch(self, job_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM launches WHERE job_id = ?", (job_id,))

    def delete(self, job_id: str) -> None:
        """Forget a finished job (its outputs folder stays)."""
        with self._connect() as db:
            db.execute("DELETE FROM jobs WHERE id = ? AND state IN ('completed','failed','cancelled','timed_out')",
                       (job_id,))
