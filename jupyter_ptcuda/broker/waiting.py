"""Jobs waiting in the broker's GPU queue, durable: they survive a restart of the broker (even SIGKILL) and
their user's server being culled, and each starts exactly once.

A job launch that may wait (``op enqueue``, or ``op launch`` with ``wait_for_gpus``) is keyed by (Hub user,
job id). :class:`JobLine` keeps one *run* per key: a task of the broker's own that waits for the job's turn in
the :class:`~jupyter_ptcuda.containers.dispatch.GpuQueue` and starts its container (the same
:meth:`~.ops.Broker._start` as any launch, so the policy and the user's identity are applied when it starts).
Callers only join a run (shielded): a caller that hangs up — its server culled, stopped or killed — leaves
the job in line, and the broker starts it when the GPUs free up. A second launch with the same key (the
user's server restarted and re-submits from its job store) joins the same run and keeps its place, or, once
the container exists, gets that container back (found by its labels: kind job, the job id, the owner).

The request is saved in :class:`WaitingStore` (SQLite, root's, ``c.PtcudaBroker.queue_db``) before the
caller hears that it waits, with its first time in line; the row goes when its container exists (or its
start failed, or it was cancelled: ``op dequeue``). A restarted broker puts every row back in line in the
original order (:meth:`JobLine.reload`) and, before starting one, looks for a container of that key first
(a broker killed between the container's creation and the row's removal).

Kernels are not kept here: a kernel whose server hangs up leaves the line (its launch timeout, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..containers.types import Launched
from ..errors import ConfigError, EngineUnavailable, PtcudaError, TooBusy

if TYPE_CHECKING:
    from .users import HubUser

log = logging.getLogger("jupyter_ptcuda.broker")

#: What a job's key (its id) may be: it is a container label and a part of the queue's claim.
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """CREATE TABLE IF NOT EXISTS waiting (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    submitted REAL NOT NULL,
    UNIQUE (user, key))"""


def check_key(key: str) -> str:
    if not KEY.match(key or ""):
        raise ConfigError("request field 'id': a job that waits for GPUs needs its job id (letters, digits, '_', '.', "
                          "'-'; at most 64): the broker keeps its place by it.")
    return key


class WaitingStore:
    """The waiting jobs' requests (SQLite; blocking: call from a worker thread). Its folder is made 0700 and the
    file 0600 (root's): a request carries the job's environment."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path) or "."
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            with self._db() as db:
                db.execute(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"the broker cannot keep its GPU queue in {path} ({exc}): set c.PtcudaBroker.queue_db "
                              "to a file in a folder the broker may write (e.g. /var/lib/jupyter-ptcuda-broker/"
                              "queue.sqlite).") from None

    @contextlib.contextmanager
    def _db(self) -> Any:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def add(self, user: str, key: str, body: dict[str, Any], submitted: float) -> float:
        """Save a waiting job (kept as it is when the key is there already); its first time in line."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO waiting (user, key, body, submitted) VALUES (?, ?, ?, ?)",
                       (user, key, json.dumps(body), submitted))
            row = db.execute("SELECT submitted FROM waiting WHERE user = ? AND key = ?", (user, key)).fetchone()
        return float(row[0])

    def drop(self, user: str, key: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM waiting WHERE user = ? AND key = ?", (user, key)).rowcount > 0

    def all(self) -> list[tuple[str, str, dict[str, Any], float]]:
        """(user, key, body, first time in line) of every waiting job, first in line first."""
        with self._db() as db:
            rows = db.execute("SELECT user, key, body, submitted FROM waiting ORDER BY submitted, seq").fetchall()
        return [(str(u), str(k), json.loads(b), float(s)) for u, k, b, s in rows]


class _Run:
    """One waiting job's way to its container: the task, and whether it has been told its place."""

    def __init__(self) -> None:
        self.told = asyncio.Event()
        self.task: asyncio.Task[Launched] | None = None
        self.spawned = asyncio.Event()  # task set (a second caller may arrive while the first saves the row)

    def note(self, reason: str) -> None:
        self.told.set()


#: ``start(user, body, submitted=, on_wait=)``: the broker's launch (:meth:`.ops.Broker._start`).
Start = Callable[..., Coroutine[Any, Any, Launched]]
#: ``find(user, key)``: the container of that job if it exists.
Find = Callable[["HubUser", str], Coroutine[Any, Any, Launched | None]]


class JobLine:
    """The broker's waiting jobs (see the module docstring). Owned by :class:`~.ops.Broker`."""

    def __init__(self, store: WaitingStore, start: Start, find: Find, user: Callable[[str], HubUser],
                 clock: Callable[[], float] = time.time, max_per_user: int = 100) -> None:
        self.store = store
        self.max_per_user = max_per_user
        self._start = start
        self._find = find
        self._user = user
        self.clock = clock
        self._runs: dict[tuple[str, str], _Run] = {}

    def __len__(self) -> int:
        return len(self._runs)

    async def enqueue(self, user: HubUser, key: str, body: dict[str, Any]) -> Launched | None:
        """Put the job in line (saved first), or find it there or started. Returns once it is known: its container
        (it started at once, or had started already), or None (it waits: its place is in ``op queue``).
        A refusal (a request that can never be met, a policy) raises, and nothing is kept."""
        run = await self._ensure(user, key, body)
        if run is None or run.task is None:
            return await self._started(user, key)
        told = asyncio.ensure_future(run.told.wait())
        try:
            await asyncio.wait({run.task, told}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            told.cancel()
        if run.task.done():
            return run.task.result()
        return None

    async def join(self, user: HubUser, key: str, body: dict[str, Any]) -> Launched:
        """The job's container, once it has started (put in line first if it is not there). The caller may hang
        up: the job stays in line and starts all the same."""
        run = await self._ensure(user, key, body)
        if run is None or run.task is None:
            return await self._started(user, key)
        return await asyncio.shield(run.task)

    async def _started(self, user: HubUser, key: str) -> Launched:
        """The container of a job found started; or (another caller's row could not be saved) a 503 to ask again."""
        found = await self._find(user, key)
        if found is None:
            raise EngineUnavailable(f"job {key} could not be kept in the broker's line just now: ask again.")
        return found

    async def _ensure(self, user: HubUser, key: str, body: dict[str, Any]) -> _Run | None:
        """The run of (user, key): the one in progress, None when its container exists, else a new one (saved)."""
        run = self._runs.get((user.name, key))
        if run is not None:
            await run.spawned.wait()
            return run
        if await self._find(user, key) is not None:
            return None
        run = self._runs.get((user.name, key))  # another caller made it while we looked
        if run is not None:
            await run.spawned.wait()
            return run
        if sum(1 for name, _ in self._runs if name == user.name) >= self.max_per_user:
            raise TooBusy(f"you have {self.max_per_user} jobs waiting for GPUs at the broker (c.PtcudaBroker."
                          "max_queued_jobs): cancel one, or wait until one starts.")
        run = _Run()
        self._runs[(user.name, key)] = run  # before the first await below: one run per key
        try:
            submitted = await asyncio.to_thread(self.store.add, user.name, key, body, self.clock())
        except BaseException:
            self._runs.pop((user.name, key), None)
            run.spawned.set()  # a caller waiting on it finds no task: it looks for the container (none) and retries
            raise
        self._spawn(run, user.name, key, body, submitted)
        return run

    def _spawn(self, run: _Run, name: str, key: str, body: dict[str, Any], submitted: float) -> None:
        run.task = asyncio.get_running_loop().create_task(self._run(run, name, key, body, submitted))
        run.spawned.set()

        def done(t: asyncio.Task[Launched]) -> None:
            if self._runs.get((name, key)) is run:
                del self._runs[(name, key)]
            if not t.cancelled() and t.exception() is not None:
                log.info("job %s of %s did not start: %s", key, name, t.exception())

        run.task.add_done_callback(done)

    async def _run(self, run: _Run, name: str, key: str, body: dict[str, Any], submitted: float) -> Launched:
        try:
            user = self._user(name)
            found = await self._find(user, key)  # started by a broker killed before it could forget the row
            launched = found or await self._start(user, body, submitted=submitted, on_wait=run.note, key=key)
        except PtcudaError:
            await asyncio.to_thread(self.store.drop, name, key)  # nothing to keep: a joiner hears why
            raise
        await asyncio.to_thread(self.store.drop, name, key)
        if found is None:
            log.info("job %s of %s started in container %s after waiting %.0f s", key, name, launched.id[:12],
                     max(0.0, self.clock() - submitted))
        return launched

    async def reload(self) -> int:
        """Broker start: every saved job back in line, in its original order (each is in the queue before the
        next is added, so the queue sees them as they first came). How many."""
        rows = await asyncio.to_thread(self.store.all)
        for name, key, body, submitted in rows:
            if (name, key) in self._runs:
                continue
            run = _Run()
            self._runs[(name, key)] = run
            self._spawn(run, name, key, body, submitted)
            told = asyncio.ensure_future(run.told.wait())
            assert run.task is not None
            try:
                await asyncio.wait({run.task, told}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                told.cancel()
        if rows:
            log.info("%d job(s) back in the GPU queue from %s", len(rows), self.store.path)
        return len(rows)

    async def leave(self, user: HubUser, key: str) -> bool:
        """Take the job out of line (its owner cancelled it): its run stopped, its row gone. Whether it waited."""
        run = self._runs.pop((user.name, key), None)
        if run is not None and run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        dropped = await asyncio.to_thread(self.store.drop, user.name, key)
        return run is not None or dropped

    async def close(self) -> None:
        """The broker stops: stop waiting (the rows stay: the next start puts them back in line)."""
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
