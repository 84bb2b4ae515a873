"""Jobs that wait for GPUs: submit returns while the job waits in line, it starts by itself, and the line
survives a restart of the server.

A mixin of :class:`~.manager.JobManager`. The waiting itself is the allocation layer's GPU queue
(:mod:`jupyter_ptcuda.containers.dispatch`): :meth:`JobQueueing._start` launches in a task with an
``on_pending`` callback and returns as soon as the job runs, fails, or is told it waits — then the job is
``queued`` with its reason and place ("waiting for 1 GPU: 2 requests ahead of you; GPUs held by your job
train-lr0.1"), kept up to date in the store, and its launch record (container spec and options) is saved in
the job store (table ``launches``) until it starts. After a restart (even SIGKILL) the server's reconcile
re-queues every queued job that has a launch record and no container (:meth:`JobQueueing._requeue`), with
its first time in line (the spec's ``queued-at`` label), so the order is kept; a container that does
exist is adopted instead, and the engine refuses a second container of the same name, so each job runs
once. Cancelling a queued job takes it out of the line (:meth:`JobQueueing._leave_queue`).

Under the Hub the line is the broker's, which keeps a waiting job when this server stops (culled, killed)
and starts it when the GPUs free up; the launch record stays here too, so a restarted server asks again —
which joins the same place in the broker's line (keyed by the job id) or gets the container it started —
and reconcile adopts a container the broker started while the server was away.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

from traitlets.config import LoggingConfigurable

from ..containers import labels as L
from ..containers.base import ContainerService
from ..containers.spec import ContainerSpec
from ..containers.wire import spec_from_json, spec_to_json
from ..errors import PtcudaError
from .store import QUEUED, Job, JobStore


def launch_record(spec: ContainerSpec, *, gpu_fallback: str, inherited_gpus: bool, gpu_resource: str | None,
                  watch: bool) -> dict[str, Any]:
    """What :meth:`JobQueueing._requeue` needs to launch a queued job after a restart (jobs carry no files)."""
    return {"spec": spec_to_json(spec), "gpu_fallback": gpu_fallback, "inherited_gpus": inherited_gpus,
            "gpu_resource": gpu_resource, "watch": watch}


def spec_of_record(record: dict[str, Any]) -> ContainerSpec:
    data = record["spec"]
    spec = spec_from_json(data)
    return dataclasses.replace(spec, bind_ip=str(data.get("bind_ip") or spec.bind_ip), init=bool(data.get("init", True)),
                               ulimits={str(k): (int(v[0]), int(v[1])) for k, v in (data.get("ulimits") or {}).items()})


class JobQueueing(LoggingConfigurable):
    """Needs JobManager's store, ``_db``, ``get`` and ``_launch`` (the launch of one job, to its running state)."""

    store: JobStore
    service: ContainerService
    _dispatching: dict[str, asyncio.Task]
    _reasons: dict[str, str]
    _launch: Callable[..., Coroutine[Any, Any, Job]]
    _db: Callable[..., Coroutine[Any, Any, Any]]
    get: Callable[[str], Coroutine[Any, Any, Job]]

    async def _start(self, job: Job, spec: ContainerSpec, gpu_fallback: str, *, inherited_gpus: bool,
                     watch: bool, gpu_resource: str | None = None) -> Job:
        """Launch ``job``; returns once it runs (or is created, where a scheduler places it), failed (raises,
        as before), or waits in the GPU queue (then queued, with its reason and a launch record)."""
        loop = asyncio.get_running_loop()
        told: asyncio.Future[str] = loop.create_future()

        def on_wait(reason: str) -> None:
            if not told.done():
                told.set_result(reason)
            else:
                self._note_reason(job.id, reason)

        task = self._spawn_launch(job, spec, gpu_fallback, inherited_gpus=inherited_gpus, watch=watch,
                                  gpu_resource=gpu_resource, on_wait=on_wait)
        await asyncio.wait({task, told}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        record = launch_record(spec, gpu_fallback=gpu_fallback, inherited_gpus=inherited_gpus,
                               gpu_resource=gpu_resource, watch=watch)
        await self._db(self.store.save_launch, job.id, record)
        await self._db(self.store.note, job.id, QUEUED, reason=told.result())
        self.log.info("jupyter-ptcuda: job %s (%s) %s", job.id, job.name, told.result())
        if task.done():  # started (or failed) while the record was written
            await self._db(self.store.drop_launch, job.id)
        return await self.get(job.id)

    async def _queue_for_server(self, job: Job, spec: ContainerSpec, gpu_fallback: str, *, inherited_gpus: bool,
                                watch: bool, gpu_resource: str | None, held: str) -> Job:
        """The CLI, whose GPUs are held (``held``: the ledger's sentence): the job stays ``queued`` with its launch
        record, as a server's waiting job does. A Jupyter server's GPU queue takes it — a running one at its next
        reconcile (``c.JobManager.reconcile_interval``), else the next to start — at its place (its first time in
        line), so one process, the server, grants the GPUs; ``jobs cancel`` takes it out."""
        record = launch_record(spec, gpu_fallback=gpu_fallback, inherited_gpus=inherited_gpus,
                               gpu_resource=gpu_resource, watch=watch)
        await self._db(self.store.save_launch, job.id, record)
        reason = (f"waiting for GPUs ({held.splitlines()[0].rstrip('.')}): the GPU queue of the Jupyter server starts "
                  "it when they free up (a running server takes it within c.JobManager.reconcile_interval; otherwise "
                  "start one: `jupyter lab`)")
        await self._db(self.store.note, job.id, QUEUED, reason=reason)
        self.log.info("jupyter-ptcuda: job %s (%s) %s", job.id, job.name, reason)
        return await self.get(job.id)

    def _spawn_launch(self, job: Job, spec: ContainerSpec, gpu_fallback: str, *, inherited_gpus: bool, watch: bool,
                      gpu_resource: str | None, on_wait: Callable[[str], None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(
            self._launch(job, spec, gpu_fallback, inherited_gpus=inherited_gpus, watch=watch,
                         gpu_resource=gpu_resource, on_wait=on_wait))
        self._dispatching[job.id] = task

        def done(t: asyncio.Task) -> None:
            if self._dispatching.get(job.id) is t:
                del self._dispatching[job.id]
            if not t.cancelled():
                t.exception()  # a failure is recorded in the store by _launch (and raised to a caller still waiting)

        task.add_done_callback(done)
        return task

    def _note_reason(self, job_id: str, reason: str) -> None:
        """A waiting job's new reason, written to the store by one writer per job (latest wins)."""
        first = job_id not in self._reasons
        self._reasons[job_id] = reason
        if first:
            asyncio.get_running_loop().create_task(self._write_reasons(job_id))

    async def _write_reasons(self, job_id: str) -> None:
        written = None
        try:
            while self._reasons.get(job_id) not in (None, written):
                written = self._reasons[job_id]
                await self._db(self.store.note, job_id, QUEUED, reason=written)
        except PtcudaError:
            pass
        finally:
            if self._reasons.get(job_id) == written:
                self._reasons.pop(job_id, None)

    async def _requeue(self, job: Job, record: dict[str, Any]) -> None:
        """A queued job with a launch record and no container (the server restarted): back in line, at its place."""
        spec = spec_of_record(record)
        if L.QUEUED_AT not in spec.labels:
            spec = dataclasses.replace(spec, labels={**spec.labels, L.QUEUED_AT: repr(job.created)})
        self.log.info("jupyter-ptcuda: job %s (%s) back in the GPU queue", job.id, job.name)
        self._spawn_launch(job, spec, str(record.get("gpu_fallback") or "error"),
                           inherited_gpus=bool(record.get("inherited_gpus")), watch=bool(record.get("watch", True)),
                           gpu_resource=record.get("gpu_resource"), on_wait=lambda r: self._note_reason(job.id, r))

    async def _leave_queue(self, job_id: str) -> None:
        """A queued job was cancelled (or has ended): out of the line, its launch record gone."""
        task = self._dispatching.pop(job_id, None)
        try:  # a queue that outlives the launch call (the Hub broker's) is told; an in-process one is left below
            await self.service.leave_queue(L.JOB, job_id)
        except PtcudaError as exc:  # its container, if the broker still starts it, is removed by the next reconcile
            self.log.warning("jupyter-ptcuda: job %s not taken out of the broker's line: %s", job_id, exc.message)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for leftover in await self.service.list(L.JOB, id=job_id):  # cancelled while its container was made
                await self.service.remove(leftover.id)
        await self._db(self.store.drop_launch, job_id)
