"""Rerun a job that has ended: the same code, parameters, GPUs, mounts and image digest, as a new job.

A mixin of :class:`~.manager.JobManager`; callers: ``POST jupyter-ptcuda/jobs/<id>/rerun`` (the Jobs view's
Rerun button) and ``jupyter ptcuda jobs rerun JOB``.

What "the same" means:

- **code**: the original's script snapshot. A notebook job reruns its exported ``train.py`` (copied into the
  new job's folder; the notebook is not exported again, so later edits do not leak in); a script job reruns
  its ``.py`` only if its sha256 is still the one recorded (else 409: submit it as a new job);
- **parameters and arguments**: the recorded ``args`` (the flags the parameters became, then the rest);
- **image**: the recorded ``image_digest`` (``REPO@sha256:...``), pulled when missing under
  ``c.JobManager.pull_policy``/``pull_timeout``; an image known only by its local id cannot be pulled, which
  the refusal says;
- **GPUs, mounts, limits, network**: what the original asked for (its ``meta.launch``, recorded at submit);
  GPUs it shared with a kernel are shared again while that kernel runs, else claimed from the ledger;
- **environment**: the job's own variables and the server's allowlisted env *now*; env values are not
  recorded in the job store, so a secret never lands there.

The policy is applied again (an image or mount no longer allowed is refused) and the job runs as this
server's user. The new job's ``meta.rerun_of`` (and its ``manifest.json``'s ``rerun_of``) names the original.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from traitlets import CaselessStrEnum, Float
from traitlets.config import LoggingConfigurable

from ..containers import labels as L
from ..containers import policy as P
from ..containers.base import ContainerService
from ..containers.build import Request, build
from ..containers.gpus import GpuRequest, parse_gpus
from ..containers.identity import this_server, username
from ..containers.spec import ContainerSpec, Mount, filter_env, parse_size
from ..containers.types import ImageInfo
from ..errors import Conflict, ImageNotFound, NotFound, PtcudaError
from ..images import L_CUDA, L_TORCH
from ..nofollow import read_bytes
from . import outputs as O
from .request import job_command
from .store import Job


def rerun_record(spec: ContainerSpec, *, inherited_gpus: bool) -> dict[str, Any]:
    """What a rerun needs beyond the job's row (``meta.launch``): the GPUs as asked (before the ledger picks
    devices), mounts, limits and network of ``spec`` (no env values: the store is no place for secrets)."""
    g = spec.gpus
    gpus: Any = g.count if g.mode == "count" else list(g.ids) if g.mode == "ids" else g.mode
    return {"gpus": gpus, "inherited_gpus": inherited_gpus,
            "mounts": [[m.source, m.target, m.read_only] for m in spec.mounts],
            "shm_size": spec.shm_size, "cpus": spec.cpus, "pids_limit": spec.pids_limit,
            "network_mode": spec.network_mode}


def _recorded_gpus(job: Job, record: dict[str, Any]) -> GpuRequest:
    """The GPUs a rerun asks for: as the original asked (``meta.launch``), else its row's label."""
    if "gpus" in record:
        return parse_gpus(record["gpus"])
    label = job.gpus or "none"
    return parse_gpus(int(label.split(":", 1)[1]) if label.startswith("count:") else label)


class JobRerun(LoggingConfigurable):
    """Needs JobManager's ``get``, ``_db``, ``_configured``, ``_limit``, ``_start``, ``service``, ``tracker``,
    ``python`` and ``clock``."""

    pull_policy = CaselessStrEnum(["missing", "always", "never"], "missing", config=True, help="""When a rerun
        pulls the image digest its original ran: "missing" (default: when it is not on this host), "always", or
        "never" (refuse when missing). Example: c.JobManager.pull_policy = "never" """)
    pull_timeout = Float(900, config=True, help="""Seconds a rerun's image pull may take (default 900).
        Example: c.JobManager.pull_timeout = 1800""")

    service: ContainerService
    store: Any
    python: str
    tracker: Any
    clock: Callable[[], float]
    get: Callable[[str], Coroutine[Any, Any, Job]]
    _db: Callable[..., Coroutine[Any, Any, Any]]
    _configured: Callable[[], Any]
    _limit: Callable[[str, Any], str]
    _start: Callable[..., Coroutine[Any, Any, Job]]

    async def rerun(self, job_id: str, *, owner: str = "", watch: bool = True) -> Job:
        """Submit a new job that runs what job ``job_id`` ran (see the module docstring); returns it as
        :meth:`~.manager.JobManager.submit` does. 409 while the original still runs or when its script changed
        since; 404 for an unknown job or a snapshot that is gone; refusals leave nothing behind."""
        orig = await self.get(job_id)
        if not orig.terminal:
            raise Conflict(f"job {orig.id} is still {orig.state}: rerun it once it has ended (or cancel it first).")
        source = await asyncio.to_thread(_snapshot, orig)
        pinned = orig.image_digest or orig.image
        info = await self._rerun_image(orig, pinned)
        opts = self._configured()
        record = dict(orig.meta.get("launch") or {})
        shares = bool(record.get("inherited_gpus")) and await self._kernel_runs(orig.kernel_id)
        gpus = _recorded_gpus(orig, record)
        if not shares:  # claimed anew: within the job ceilings, as a submission's
            gpus = P.narrow_gpus(gpus, parse_gpus(opts.gpus), asked=gpus.label(), limit=self._limit("gpus", opts.gpus))
        mem = orig.meta.get("mem_limit")
        mem = P.narrow_size(mem, parse_size(opts.mem_limit, "mem_limit"), what="mem_limit", asked=P.format_size(mem),
                            limit=self._limit("mem_limit", opts.mem_limit))
        new_id = uuid.uuid4().hex[:12]
        workdir = orig.workdir
        user = str(orig.meta.get("user") or opts.container_user(workdir))
        out_dir = await asyncio.to_thread(O.make_output_dir, workdir, new_id, user)
        try:
            script = Path(orig.script)
            if orig.notebook:  # the exported snapshot, not a fresh export of the notebook as it is now
                script = out_dir / "train.py"
                await asyncio.to_thread(O.write_atomic, script, source, server_folder=True)
            env = {**filter_env(os.environ, opts.env_allowlist), "JUPYTER_PTCUDA_JOB_ID": new_id,
                   "JUPYTER_PTCUDA_OUTPUT_DIR": str(O.artifacts_dir(out_dir)), "PYTHONUNBUFFERED": "1",
                   **await asyncio.to_thread(self.tracker.container_env, out_dir, user)}
            if script.parent != Path(workdir):
                inherited = info.env.get("PYTHONPATH")
                env["PYTHONPATH"] = workdir + (f":{inherited}" if inherited else "")
            nproc = orig.meta.get("nproc_per_node")
            command = job_command(self.python, str(script), orig.args, nproc)
            default = Request(kind=L.JOB, image="", command=())
            request = Request(
                kind=L.JOB, image=orig.image or pinned, command=tuple(command), run_as=user, workdir=workdir,
                gpus=gpus, mounts=tuple(Mount(str(s), str(t), bool(ro)) for s, t, ro in record.get("mounts", [])),
                env=env, shm_size=record.get("shm_size", default.shm_size), mem_limit=mem, cpus=record.get("cpus"),
                pids_limit=record.get("pids_limit", default.pids_limit),
                network_mode=str(record.get("network_mode") or default.network_mode), id=new_id,
                notebook=orig.notebook or orig.script, name=f"ptcuda-job-{new_id}", image_labels=info.labels)
            configured = [opts.image, *([orig.image] if orig.kernel_id else [])]  # a kernelspec's image, as at submit
            spec = build(request, opts.policy(configured=configured), this_server())
            created = self.clock()
            spec = dataclasses.replace(spec, image=pinned,
                                       labels={**spec.labels, L.NAME: orig.name, L.QUEUED_AT: repr(created)})
            gpu_resource = orig.meta.get("gpu_resource") or None
            self.service.validate(spec, timeout=orig.timeout, gpu_resource=gpu_resource)
        except PtcudaError:
            await asyncio.to_thread(O.remove_job_folder, Job(id=new_id, output_dir=str(out_dir)))
            raise
        labels = info.labels
        job = Job(
            id=new_id, owner=owner or username(), name=orig.name, notebook=orig.notebook,
            notebook_sha256=orig.notebook_sha256, script=str(script), script_sha256=orig.script_sha256,
            workdir=workdir, output_dir=str(out_dir), parameters=dict(orig.parameters), args=list(orig.args),
            image=orig.image, image_digest=pinned, gpus=spec.gpus.label(), created=created, timeout=orig.timeout,
            requirements=list(orig.requirements),
            meta={"command": command, "torch": labels.get(L_TORCH) or orig.meta.get("torch"),
                  "cuda": labels.get(L_CUDA) or orig.meta.get("cuda"), "git_commit": orig.meta.get("git_commit"),
                  "mem_limit": spec.mem_limit, "nproc_per_node": nproc, "user": spec.user,
                  **({"gpu_resource": gpu_resource} if gpu_resource else {}), "export_warnings": [],
                  "launch": rerun_record(spec, inherited_gpus=shares), "rerun_of": orig.id},
        )
        await self._db(self.store.insert, job)
        self.log.info("jupyter-ptcuda: job %s reruns job %s (image %s)", new_id, orig.id, pinned[:60])
        return await self._start(job, spec, opts.gpu_fallback, watch=watch, gpu_resource=gpu_resource,
                                 inherited_gpus=shares)

    async def _kernel_runs(self, kernel_id: str | None) -> bool:
        if not kernel_id:
            return False
        try:
            await self.service.find(L.KERNEL, kernel_id)
        except NotFound:
            return False
        return True

    async def _rerun_image(self, orig: Job, ref: str) -> ImageInfo:
        """The image ``ref`` (the original's digest), pulled under ``pull_policy``; ImageNotFound with the fix."""
        present: ImageInfo | None = None
        try:
            present = await self.service.image(ref)
        except ImageNotFound:
            pass
        if self.pull_policy == "never" or (present is not None and self.pull_policy == "missing"):
            if present is None:
                raise ImageNotFound(f"job {orig.id} ran image {ref}, which is not on this host (c.JobManager."
                                    f"pull_policy='never'): pull it (`docker pull {ref}`) and rerun.")
            return present
        if "@sha256:" not in ref:  # a local image id or a bare name: nothing a registry can serve by digest
            if present is not None:
                return present
            raise ImageNotFound(f"job {orig.id} ran image {orig.image} ({ref[:19]}), which is no longer on this host "
                                "and was never pushed to a registry, so it cannot be pulled: rebuild it (`jupyter "
                                f"ptcuda image build --tag {orig.image} --push`) and submit the job again.")
        try:
            await self.service.pull(ref, self.pull_timeout)
        except PtcudaError as exc:
            if present is None:
                raise
            self.log.warning("jupyter-ptcuda: pull of %s failed, the rerun uses the local copy: %s", ref, exc)
            return present
        return await self.service.image(ref)


def _snapshot(orig: Job) -> bytes:
    """The code job ``orig`` ran (its ``script``, read through no link); 404 when gone, 409 when changed."""
    try:
        data = read_bytes(orig.script)
    except OSError:
        raise NotFound(f"job {orig.id}'s script {orig.script} is gone, so it cannot be rerun as it ran: "
                       "submit the notebook or script again as a new job.") from None
    if orig.script_sha256 and hashlib.sha256(data).hexdigest() != orig.script_sha256:
        raise Conflict(f"{os.path.basename(orig.script)} has changed since job {orig.id} ran, so a rerun would not run "
                       "the same code: submit it as a new job (`jupyter ptcuda run` or the Run job button).")
    return data
