"""Every job is an MLflow run: parameters, tags, the script's own metrics (live), GPU telemetry, artifacts.

Optional: ``pip install "jupyter-ptcuda[mlflow]"``. Without MLflow (or with
``c.JobManager.mlflow_tracking = False``) :attr:`JobTracker.enabled` is False and every method returns
at once: jobs run exactly as before.

Who calls what (the seam is three calls, all from :mod:`.manager` / :mod:`.lifecycle`):

- ``JobManager.submit`` adds :meth:`JobTracker.container_env` to the job's environment: the container
  logs to an MLflow *file store in its own job folder* (``outputs/<job>/mlflow/mlruns``). No address or
  credential of the user's tracking store enters a container.
- ``JobLifecycle.watch`` runs :meth:`JobTracker.live` beside the job (server, ``run --wait``, a job
  adopted after a restart): every ``sync_interval`` seconds the new values the script logged, and the
  GPU samples of the job's GPUs (our NVML sampler, when this process has one), go into the job's run.
- ``JobLifecycle._finalise`` (the process that records the job's end) awaits :meth:`JobTracker.finish`:
  the rest of the values, the artifacts (the job's artifacts folder, its figures, what its script logged
  as artifacts or models, ``job.log``, ``manifest.json``, the executed notebook) and the run's status
  and end time.

The run is made on first need (:meth:`_ensure_run`), in the experiment named after the notebook or
script, with the job's flags and ``-p`` values as parameters and image/digest/torch/CUDA/GPUs/git
commit/notebook sha256/job id/user as tags. Its id, the copy cursor and the last value of each metric
are kept in ``tracking.json`` in the job's folder (the server's own, written atomically through no
link) and, for the Jobs API, in the job's ``meta["mlflow"]``. The job's store is read by
:mod:`.runstore` (no link followed, every size bounded); values are only ever written to the job's run.

Every MLflow call runs in this tracker's one worker thread (``ptcuda-mlflow``), never on the event loop.
The default store is ``sqlite:///<jupyter data dir>/jupyter_ptcuda/mlflow.db`` with artifacts beside it
(each user's data dir: under JupyterHub, each user's own store); ``c.JobManager.mlflow_tracking_uri`` or
``$MLFLOW_TRACKING_URI`` names a team server instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..containers.gpus import devices, from_label
from ..errors import ConfigError, NotFound
from ..nofollow import UnsafePath, read_bytes
from . import outputs as O
from . import runstore
from .executed import CELLS, executed_name
from .store import CANCELLED, COMPLETED, TIMED_OUT, Job

T = TypeVar("T")
log = logging.getLogger(__name__)
STATE_FILE = "tracking.json"  # in the job's (server-owned) folder
TAG = "jupyter_ptcuda."
MAX_LAST = 50  # metric keys whose last value the Jobs API shows
MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]{0,99}$")
ARTIFACT_PATH = re.compile(r"^[\w.\-][\w.\-/]{0,500}$")
_STATUS = {COMPLETED: "FINISHED", CANCELLED: "KILLED", TIMED_OUT: "KILLED"}


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def default_uri(data_dir: str) -> str:
    """``sqlite:///<data_dir>/jupyter_ptcuda/mlflow.db``: the user's own embedded store."""
    return "sqlite:///" + os.path.abspath(os.path.join(data_dir, "jupyter_ptcuda", "mlflow.db"))


def sqlite_path(uri: str) -> str | None:
    """The file of a ``sqlite:///`` store (``sqlite:////abs/path``, or relative to the working folder), else None."""
    return uri[len("sqlite:///"):] or None if uri.startswith("sqlite:///") else None


def experiment_name(job: Job) -> str:
    """The notebook's (or script's) file name: one experiment per notebook."""
    return Path(job.notebook or job.script or job.name).name or job.id


def run_params(job: Job) -> dict[str, str]:
    """The job's ``-p`` values as they are, and its flags as ``job.<flag>``."""
    meta = job.meta
    flags = {"job.args": " ".join(job.args), "job.gpus": job.gpus, "job.mem_limit": meta.get("mem_limit"),
             "job.timeout_s": job.timeout, "job.nproc_per_node": meta.get("nproc_per_node"),
             "job.kernel_id": job.kernel_id}
    params = {str(k): v for k, v in job.parameters.items()}
    params.update({k: v for k, v in flags.items() if v not in (None, "")})
    return {k[:250]: str(v)[:6000] for k, v in params.items()}


def run_tags(job: Job, gpu_info: dict[str, Any] | None = None) -> dict[str, str]:
    """Where the run came from: image and digest, torch/CUDA, GPUs, git commit, notebook sha256, job id, user."""
    meta = job.meta
    tags: dict[str, Any] = {
        "mlflow.user": job.owner, "mlflow.source.name": job.notebook or job.script, "mlflow.source.type": "JOB",
        "mlflow.source.git.commit": meta.get("git_commit"), f"{TAG}job_id": job.id, f"{TAG}image": job.image,
        f"{TAG}image_digest": job.image_digest, f"{TAG}torch": meta.get("torch"), f"{TAG}cuda": meta.get("cuda"),
        f"{TAG}gpus": job.gpus, f"{TAG}notebook_sha256": job.notebook_sha256, f"{TAG}script_sha256": job.script_sha256,
        f"{TAG}output_dir": job.output_dir, f"{TAG}user": meta.get("user"),
    }
    for key, value in (gpu_info or {}).items():
        tags[f"{TAG}gpu_{key}"] = value
    return {k: str(v)[:5000] for k, v in tags.items() if v not in (None, "")}


class JobTracker:
    """One per JobManager. See the module docstring. ``sampler``: the server's GpuSampler (or None)."""

    def __init__(self, uri: str, *, enabled: bool = True, artifact_root: str | None = None,
                 sync_interval: float = 2.0, sampler: Any = None,
                 save_meta: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None) -> None:
        self.uri = uri
        self.enabled = enabled and mlflow_installed()
        db = sqlite_path(uri)  # a local store keeps its artifacts beside it (else MLflow's default: ./mlruns)
        self.artifact_root = artifact_root or (os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts")
                                               if db else None)
        self.sync_interval = sync_interval
        self.sampler = sampler
        self.save_meta = save_meta
        self.limits = runstore.LIMITS  # what one job's store may make the server read (tests lower them)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ptcuda-mlflow")
        self._client: Any = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def client(self) -> Any:
        """The MlflowClient of the user's store (made once, in the worker thread)."""
        if self._client is None:
            from mlflow import MlflowClient

            db = sqlite_path(self.uri)
            if db:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        return self._client

    # -- the seam ---------------------------------------------------------------------------------
    def container_env(self, out_dir: str | os.PathLike[str], user: str) -> dict[str, str]:
        """The job container's MLflow settings: its own file store ``<job folder>/mlruns``, made here for the
        container's ``user`` (blocking: ``submit`` calls it in a worker thread)."""
        if not self.enabled:
            return {}
        O.make_container_dir(out_dir, runstore.FOLDER, user)
        return {"MLFLOW_TRACKING_URI": "file://" + str(runstore.store_dir(out_dir)),
                "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
                "GIT_PYTHON_REFRESH": "quiet"}

    async def live(self, get_job: Callable[[], Awaitable[Job]]) -> None:
        """Copy new values into the job's run every ``sync_interval`` until cancelled (the watcher does)."""
        if not self.enabled:
            return
        while True:
            job = await get_job()
            if job.terminal:
                return
            await self.sync(job, final=False)
            await asyncio.sleep(self.sync_interval)

    async def finish(self, job: Job) -> dict[str, Any] | None:
        """The job has ended: the rest of its values, its artifacts, the run's status and end time."""
        if not self.enabled:
            return None
        return await self.sync(job, final=True)

    async def sync(self, job: Job, *, final: bool) -> dict[str, Any] | None:
        """One copy pass (in the worker thread); logged, never raised: tracking never fails a job."""
        if not job.output_dir:
            return None
        gpu = self._gpu_samples(job)
        try:
            info = await self._call(self._sync, job, final, gpu)
        except Exception as exc:  # noqa: BLE001 - a store that is down must not stop a job's bookkeeping
            log.warning("jupyter-ptcuda: job %s: MLflow tracking failed: %s", job.id, str(exc).splitlines()[0][:300])
            return None
        if info is not None and self.save_meta is not None:
            await self.save_meta(job.id, info)
        return info

    # -- GPU telemetry ----------------------------------------------------------------------------
    def _gpu_samples(self, job: Job) -> dict[str, Any]:
        """{"info": {...}, "series": {index: history}} of the job's GPUs from the sampler (cached, no NVML call)."""
        sampler = self.sampler
        if sampler is None or job.gpus in ("", "none"):
            return {}
        snap = sampler.snapshot()
        gpus = [g for g in snap.get("gpus") or [] if g.get("uuid")]
        ids = set(devices(job.gpus, gpus, all_devices=True))
        mine = [g for g in gpus if str(g.get("index")) in ids]
        req = from_label(job.gpus)  # a count the engine resolved without telling us which: no series
        count = len(mine) or (req.count if req.mode == "count" else 0)
        if not gpus or not count:
            return {}
        history = sampler.history() if mine else {}
        return {"info": {"model": (mine or gpus)[0].get("name"), "count": count, "driver": snap.get("driver_version")},
                "series": {str(g["index"]): history.get(g["uuid"]) or {} for g in mine}}

    # -- the worker thread ------------------------------------------------------------------------
    def _load(self, job: Job) -> dict[str, Any]:
        try:
            return json.loads(read_bytes(os.path.join(job.output_dir, STATE_FILE), owned_dir=True))
        except (OSError, UnsafePath, ValueError):
            return {}

    def _save(self, job: Job, state: dict[str, Any]) -> None:
        O.write_atomic(os.path.join(job.output_dir, STATE_FILE), json.dumps(state).encode(), server_folder=True)

    def _ensure_run(self, job: Job, state: dict[str, Any], gpu: dict[str, Any]) -> str:
        if state.get("run_id"):
            return str(state["run_id"])
        client = self.client()
        name = experiment_name(job)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.artifact_root:
                location = Path(self.artifact_root, name.replace("/", "_")).as_uri()
            try:
                exp_id = client.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 - made meanwhile by another process
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, start_time=int((job.started or job.created) * 1000),
                                tags=run_tags(job, gpu.get("info")), run_name=f"{job.name}-{job.id}")
        run_id = run.info.run_id
        from mlflow.entities import Param

        client.log_batch(run_id, params=[Param(k, v) for k, v in run_params(job).items()])
        state.update(run_id=run_id, experiment_id=exp_id, cursor={}, gpu_t={}, last={}, logged_params=[])
        self._save(job, state)  # before anything else: a second pass never makes a second run
        return run_id

    def _sync(self, job: Job, final: bool, gpu: dict[str, Any]) -> dict[str, Any] | None:
        from mlflow.entities import Metric, Param, RunTag

        state = self._load(job)
        if state.get("finished"):
            return None
        run_id = self._ensure_run(job, state, gpu)
        client = self.client()
        batch = runstore.read_new(job.output_dir, state.get("cursor") or {}, self.limits)
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in batch.metrics]
        last: dict[str, list[Any]] = dict(state.get("last") or {})  # key: [step, timestamp, value]
        for k, v, ts, step in batch.metrics:  # the latest as MLflow has it: highest step, then newest
            if (k in last or len(last) < MAX_LAST) and (k not in last or (step, ts) >= tuple(last[k][:2])):
                last[k] = [step, ts, v]
        metrics += self._gpu_metrics(gpu, state)
        logged = set(state.get("logged_params") or []) | set(run_params(job))
        params = [Param(k[:250], v) for k, v in batch.params.items() if k not in logged]
        tags = [RunTag(k[:250], v[:5000]) for k, v in batch.tags.items()]
        if batch.truncated:
            tags.append(RunTag(f"{TAG}truncated", ", ".join(sorted(set(batch.truncated)))))
        if params or tags:
            client.log_batch(run_id, params=params, tags=tags)
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        state["logged_params"] = sorted(set(state.get("logged_params") or []) | {p.key for p in params})
        state.update(cursor=batch.cursor, last=last)
        if final:
            self._artifacts(job, run_id)
            status = _STATUS.get(job.state, "FAILED")
            client.set_tag(run_id, f"{TAG}state", job.state)
            if job.duration() is not None:
                client.log_metric(run_id, "job.duration_s", float(job.duration() or 0.0))
            client.set_terminated(run_id, status, end_time=int((job.finished or time.time()) * 1000))
            state["finished"] = True
        self._save(job, state)
        return {"run_id": run_id, "experiment_id": state.get("experiment_id"),
                "status": _STATUS.get(job.state, "FAILED") if final else "RUNNING",
                "metrics": {k: v[2] for k, v in last.items()},
                "tracking_uri": self.uri if "@" not in self.uri else None}

    def _gpu_metrics(self, gpu: dict[str, Any], state: dict[str, Any]) -> list[Any]:
        from mlflow.entities import Metric

        out = []
        seen: dict[str, float] = state.setdefault("gpu_t", {})
        for index, cols in (gpu.get("series") or {}).items():
            since = seen.get(index, 0.0)
            step = 0
            for t, util, mem in zip(cols.get("t", []), cols.get("util", []), cols.get("mem_used", []), strict=False):
                if t <= since:
                    continue
                ms = int(t * 1000)
                if util is not None:
                    out.append(Metric(f"system/gpu_{index}_utilization_percentage", float(util), ms, step))
                if mem is not None:
                    out.append(Metric(f"system/gpu_{index}_memory_usage_megabytes", mem / 2**20, ms, step))
                seen[index] = t
                step += 1
        return out

    def _artifacts(self, job: Job, run_id: str) -> None:
        """Copy the job's files into a server-owned folder (through no link, bounded), then upload it."""
        limits = self.limits
        budget = runstore.Budget(limits.artifact_files, limits.artifact_bytes)
        with tempfile.TemporaryDirectory(prefix="ptcuda-run-") as tmp:
            dest = Path(tmp)
            runstore.copy_tree(job.output_dir, (O.ARTIFACTS,), dest, budget, skip_top=(CELLS,))
            for parts in runstore.run_artifact_folders(job.output_dir, limits):
                runstore.copy_tree(job.output_dir, parts, dest, budget)
            for name, parts in runstore.model_folders(job.output_dir, limits):
                runstore.copy_tree(job.output_dir, parts, dest / name, budget)
            for name in ("job.log", "manifest.json", *self._notebook_names(job)):
                with contextlib.suppress(OSError, UnsafePath):
                    data = read_bytes(os.path.join(job.output_dir, name), owned_dir=True)
                    (dest / name).write_bytes(data)
            if budget.cut:
                self.client().set_tag(run_id, f"{TAG}artifacts_truncated", "true")
            if any(dest.iterdir()):
                self.client().log_artifacts(run_id, str(dest))
            shutil.rmtree(dest, ignore_errors=True)

    @staticmethod
    def _notebook_names(job: Job) -> list[str]:
        name = executed_name(job)  # the executed notebook (jobs.executed)
        return [name] if name else []

    # -- the registry ---------------------------------------------------------------------------
    def register(self, job: Job, run_id: str, name: str, artifact: str | None) -> dict[str, Any]:
        """A model version of ``name`` from the job's run (blocking; the worker thread via :meth:`register_async`).

        ``artifact``: a path in the run's artifacts (a model folder with an MLmodel, or a file); default: the
        model the job logged (the first folder with an ``MLmodel`` file)."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        run = client.get_run(run_id)
        path = artifact or self._find_model(client, run_id)
        if path is None:
            have = ", ".join(sorted(f.path for f in client.list_artifacts(run_id))[:20]) or "none"
            raise LookupError(f"job {job.id}'s run has no MLflow model (no folder with an MLmodel file among its "
                              f"artifacts: {have}): log one with mlflow.pytorch.log_model(model, name='model'), or "
                              "give --artifact PATH (a file or folder of the run's artifacts).")
        listed = {f.path for f in client.list_artifacts(run_id, os.path.dirname(path) or None)}
        if path.strip("/") not in listed:
            raise LookupError(f"job {job.id}'s run has no artifact {path!r}; it has: "
                              f"{', '.join(sorted(listed)) or 'none'}.")
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        tags = {f"{TAG}image_digest": job.image_digest, f"{TAG}image": job.image, f"{TAG}job_id": job.id}
        version = client.create_model_version(name, source=f"{run.info.artifact_uri.rstrip('/')}/{path.strip('/')}",
                                              run_id=run_id, tags={k: v for k, v in tags.items() if v})
        return {"name": name, "version": str(version.version), "source": version.source, "run_id": run_id,
                "image_digest": job.image_digest, "uri": f"models:/{name}/{version.version}"}

    async def register_async(self, job: Job, run_id: str, name: str, artifact: str | None) -> dict[str, Any]:
        return await self._call(self.register, job, run_id, name, artifact)

    async def register_job(self, job: Job, name: str, artifact: str | None = None) -> dict[str, Any]:
        """``jobs register`` / ``POST jobs/<id>/register``: a model version from a finished job's run.

        ConfigError (400) without MLflow, for a bad name or a job that is not finished; NotFound (404) for
        a job with no run, or a run with no such model or artifact. Returns ``{"name", "version", "uri", ...}``.
        """
        if not self.enabled:
            raise ConfigError('MLflow is not installed (or c.JobManager.mlflow_tracking is False): '
                              'pip install "jupyter-ptcuda[mlflow]", then run the job again.')
        if not isinstance(name, str) or not MODEL_NAME.match(name):
            raise ConfigError(f"model name {str(name)[:80]!r}: use 1-100 letters, digits, '.', '_' or '-'.")
        if artifact is not None and (not isinstance(artifact, str) or not ARTIFACT_PATH.match(artifact)
                                     or ".." in artifact.split("/")):
            raise ConfigError(f"--artifact {str(artifact)[:80]!r}: give a path inside the run's artifacts, "
                              "e.g. model or checkpoints/last.pt.")
        if not job.terminal:
            raise ConfigError(f"job {job.id} is still {job.state}: register its model once it has finished.")
        run_id = (job.meta.get("mlflow") or {}).get("run_id")
        if not run_id:
            raise NotFound(f"job {job.id} has no MLflow run (it ran without MLflow tracking): run it again with "
                           'jupyter-ptcuda[mlflow] installed.')
        try:
            return await self.register_async(job, run_id, name, artifact)
        except LookupError as exc:
            raise NotFound(str(exc.args[0])) from None

    @staticmethod
    def _find_model(client: Any, run_id: str) -> str | None:
        for item in client.list_artifacts(run_id):
            if item.is_dir and any(f.path.endswith("/MLmodel") for f in client.list_artifacts(run_id, item.path)):
                return str(item.path)
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False)
