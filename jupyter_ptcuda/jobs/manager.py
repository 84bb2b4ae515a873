"""JobManager: submit, watch, cancel and reconcile batch jobs (a script in a container).

Who calls what:

- The server extension creates one (``JobManager(service=..., parent=ext, root_dir=...)``), awaits
  :meth:`start` at server start (reconcile, then re-check every ``reconcile_interval``) and :meth:`stop`
  at server stop (stops *watching*; jobs keep running and are picked up by the next start).
- ``server.job_handlers`` calls :meth:`submit`, :meth:`get`, :meth:`list_jobs`, :meth:`read_log`, :meth:`follow`
  and :meth:`cancel`.
- The CLI (``jobs.cli``) makes its own, with no server: ``run --wait`` is the job's watcher;
  ``jobs list`` reconciles without adopting (a finished job is finalised, an overdue one timed out).

A job's truth is its container (labels ``io.jupyter-ptcuda.kind=job`` and ``.job-id``) plus its row in the
:class:`~.store.JobStore`. Watching, finalising, cancelling and reconciling live in :mod:`.lifecycle`.
Containers go through the container service (:mod:`jupyter_ptcuda.containers.base`); a job's spec
is built by the same builder as a kernel's (:func:`~jupyter_ptcuda.containers.build.build`; from a kernel,
:func:`~jupyter_ptcuda.containers.build.job_from_kernel`); SQLite through one worker thread (``_db``: every store call, so the
event loop never waits on a lock held by another process); files and ``git`` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Float, TraitError, Unicode, default

from ..containers import labels as L
from ..containers import policy as P
from ..containers.base import ContainerService
from ..containers.build import build, job_from_kernel
from ..containers.factory import get_service
from ..containers.gpus import GpuRequest, parse_gpus
from ..containers.identity import this_server, username
from ..containers.options import ContainerOptions
from ..containers.spec import ContainerSpec, filter_env, parse_size
from ..containers.types import ImageInfo
from ..errors import ConfigError, GpuUnavailable, NoNvidiaRuntime, NotFound, PtcudaError, http_status
from ..images import DEFAULT_TAG, L_CUDA, L_TORCH
from ..nofollow import read_bytes
from . import outputs as O
from .imports import check_imports
from .lifecycle import JobLifecycle
from .listing import JobListing
from .queueing import JobQueueing
from .request import JobRequest, job_command, params_to_flags
from .rerun import JobRerun, rerun_record
from .store import FAILED, RUNNING, Job, JobStore
from .tracking import JobTracker, default_uri

T = TypeVar("T")


def refusal(exc: PtcudaError) -> bool:
    """Whether a start failure refused the request (no GPU free, a policy, no NVIDIA runtime) rather than
    failing a job that was allowed: a refusal leaves no job behind."""
    return http_status(exc) < 500 or isinstance(exc, NoNvidiaRuntime)


class JobOptions(ContainerOptions):
    """Container options of jobs: the kernel traits (``c.ContainerOptions.x`` sets both kernels and jobs,
    ``c.JobOptions.x`` jobs only). Per-job image/gpus/mem_limit from a request win over config."""

    gpu_resource = Unicode("", config=True, help="""Kubernetes backend only: the extended resource a job's
        GPUs are asked for as, e.g. a MIG profile "nvidia.com/mig-1g.18gb" (one of c.KubeBackend.gpu_resources).
        Default "": c.KubeBackend.gpu_resource. A job from a kernel takes its kernelspec's gpu_resource; a
        request's "gpu_resource" (--gpu-resource) wins. Ignored by Docker.
        Example: c.JobOptions.gpu_resource = "nvidia.com/mig-3g.71gb" """)

    @default("image")
    def _default_image(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_IMAGE", DEFAULT_TAG)


class JobManager(JobRerun, JobQueueing, JobLifecycle):
    """Batch jobs for one process (the server, or one CLI command). See the module docstring."""

    db_path = Unicode(config=True, help="""The job store (SQLite). Default: $JUPYTER_PTCUDA_JOBS_DB when set,
        else jupyter_data_dir()/jupyter_ptcuda/jobs.sqlite. Example: c.JobManager.db_path = "/srv/jobs.sqlite" """)
    cancel_grace = Float(10.0, config=True, help="""Seconds between SIGTERM and SIGKILL when a job is cancelled
        or times out (default 10). Example: c.JobManager.cancel_grace = 30""")
    reconcile_interval = Float(30.0, config=True, help="""Seconds between checks of jobs this server does not
        watch (started by the CLI without --wait): running ones are adopted, finished ones recorded
        (default 30; 0 = only at start).""")
    poll_interval = Float(2.0, config=True, help="Seconds between container checks of a watched job (default 2).")
    #: The CLI without a server sets it: a job whose GPUs are held is not refused but kept queued for a server's GPU
    #: queue (:meth:`~.queueing.JobQueueing._queue_for_server`); this process grants no GPU it would have to wait for.
    queue_for_server = False
    python = Unicode("python", config=True, help="Interpreter that runs the script in the image (default 'python').")
    import_check = Bool(config=True, help="""Before a job starts, check that its image can import what the script
        imports at the top level; if not, refuse the job (400) naming the missing packages and the `jupyter ptcuda
        image build` command that adds them (:mod:`jupyter_ptcuda.jobs.imports`). Default True, or
        $JUPYTER_PTCUDA_IMPORT_CHECK (0/false: off); a request's "import_check" wins.
        Example: c.JobManager.import_check = False""")

    mlflow_tracking = Bool(config=True, help="""Make every job an MLflow run (parameters, tags, the
        script's own metrics, GPU telemetry, artifacts; :mod:`jupyter_ptcuda.jobs.tracking`) when MLflow is
        installed (`pip install "jupyter-ptcuda[mlflow]"`). Default True, or $JUPYTER_PTCUDA_MLFLOW (0/false: off).
        Example: c.JobManager.mlflow_tracking = False""")

    @default("mlflow_tracking")
    def _default_mlflow_tracking(self) -> bool:
        return os.environ.get("JUPYTER_PTCUDA_MLFLOW", "1").strip().lower() not in ("0", "false", "no", "off")
    mlflow_tracking_uri = Unicode(config=True, help="""The MLflow store jobs are tracked in. Default:
        $MLFLOW_TRACKING_URI when set, else an embedded SQLite file of the user's,
        sqlite:///<jupyter_data_dir()>/jupyter_ptcuda/mlflow.db (artifacts in mlartifacts/ beside it). It never
        enters a job's container. Example: c.JobManager.mlflow_tracking_uri = "http://mlflow.internal:5000" """)

    @default("mlflow_tracking_uri")
    def _default_mlflow_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(jupyter_data_dir())

    @default("import_check")
    def _default_import_check(self) -> bool:
        return os.environ.get("JUPYTER_PTCUDA_IMPORT_CHECK", "1").strip().lower() not in ("0", "false", "no", "off")

    @default("db_path")
    def _default_db_path(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_JOBS_DB") or os.path.join(jupyter_data_dir(), "jupyter_ptcuda",
                                                                          "jobs.sqlite")

    def __init__(self, service: ContainerService | None = None, root_dir: str | None = None,
                 kernel_manager: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service or get_service(self.config)  # the CLI: c.ContainerBackend from its config files
        self.root_dir = root_dir
        self._kernel_manager = kernel_manager
        self.store = JobStore(self.db_path)
        self.listing = JobListing()  # GET jobs' JSON, touched only in the SQLite worker thread
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="ptcuda-jobs-db")
        self._watchers: dict[str, asyncio.Task] = {}
        self._finalising: set[asyncio.Task] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._dispatching: dict[str, asyncio.Task] = {}  # jobs on their way to a container (in the GPU queue)
        self._reasons: dict[str, str] = {}
        self._loop_task: asyncio.Task | None = None
        self.tracker = JobTracker(self.mlflow_tracking_uri, enabled=self.mlflow_tracking, save_meta=self._save_run)

    async def _save_run(self, job_id: str, info: dict[str, Any]) -> None:
        """The job's MLflow run (id, last metric values) into its ``meta["mlflow"]`` (the Jobs API shows it)."""
        await self._db(self.store.merge_meta, job_id, "mlflow", info)

    @property
    def kernel_manager(self) -> Any:
        """The server's kernel manager (for --from-kernel of kernels managed here), or None."""
        return self._kernel_manager or getattr(getattr(self.parent, "serverapp", None), "kernel_manager", None)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a JobStore call in the one SQLite worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, partial(fn, *args, **kwargs))

    # -- server lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Server start: reconcile every unfinished job, then keep doing so every ``reconcile_interval``."""
        await self._reconcile_quietly()
        if self.reconcile_interval > 0 and self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def stop(self) -> None:
        """Server stop: stop watching. Jobs keep running; the next :meth:`start` picks them up."""
        # jobs waiting for GPUs stop waiting here; their launch records bring them back at the next start
        tasks = [t for t in [self._loop_task, *self._watchers.values(), *self._dispatching.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._finalising:  # let a finalisation in progress record and remove its container
            await asyncio.wait(set(self._finalising), timeout=30)
        self._loop_task = None
        self._watchers.clear()
        self._dispatching.clear()

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            await self._reconcile_quietly()

    async def _reconcile_quietly(self) -> None:
        try:
            await self.reconcile(adopt=True)
        except PtcudaError as exc:
            self.log.warning("jupyter-ptcuda: jobs not reconciled: %s", exc.message.splitlines()[0])

    # -- queries ----------------------------------------------------------------------------------
    async def list_jobs(self, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[Job]:
        """Jobs from the store, newest first (no engine call; reconciling is :meth:`reconcile`'s job)."""
        return await self._db(self.store.list_jobs, states, limit)

    async def list_json(self, root: str | None, waiting: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """``GET jobs``: every job, newest first, as the JSON text of :func:`.listing.job_json` of each (paths
        relative to ``root``; ``waiting``: the GPU queue's view). Made in the SQLite worker thread, each finished
        job's text kept while its row is unchanged (:class:`.listing.JobListing`)."""
        return await self._db(lambda: self.listing.render(self.store.list_rows(), root, waiting))

    async def count_by_state(self) -> dict[str, int]:
        """{state: number of jobs} (the Prometheus metrics)."""
        return await self._db(self.store.count_by_state)

    # -- submit -----------------------------------------------------------------------------------
    async def submit(self, req: JobRequest, *, watch: bool = True, import_check: bool | None = None) -> Job:
        """Export (notebooks), pin the image, check its imports, record the job, claim GPUs, start the container.

        ``watch``: follow it here until it ends (the server; ``run --wait``). ``import_check``: None takes
        ``c.JobManager.import_check``. Errors before the job is recorded (bad request, export error, missing
        image, a package the image lacks) raise without a trace in the store, its folder or the engine; a
        start failure records the job as failed (reason "start failed: ...") and raises.
        """
        path = Path(req.path)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(f"{req.path} does not exist (or is not a file).")
        if path.suffix not in (".ipynb", ".py"):
            raise ConfigError(f"{path.name}: a job runs a notebook (.ipynb) or a Python script (.py).")
        is_notebook = path.suffix == ".ipynb"
        export = None
        if is_notebook:
            from ..export import export_notebook

            export = await asyncio.to_thread(export_notebook, str(path), lenient=req.lenient)
        args = params_to_flags(req.params, export.parameters if export else None) + list(req.args)
        opts = self._options(req)
        kernel: ContainerSpec | None = None
        gpu_resource = req.gpu_resource or opts.gpu_resource or None
        if req.kernel_id:
            kernel, image_info, kernel_resource = await self._kernel_spec(req.kernel_id)
            gpu_resource = req.gpu_resource or kernel_resource or gpu_resource
        else:
            await self._check_image(opts.image)
            image_info = await self.service.image(opts.image)
        image_tag = kernel.image if kernel else opts.image
        if self.import_check if import_check is None else import_check:
            await self._check_imports(path, export, kernel, opts, image_info, image_tag)
        job_id = uuid.uuid4().hex[:12]
        workdir = str(path.parent)
        user = kernel.user if kernel else opts.container_user(workdir)
        out_dir = await asyncio.to_thread(O.make_output_dir, workdir, job_id, user)
        script = path if export is None else out_dir / "train.py"
        if export is not None:  # the job's train.py saves its figures (export/runtime.py)
            from ..export.runtime import add_figure_hooks

            await asyncio.to_thread(O.write_atomic, script, add_figure_hooks(export.script).encode(), server_folder=True)
        env = {"JUPYTER_PTCUDA_JOB_ID": job_id, "JUPYTER_PTCUDA_OUTPUT_DIR": str(O.artifacts_dir(out_dir)), "PYTHONUNBUFFERED": "1",
               **await asyncio.to_thread(self.tracker.container_env, out_dir, user)}
        if script.parent != path.parent:  # exported script: the notebook's folder stays importable
            inherited = (kernel.env if kernel else {}).get("PYTHONPATH") or image_info.env.get("PYTHONPATH")
            env["PYTHONPATH"] = workdir + (f":{inherited}" if inherited else "")
        command = job_command(self.python, str(script), args, req.nproc_per_node)
        policy = opts.policy(configured=[self._configured().image, *([kernel.image] if kernel else [])])
        if kernel is not None:
            request = job_from_kernel(kernel, command=command, workdir=workdir, env=env, id=job_id,
                                      notebook=str(path), image=image_tag, **self._kernel_limits(req, kernel))
        else:
            request = opts.request(kind=L.JOB, id=job_id, notebook=str(path), command=command, workdir=workdir,
                                   env={**filter_env(os.environ, opts.env_allowlist), **env})
        request = dataclasses.replace(request, image_labels=image_info.labels, name=f"ptcuda-job-{job_id}")
        pinned = image_info.digest  # on Kubernetes the name as given: the pod's imageID says once it runs
        spec = build(request, policy, this_server())
        created, name = self.clock(), req.name or path.stem  # the GPU queue: who holds a GPU, and the place in line
        spec = dataclasses.replace(spec, image=pinned, labels={**spec.labels, L.NAME: name, L.QUEUED_AT: repr(created)})
        # what the backend would refuse at launch (Kubernetes: gpus 'all', a GPU resource not allowed): now
        self.service.validate(spec, timeout=req.timeout, gpu_resource=gpu_resource)
        image_labels = image_info.labels
        shares_gpus = kernel is not None and (req.gpus is None or kernel.gpus.mode != "all")
        job = Job(
            id=job_id, owner=req.owner or username(), name=name,
            notebook=str(path) if is_notebook else None, notebook_sha256=export.notebook_sha256 if export else None,
            script=str(script), script_sha256=await asyncio.to_thread(O.sha256_file, script), workdir=workdir,
            output_dir=str(out_dir), parameters=dict(req.params), args=args, image=image_tag, image_digest=pinned,
            gpus=spec.gpus.label(), kernel_id=req.kernel_id, created=created, timeout=req.timeout,
            requirements=list(export.requirements) if export else [],
            meta={"command": command, "torch": image_labels.get(L_TORCH), "cuda": image_labels.get(L_CUDA),
                  "git_commit": await asyncio.to_thread(O.git_commit, workdir, spec.user), "mem_limit": spec.mem_limit,
                  "nproc_per_node": req.nproc_per_node, "user": spec.user,
                  **({"gpu_resource": gpu_resource} if gpu_resource and self.service.gpu_resources else {}),
                  "export_warnings": list(export.warnings) if export else [],
                  "launch": rerun_record(spec, inherited_gpus=shares_gpus)},
        )
        await self._db(self.store.insert, job)
        return await self._start(job, spec, opts.gpu_fallback, watch=watch, gpu_resource=gpu_resource,
                                 inherited_gpus=shares_gpus)

    async def _check_imports(self, path: Path, export: Any, kernel: ContainerSpec | None, opts: JobOptions,
                             image_info: ImageInfo, image: str) -> None:
        """The pre-start import check (:mod:`.imports`) of the exported train.py or the script: ConfigError
        naming what ``image`` lacks. Modules in the notebook's folder, or in a PYTHONPATH folder the job
        inherits (the kernel's, the server's allowed env), are the job's own."""
        if export is not None:
            source = export.script
        else:
            source = (await asyncio.to_thread(read_bytes, path)).decode("utf-8", "replace")
        env = kernel.env if kernel is not None else filter_env(os.environ, opts.env_allowlist)
        folders = [str(path.parent), *(p for p in (env.get("PYTHONPATH") or "").split(":") if p)]
        await check_imports(self.service, image_info, image, source=source, what=path.name, folders=folders,
                            cells=export is not None, requirements=export.requirements if export else (),
                            python=self.python)

    def _options(self, req: JobRequest) -> JobOptions:
        """The job's options: the operator's (``c.JobOptions``) narrowed by the request.

        The configured gpus/mem_limit are ceilings (:mod:`jupyter_ptcuda.policy`): a request beyond them is
        Forbidden naming the limit. For a job from a kernel, :meth:`_kernel_limits` decides those two.
        """
        ceiling = self._configured()
        given: dict[str, Any] = {"image": req.image} if req.image is not None else {}
        if not req.kernel_id:
            if req.gpus is not None:
                given["gpus"] = P.narrow_gpus(parse_gpus(req.gpus), parse_gpus(ceiling.gpus), asked=req.gpus,
                                              limit=self._limit("gpus", ceiling.gpus))
            if req.mem_limit is not None:
                given["mem_limit"] = P.narrow_size(
                    P.check_size(parse_size(req.mem_limit, "mem_limit"), "mem_limit", memory=True),
                    parse_size(ceiling.mem_limit, "mem_limit"), what="mem_limit", asked=req.mem_limit,
                    limit=self._limit("mem_limit", ceiling.mem_limit))
        try:
            return JobOptions(parent=self, **given)
        except TraitError as exc:
            raise ConfigError(str(exc)) from None

    def _configured(self) -> JobOptions:
        """The operator's job options alone (no request): the ceilings."""
        try:
            return JobOptions(parent=self)
        except TraitError as exc:
            raise ConfigError(f"the job options in the Jupyter config are invalid: {exc}") from None

    def _limit(self, trait: str, value: Any) -> str:
        """Names the config line a ceiling comes from (c.JobOptions.x, else c.ContainerOptions.x)."""
        section = "JobOptions"
        if not (self.config._has_section("JobOptions") and trait in self.config.JobOptions) \
                and self.config._has_section("ContainerOptions") and trait in self.config.ContainerOptions:
            section = "ContainerOptions"
        return P.operator_limit(section, trait, value)

    def _kernel_limits(self, req: JobRequest, kernel: ContainerSpec) -> dict[str, Any]:
        """gpus/mem_limit of a job from a kernel: the kernel's, or the request's narrowing of them; within the
        job ceilings too. An inherited memory limit above c.JobOptions.mem_limit becomes that limit; inherited
        GPUs beyond c.JobOptions.gpus are Forbidden (ask for fewer)."""
        ceiling = self._configured()
        kid = (req.kernel_id or "")[:12]
        gpus = kernel.gpus
        if req.gpus is not None:
            gpus = P.narrow_gpus(parse_gpus(req.gpus), kernel.gpus, asked=req.gpus,
                                 limit=f"the GPUs of kernel {kid} ({kernel.gpus.label()})")
        gpus = P.narrow_gpus(gpus, parse_gpus(ceiling.gpus), asked=req.gpus if req.gpus is not None else
                             f"{gpus.label()} (kernel {kid}'s)", limit=self._limit("gpus", ceiling.gpus))
        job_max = parse_size(ceiling.mem_limit, "mem_limit")
        mem = kernel.mem_limit
        if req.mem_limit is not None:
            asked = P.check_size(parse_size(req.mem_limit, "mem_limit"), "mem_limit", memory=True)
            mem = P.narrow_size(asked, kernel.mem_limit, what="mem_limit", asked=req.mem_limit,
                                limit=f"the memory limit of kernel {kid} ({P.format_size(kernel.mem_limit)})")
            mem = P.narrow_size(mem, job_max, what="mem_limit", asked=req.mem_limit,
                                limit=self._limit("mem_limit", ceiling.mem_limit))
        elif job_max is not None and (mem is None or mem > job_max):
            mem = job_max
        return {"gpus": gpus, "mem_limit": mem}

    async def _check_image(self, image: str) -> None:
        """Forbidden unless the image is allowed (:class:`~jupyter_ptcuda.policy.ContainerPolicy`)."""
        await P.ContainerPolicy(parent=self).check_image_on(self.service, image, configured=[self._configured().image])

    async def _kernel_spec(self, kernel_id: str) -> tuple[ContainerSpec, ImageInfo, str]:
        """The kernel's ContainerSpec with its concrete GPUs, the image it runs, and its kernelspec's
        ``gpu_resource`` (Kubernetes; "" otherwise).

        A kernel managed by this server gives its provisioner's ``_spec``; otherwise (the CLI) the spec is
        read back from the kernel container (found by its label). The GPUs are the container's: a count
        becomes the device indexes Docker gave it (0..n-1). On Kubernetes the scheduler picks devices, so
        a count stays a count (the job gets as many of the same resource); a kernel this process did not
        start is copied from its pod's record of its spec (annotation, :func:`..containers.kube.pods.spec_record`).
        """
        prov = self._provisioner(kernel_id)
        prov_spec = getattr(prov, "_spec", None)
        cid = getattr(prov, "container_id", None) if isinstance(prov_spec, ContainerSpec) else None
        if cid is None or not isinstance(prov_spec, ContainerSpec):  # not started here (the CLI beside the server)
            cid = (await self.service.find(L.KERNEL, kernel_id)).id
            record, gpu_resource = await self.service.kernel_record(cid)  # the container's own record of its spec
        else:
            record, gpu_resource = prov_spec, str(getattr(prov, "gpu_resource", "") or "")
        if not self.service.inspects_images:  # nodes pull the image: a job names it as the kernel did
            return record, await self.service.image(record.image), gpu_resource
        found, image = await self.service.spec_of(cid)  # the image by id: the same image even if its tag moved
        gpus = found.gpus
        if gpus.mode == "count":
            gpus = GpuRequest("ids", ids=tuple(str(i) for i in range(gpus.count)))
        return dataclasses.replace(record, gpus=gpus), image, gpu_resource

    def _provisioner(self, kernel_id: str) -> Any:
        """The provisioner of this server's kernel ``kernel_id``, or None (no kernel manager, not ours)."""
        try:
            return self.kernel_manager.get_kernel(kernel_id).provisioner if self.kernel_manager is not None else None
        except (KeyError, AttributeError):
            return None

    async def _launch(self, job: Job, spec: ContainerSpec, gpu_fallback: str, *, inherited_gpus: bool,
                      watch: bool, gpu_resource: str | None = None, on_wait: Callable[[str], None] | None = None) -> Job:
        """Start ``job``'s container (after its turn in the GPU queue, where its GPUs are held: ``on_wait`` hears
        why it waits) and record it running. Called by :meth:`_start` (and :meth:`_requeue`), in a task."""
        try:  # where a scheduler places it: created, not waited for (its watcher says why it is Pending, if it is)
            cid, spec, _ = await self.service.launch(spec, claim=job.id, gpu_fallback=gpu_fallback,
                                                     assign_gpus=not inherited_gpus, timeout=job.timeout,
                                                     gpu_resource=gpu_resource, wait=False, on_pending=on_wait)
        except PtcudaError as exc:
            if isinstance(exc, GpuUnavailable) and self.queue_for_server and spec.gpus.mode in ("count", "ids"):
                return await self._queue_for_server(job, spec, gpu_fallback, inherited_gpus=inherited_gpus,
                                                    watch=watch, gpu_resource=gpu_resource, held=exc.message)
            for leftover in await self.service.list(L.JOB, id=job.id):  # a half-started one
                await self.service.remove(leftover.id)
            was_queued = await self._db(self.store.launch_of, job.id) is not None  # its user was told it waits
            await self._db(self.store.drop_launch, job.id)
            failed = await self._db(self.store.transition, job.id, FAILED, finished=self.clock(),
                                    reason=f"start failed: {exc.message.splitlines()[0]}")
            if refusal(exc) and not was_queued:  # not a job that failed: nothing ran; the client hears why (4xx)
                await self._db(self.store.delete, job.id)
                await asyncio.to_thread(O.remove_job_folder, job)
                raise
            if failed:
                await asyncio.to_thread(O.write_manifest, await self.get(job.id))
            raise
        await self._db(self.store.drop_launch, job.id)
        state = await self.service.inspect(cid)
        started = (state.started_at if state else None) or self.clock()
        if self._pending(state):  # queued until its pod runs; its watcher (or a reconcile) moves it on
            job = await self._db(self.store.update, job.id, container_id=cid, reason="pending: waiting for a node",
                                 gpus=spec.gpus.label())
            if job.terminal:  # cancelled while starting
                await self.service.remove(cid)
                return job
        elif not await self._db(self.store.transition, job.id, RUNNING, container_id=cid, started=started, reason=None,
                                gpus=spec.gpus.label(), **self._digest(job, state)):  # cancelled while starting
            await self.service.remove(cid)
            self.service.release(job.id)
            return await self.get(job.id)
        job = await self.get(job.id)
        await asyncio.to_thread(O.write_manifest, job)
        self.log.info("jupyter-ptcuda: job %s (%s) in container %s, image %s, gpus %s", job.id, job.name, cid[:12],
                      job.image_digest[:19], job.gpus)
        if watch:
            self.spawn_watch(job.id)
        return job
