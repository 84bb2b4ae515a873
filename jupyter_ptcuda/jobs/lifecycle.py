"""Running jobs to their end: watch, finalise, cancel, reconcile, and read or follow their output.

A mixin of :class:`~.manager.JobManager` (which owns the container service, the store and the SQLite thread).

*Finalising* (:meth:`JobLifecycle.finalise`) saves the container's whole output as ``job.log``, records
exit code and reason with one conditional state change (of several processes finalising the same job,
exactly one wins), rewrites ``manifest.json``, then removes the container. Whoever notices first that a
container has exited finalises it: the watcher (server, ``run --wait``), a follower of its log, a cancel,
or a reconcile (server start and every ``reconcile_interval``, ``jobs list`` in the CLI).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from traitlets.config import LoggingConfigurable

from ..containers import labels as L
from ..containers.base import ContainerService
from ..containers.types import DEADLINE_STATUS, ContainerState
from ..errors import Conflict, LaunchError, NotFound, PtcudaError
from . import outputs as O
from .executed import write_executed
from .store import ACTIVE, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING, TIMED_OUT, Job, JobStore
from .tracking import JobTracker

T = TypeVar("T")


def outcome(job: Job, state: ContainerState | None) -> tuple[str, str, int | None]:
    """(state, reason, exit code) of a job whose container has exited (``state``) or is gone (None: on
    Kubernetes a cancel deletes the Job, so a cancelled job's container is gone)."""
    if state is None:
        if job.cancel_reason == TIMED_OUT:
            return TIMED_OUT, "timed out", None
        if job.cancel_reason:
            return CANCELLED, "cancelled", None
        return FAILED, "container lost", None
    code = state.exit_code
    if job.cancel_reason == TIMED_OUT or state.status == DEADLINE_STATUS:
        return TIMED_OUT, "timed out", code
    if job.cancel_reason:
        return CANCELLED, "cancelled", code
    if state.oom_killed:
        return FAILED, "OOMKilled", code
    return (COMPLETED, "completed", code) if code == 0 else (FAILED, "failed", code)


def _open_log(job: Job) -> Any:
    """``job.log`` opened for the tee (from the start: the stream replays everything), or None.

    Through the job folder's descriptor, never a link: see :func:`.outputs.open_log`."""
    return O.open_log(job)


class JobLifecycle(LoggingConfigurable):
    """Watch/finalise/cancel/reconcile/logs. Needs the attributes and traits JobManager defines."""

    service: ContainerService
    store: JobStore
    cancel_grace: float
    poll_interval: float
    queued_grace: float = 600.0  # a queued job without container older than this was abandoned
    _watchers: dict[str, asyncio.Task]
    _dispatching: dict[str, asyncio.Task]
    _finalising: set[asyncio.Task]
    _locks: dict[str, asyncio.Lock]
    #: The clocks: ``clock`` (epoch seconds) for timeouts and what the store records, ``monotonic`` for the
    #: cancel grace. Tests set both to a fake clock on the instance and move it.
    clock: Callable[[], float] = staticmethod(time.time)
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    tracker: JobTracker  # MLflow (jobs.tracking): live() beside the watcher, finish() when a job ends

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        raise NotImplementedError

    async def get(self, job_id: str) -> Job:
        return await self._db(self.store.get, job_id)

    async def _leave_queue(self, job_id: str) -> None:
        raise NotImplementedError

    async def _requeue(self, job: Job, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _lock(self, job_id: str) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    # -- waiting for a scheduler (Kubernetes) -------------------------------------------------------
    def _pending(self, info: ContainerState | None) -> bool:
        """A container that waits to be scheduled (a Kubernetes job's pod still Pending): not ended, not
        running. Only a backend that ``waits_for_scheduler`` has such; Docker's start at once."""
        return (info is not None and not info.running and info.exit_code is None and info.status == "created"
                and self.service.waits_for_scheduler)

    async def _still_pending(self, job: Job) -> Job | None:
        """While a job's pod is Pending: its reason, ``pending: <the scheduler's word>``, kept up to date in
        the store (the Jobs API and ``jobs list`` show it); past the backend's launch timeout the pod is
        deleted and the job fails ("start failed: ... stayed Pending ..."). The job, or None once it is
        no longer pending."""
        try:
            said = await self.service.pending(job.container_id or "")
        except LaunchError as exc:
            if await self._db(self.store.transition, job.id, FAILED, finished=self.clock(),
                              reason=f"start failed: {exc.message.splitlines()[0]}"):
                await asyncio.to_thread(O.write_manifest, await self.get(job.id))
                self.log.info("jupyter-ptcuda: job %s failed: %s", job.id, exc.message.splitlines()[0])
            self.service.release(job.id)
            return await self.get(job.id)
        if said is None:
            return None
        reason = f"pending: {said or 'waiting for a node'}"
        if reason != job.reason and job.state == QUEUED:
            job = await self._db(self.store.update, job.id, reason=reason)
        return job

    async def _mark_running(self, job: Job, info: ContainerState) -> bool:
        """queued → running, from the container's start; the image digest from what it runs when none
        was known at submit (Kubernetes: the nodes pull; the container status's imageID says what)."""
        fields: dict[str, Any] = {"started": info.started_at or self.clock(), "reason": None, **self._digest(job, info)}
        return await self._db(self.store.transition, job.id, RUNNING, **fields)

    def _digest(self, job: Job, info: ContainerState | None) -> dict[str, str]:
        """``{"image_digest": ...}`` from the running container when the job's digest is only a name."""
        if info is not None and info.image_id and "sha256:" not in job.image_digest:
            return {"image_digest": self.service.image_digest(info)}
        return {}

    # -- watching and finalising ------------------------------------------------------------------
    def spawn_watch(self, job_id: str) -> asyncio.Task:
        """Watch a job in the background (once per job and process)."""
        task = self._watchers.get(job_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._watch_logged(job_id))
            self._watchers[job_id] = task

            def forget(done: asyncio.Task) -> None:
                if self._watchers.get(job_id) is done:
                    del self._watchers[job_id]

            task.add_done_callback(forget)
        return task

    async def _watch_logged(self, job_id: str) -> Job | None:
        try:
            return await self.watch(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a background task: say it, the next reconcile retries
            self.log.exception("jupyter-ptcuda: watching job %s failed", job_id)
            return None

    async def watch(self, job_id: str) -> Job:
        """Until the job ends: tee its output into ``job.log``, enforce its timeout, then finalise it."""
        job = await self.get(job_id)
        if job.terminal or not job.container_id:
            return job
        cid = job.container_id
        log_file = await asyncio.to_thread(_open_log, job)

        def sink(chunk: bytes) -> None:
            if log_file is not None:
                log_file.write(chunk)
                log_file.flush()

        async def tee() -> None:
            try:
                async for _ in self.service.follow(cid, sink):
                    pass
            except PtcudaError:  # gone or being removed: finalise fetches the whole output anyway
                pass

        tee_task: asyncio.Task | None = None  # started once its pod left Pending (Kubernetes): from its first byte
        live = asyncio.get_running_loop().create_task(self.tracker.live(lambda: self.get(job_id)))
        try:
            while True:
                info = await self.service.inspect(cid)
                if self._pending(info):
                    pending = await self._still_pending(job)
                    if pending is not None:
                        if pending.terminal:
                            return pending
                        await asyncio.sleep(self.poll_interval)
                        job = await self.get(job_id)
                        if job.terminal:
                            return job
                        continue
                    info = await self.service.inspect(cid)
                if tee_task is None:
                    tee_task = asyncio.get_running_loop().create_task(tee())
                if info is None or not info.running:
                    await asyncio.wait({tee_task}, timeout=5)
                    return await self.finalise(job_id, info)
                if job.state == QUEUED:  # its pod runs now (Kubernetes)
                    await self._mark_running(job, info)
                    job = await self.get(job_id)
                wait = self.poll_interval
                if job.timeout and job.started:
                    # where the backend enforces it (a Job's activeDeadlineSeconds), this is a backstop
                    backstop = self.cancel_grace + 30 if self.service.enforces_deadlines else 0
                    left = job.started + job.timeout + backstop - self.clock()
                    if left <= 0 and not job.cancel_reason:
                        return await self.cancel(job_id, reason=TIMED_OUT)
                    wait = max(0.05, min(wait, left))
                if tee_task.done():
                    await asyncio.sleep(wait)
                else:
                    await asyncio.wait({tee_task}, timeout=wait)
                job = await self.get(job_id)
                if job.terminal:
                    return job
        finally:
            live.cancel()
            if tee_task is not None:
                tee_task.cancel()
                await asyncio.gather(tee_task, return_exceptions=True)
            if log_file is not None:
                await asyncio.to_thread(log_file.close)

    async def finalise(self, job_id: str, info: ContainerState | None | bool = True) -> Job:
        """Record how an exited (or vanished) job ended, keep its output and remove its container.

        ``info``: the container's inspect (None = gone; True = look it up). A container still running is
        left alone. Idempotent, and safe against other processes doing the same (one wins). Shielded: a
        cancelled caller (server stop) does not interrupt it between recording and removing.
        """
        task = asyncio.get_running_loop().create_task(self._finalise(job_id, info))
        self._finalising.add(task)
        task.add_done_callback(self._finalising.discard)
        return await asyncio.shield(task)

    async def _finalise(self, job_id: str, info: ContainerState | None | bool) -> Job:
        async with self._lock(job_id):
            job = await self.get(job_id)
            if job.terminal:
                return job
            cid = job.container_id
            if info is True:
                info = await self.service.inspect(cid) if cid else None
            assert not isinstance(info, bool)
            if info is not None and (info.running or self._pending(info)):
                return job
            if info is not None and cid:
                try:
                    data = await self.service.log_bytes(cid)
                    await asyncio.to_thread(O.save_log, job, data)
                except (NotFound, Conflict):  # removed (or being removed) by whoever finalised it
                    pass
            if job.state == QUEUED and info is not None:
                await self._mark_running(job, info)
                job = await self.get(job_id)
            state, reason, code = outcome(job, info)
            finished = (info.finished_at if info else None) or self.clock()
            won = await self._db(self.store.transition, job_id, state, reason=reason, exit_code=code, finished=finished)
            job = await self.get(job_id)
            if won:
                await asyncio.to_thread(write_executed, job)  # a notebook job: outputs/<job>/<name>.ipynb
                await asyncio.to_thread(O.write_manifest, job)
                self.log.info("jupyter-ptcuda: job %s %s (%s, exit code %s)", job.id, job.state, job.reason, job.exit_code)
            if cid:
                await self.service.remove(cid)
            self.service.release(job_id)
            if won:  # the run's last values, artifacts and status, once the container and its GPUs are freed
                await self.tracker.finish(job)
        self._locks.pop(job_id, None)
        return job

    # -- cancel -----------------------------------------------------------------------------------
    async def cancel(self, job_id: str, reason: str = CANCELLED) -> Job:
        """SIGTERM, ``cancel_grace`` seconds, SIGKILL; the job ends ``cancelled`` (or ``timed_out``).

        Conflict (409) when the job has already finished. Returns the finalised job.
        """
        job = await self.get(job_id)
        job_id = job.id
        if job.terminal:
            raise Conflict(f"job {job_id} has already finished ({job.state}); there is nothing to cancel.")
        if job.state == QUEUED and not job.container_id:
            reason_text = "timed out" if reason == TIMED_OUT else "cancelled"
            if await self._db(self.store.transition, job_id, reason, reason=reason_text, finished=self.clock()):
                await self._leave_queue(job_id)  # waiting for GPUs: out of the line
                job = await self.get(job_id)
                await asyncio.to_thread(O.write_manifest, job)
                return job
            job = await self.get(job_id)
        if not job.cancel_reason:
            job = await self._db(self.store.update, job_id, cancel_reason=reason)
        cid = job.container_id
        if cid:
            await self.service.signal(cid, "SIGTERM")
            if not await self._exited(cid, self.cancel_grace):
                self.log.info("jupyter-ptcuda: job %s ignored SIGTERM for %.0f s: SIGKILL", job_id, self.cancel_grace)
                await self.service.signal(cid, "SIGKILL")
                await self._exited(cid, 30)
        return await self.finalise(job_id)

    async def _exited(self, cid: str, within: float) -> bool:
        deadline = self.monotonic() + within
        while True:
            info = await self.service.inspect(cid)
            if info is None or not (info.running or self._pending(info)):
                return True
            if self.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)

    # -- reconcile --------------------------------------------------------------------------------
    async def reconcile(self, *, adopt: bool) -> list[Job]:
        """Bring every queued/running job in line with its container (after a restart, for CLI jobs).

        Running → watched here when ``adopt`` (server), else only its timeout is enforced (CLI);
        exited → finalised; gone → failed, "container lost". A container left behind by a finished job (its
        finaliser stopped between recording and removing) is removed. Returns the jobs it looked at.
        """
        containers = {c.tag.id: c for c in await self.service.list(L.JOB)}
        jobs = await self._db(self.store.list_jobs, ACTIVE)
        active = {j.id for j in jobs}
        for job_id in [j for j in self._dispatching if j not in active]:  # cancelled elsewhere (the CLI) while queued
            await self._leave_queue(job_id)
        for job_id, c in containers.items():
            if job_id and job_id not in active and not self._finalising:
                try:
                    done = (await self.get(job_id)).terminal
                except NotFound:  # another store's job: not ours to judge
                    continue
                if done:
                    await self.service.remove(c.id)
        for job in jobs:
            task = self._watchers.get(job.id) or self._dispatching.get(job.id)
            if task is not None and not task.done():
                continue
            found = containers.get(job.id)
            cid: str | None = found.id if found else job.container_id
            info = await self.service.inspect(cid) if cid else None
            if info is None and job.state == QUEUED:
                record = await self._db(self.store.launch_of, job.id)
                if record is not None:  # waiting in the GPU queue: the server's to (re-)queue, nobody else's
                    if adopt:
                        await self._requeue(job, record)
                    continue
            if info is None:
                if job.state == QUEUED and self.clock() - job.created < self.queued_grace:
                    continue  # being started by another process right now
                if job.state == QUEUED:
                    await self._db(self.store.transition, job.id, FAILED, finished=self.clock(),
                                   reason="never started (the submitting process stopped)")
                    continue
                await self.finalise(job.id, None)
                continue
            if job.container_id != cid:
                await self._db(self.store.update, job.id, container_id=cid)
            if self._pending(info):  # its pod waits for a node (Kubernetes): the watcher says why
                if adopt:
                    self.spawn_watch(job.id)
                continue
            if not info.running:
                await self.finalise(job.id, info)
                continue
            if job.state == QUEUED:  # started while nobody here waited (the Hub broker's line, this server away)
                await self._mark_running(job, info)
                await self._db(self.store.drop_launch, job.id)
            if adopt:
                self.log.info("jupyter-ptcuda: watching job %s again (container %s)", job.id, info.id[:12])
                self.spawn_watch(job.id)
            elif job.timeout and job.started and self.clock() > job.started + job.timeout:
                await self.cancel(job.id, reason=TIMED_OUT)
        return jobs

    # -- output -----------------------------------------------------------------------------------
    async def read_log(self, job_id: str, offset: int = 0) -> tuple[bytes, Job]:
        """The job's output from byte ``offset``: from the container while it exists, else ``job.log``."""
        job = await self.get(job_id)
        if not job.terminal and job.container_id and job.state != QUEUED:  # queued: its pod has no log yet
            cid = job.container_id
            try:
                data = await self.service.log_bytes(cid)
                return data[max(0, offset):], job
            except (NotFound, Conflict):
                job = await self.get(job_id)
        return await asyncio.to_thread(O.read_log, job, offset), job

    async def follow(self, job_id: str, offset: int = 0) -> AsyncIterator[bytes]:
        """The job's output from byte ``offset`` as it comes, until the job has ended and all is read.

        While the container exists it is streamed from the engine; when it exits the job is finalised
        (here, if nobody else has) and the rest is read from ``job.log``, so nothing is lost or repeated.
        """
        job = await self.get(job_id)
        pos = offset
        while not job.terminal and job.container_id:
            cid, seen = job.container_id, 0
            try:
                async for chunk in self.service.follow(cid):
                    end = seen + len(chunk)
                    if end > pos:
                        yield chunk[max(0, pos - seen):]
                        pos = end
                    seen = end
            except (NotFound, Conflict, LaunchError):  # gone, being removed, or still Pending (Kubernetes)
                pass
            # the stream ends as the process exits, a moment before the engine says the container has
            await self._exited(cid, 5)
            job = await self.finalise(job.id)
            if not job.terminal:  # the stream broke while the container still runs: follow it again
                await asyncio.sleep(0.5)
        rest = await asyncio.to_thread(O.read_log, job, pos)
        if rest:
            yield rest
