"""REST handlers for exports and batch jobs (``{base_url}/jupyter-ptcuda/exports``, ``.../jobs``).

- ``POST exports`` {path, lenient?, echo_outputs?, save?} → 200: the export (script, report, requirements,
  parameters, warnings, notebook_sha256); with ``save`` the script is also written next to the notebook
  as ``<stem>.train.py`` and ``saved_path`` says where (relative to the root).
- ``POST jobs`` {path, kernel_id?, image?, gpus?, params?, args?, nproc_per_node?, timeout?, mem_limit?,
  name?, lenient?, import_check?, gpu_resource?} → 201 + ``Location`` + the job. ``path`` is a notebook (exported on the fly)
  or a script. 400 before anything starts when the image lacks a package the script imports (the message
  names the ``jupyter ptcuda image build`` command); ``import_check: false`` skips that check.
- ``GET jobs`` → the jobs, newest first. ``GET jobs/<id>`` → the job (404 unknown). A job whose GPUs are
  held is ``queued`` (not refused): ``reason`` says why and ``place`` where it stands in the GPU queue (1:
  next); ``waited_s`` is the time from submit to start (so far).
- ``GET jobs/<id>/log`` → text from byte ``offset`` (default 0); headers ``X-Ptcuda-Job-State`` and
  ``X-Ptcuda-Log-Offset`` (the offset to ask for next). ``follow=1`` streams (chunked) until the job ends.
- ``GET jobs/<id>/figures`` → the matplotlib figures a notebook job saved (``artifacts/figures/cell-N-k.png``),
  by cell: name, cell, index, size, path (relative to the root); header ``X-Ptcuda-Job-State``.
  ``GET jobs/<id>/figures/<name>`` → the PNG (404 unknown name; 403 for anything planted: a link, a file
  with more than one link, not a PNG; files are read through no link, :func:`..jobs.outputs.open_figure`).
- ``POST jobs/<id>/rerun`` → 201 + ``Location`` + a new job that runs what job ``<id>`` ran: its script
  snapshot, parameters, GPUs, mounts and recorded image digest (pulled if missing); its ``meta.rerun_of``
  names the original. 409 while the original runs, or when its script changed since.
- ``DELETE jobs/<id>`` → 202 + the job: cancelling has begun (SIGTERM, ``cancel_grace``, SIGKILL); poll the
  job until its state is ``cancelled``. 409 when the job has already finished.

Paths are relative to the server root; anything resolving outside it (``..``, absolute paths, symlinks)
is refused with 403. Every verb is ``@web.authenticated`` + ``@authorized`` (submitting a job is the
``execute`` action: it runs code). Export, SQLite and Docker work runs off the event loop (the JobManager
and ``asyncio.to_thread``). Mounted by the extension from :data:`handlers`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..errors import ConfigError, PtcudaError
from ..jobs import listing
from ..jobs.outputs import (
    MAX_FIGURE_BYTES,
    list_figures,
    open_figure,
    relative_to_root,
    resolve_under_root,
    write_atomic,
)
from ..jobs.request import JobRequest
from ..jobs.store import Job
from .base import NAMESPACE, PtcudaHandler

_JOB_ID = r"(?P<job_id>[A-Za-z0-9_.-]+)"
#: The largest log offset asked for (1 TiB): beyond any log, and within what every filesystem can seek to.
MAX_LOG_OFFSET = 1024**4
#: Fields of ``POST jobs`` and their JSON types (None: any).
JOB_FIELDS: dict[str, Any] = {
    "path": str, "kernel_id": (str, type(None)), "image": (str, type(None)), "gpus": None, "params": dict,
    "args": list, "nproc_per_node": (int, type(None)), "timeout": (int, float, type(None)),
    "mem_limit": (str, int, type(None)), "name": str, "lenient": bool, "import_check": bool,
    "gpu_resource": (str, type(None)),
}
EXPORT_FIELDS: dict[str, Any] = {"path": str, "lenient": bool, "echo_outputs": bool, "save": bool}


def check_fields(body: dict[str, Any], fields: dict[str, Any]) -> None:
    """400 (ConfigError) for unknown fields and wrong JSON types, naming the field."""
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}.")
    if "path" not in body:
        raise ConfigError("'path' is required: a notebook or script path relative to the server root.")
    for key, value in body.items():
        want = fields[key]
        if want is None:
            continue
        if isinstance(value, bool) and want is not bool and (not isinstance(want, tuple) or bool not in want):
            raise ConfigError(f"{key!r} must not be a boolean.")
        if not isinstance(value, want):
            raise ConfigError(f"{key!r} has the wrong type ({type(value).__name__}).")


class JobsBase(PtcudaHandler):
    @property
    def jobs(self) -> Any:
        jobs = self.state.jobs
        if jobs is None:
            raise web.HTTPError(503, "batch jobs are not available in this server")
        return jobs

    @property
    def root_dir(self) -> str:
        return str(getattr(self.contents_manager, "root_dir", None) or self.serverapp.root_dir)

    def job_json(self, job: Job, waiting: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The job, plus its paths relative to the server root (what the frontend opens), and while it waits
        for GPUs its place in the queue (``waiting``: the queue's view, :meth:`queue_view`)."""
        live = (self.queue_view() if waiting is None else waiting).get(job.id) if job.state == "queued" else None
        return listing.job_json(job, listing.real_root(self.root_dir), live)

    def queue_view(self) -> dict[str, dict[str, Any]]:
        queue = self.state.queue
        return queue.view() if queue is not None else {}

    async def waiting_view(self) -> dict[str, dict[str, Any]]:
        """:meth:`queue_view`, or where the backend keeps the queue (the JupyterHub broker's) this user's
        requests in it: job id → place, reason."""
        try:
            shared = await self.backend_queue()
        except PtcudaError:
            return {}  # the broker not answering: the reasons the jobs carry still say why they wait
        if shared is None:
            return self.queue_view()
        return {r["id"]: {"place": r["place"], "reason": r["reason"] or ""} for r in shared if r["id"]}


class ExportsHandler(JobsBase):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Export a notebook to a plain script (off the loop); with ``save`` also write it next to it."""
        body = self.json_body()
        check_fields(body, EXPORT_FIELDS)
        path = await asyncio.to_thread(resolve_under_root, self.root_dir, body["path"])
        if path.suffix != ".ipynb":
            raise ConfigError(f"{body['path']!r} is not a notebook (.ipynb).")
        from ..export import export_notebook

        result = await asyncio.to_thread(export_notebook, str(path), lenient=bool(body.get("lenient")),
                                         echo_outputs=bool(body.get("echo_outputs")))
        data = result.to_json()
        if body.get("save"):
            target = path.with_name(path.stem + ".train.py")
            rel = relative_to_root(self.root_dir, str(target)) or str(target)
            target = await asyncio.to_thread(resolve_under_root, self.root_dir, rel, must_exist=False)
            await asyncio.to_thread(write_atomic, target, result.script.encode())
            rule = getattr(self.state.app, "ownership", None)
            if rule is not None:  # a root server: the kernel's user may edit and run it
                await asyncio.to_thread(rule.settle, str(target))
            data["saved_path"] = rel
        self.write_json(data)


class JobsHandler(JobsBase):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """All jobs, newest first: :meth:`job_json` of each, as text the JobManager keeps per finished job."""
        text = await self.jobs.list_json(self.root_dir, await self.waiting_view())
        self.set_header("Content-Type", "application/json")
        self.finish(text)

    @web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        """Submit a job; 201 + Location. Export errors and bad fields are 400, paths outside the root 403."""
        body = self.json_body()
        check_fields(body, JOB_FIELDS)
        path = await asyncio.to_thread(resolve_under_root, self.root_dir, body["path"])
        user = self.current_user
        req = JobRequest(
            path=str(path), kernel_id=body.get("kernel_id"), image=body.get("image"), gpus=body.get("gpus"),
            params=body.get("params") or {}, args=body.get("args") or [], nproc_per_node=body.get("nproc_per_node"),
            timeout=body.get("timeout"), mem_limit=body.get("mem_limit"), name=body.get("name") or "",
            lenient=bool(body.get("lenient")), owner=getattr(user, "username", "") or "",
            gpu_resource=body.get("gpu_resource"),
        )
        job = await self.jobs.submit(req, import_check=body.get("import_check"))
        self.set_header("Location", url_path_join(self.base_url, NAMESPACE, "jobs", job.id))
        self.write_json(self.job_json(job), status=201)


class JobHandler(JobsBase):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.write_json(self.job_json(await self.jobs.get(job_id)))

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        """Start cancelling; 202 + the job (poll it for state ``cancelled``); 409 if it has finished."""
        job = await self.jobs.get(job_id)
        if job.terminal:
            raise web.HTTPError(409, f"job {job.id} has already finished ({job.state}); there is nothing to cancel.")
        self.state.spawn(self._cancel(job.id))
        data = self.job_json(job)
        data["cancel_requested"] = True
        self.write_json(data, status=202)

    async def _cancel(self, job_id: str) -> None:
        try:
            await self.jobs.cancel(job_id)
        except PtcudaError as exc:  # finished meanwhile, or the engine went away
            self.log.info("jupyter-ptcuda: cancelling job %s: %s", job_id, exc.message)


class JobRerunHandler(JobsBase):
    @web.authenticated
    @authorized("execute")
    async def post(self, job_id: str) -> None:
        """A new job that runs what job ``job_id`` ran (:mod:`..jobs.rerun`); 201 + Location + the new job.
        409 while the original runs or when its script changed since; no body fields."""
        body = self.json_body()
        if body:
            raise ConfigError(f"unknown field(s) {', '.join(sorted(body))}: a rerun takes no fields (it runs what "
                              "the original ran; submit a new job to change anything).")
        user = self.current_user
        job = await self.jobs.rerun(job_id, owner=getattr(user, "username", "") or "")
        self.set_header("Location", url_path_join(self.base_url, NAMESPACE, "jobs", job.id))
        self.write_json(self.job_json(job), status=201)


class JobLogHandler(JobsBase):
    _closed: asyncio.Event | None = None

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """The log from ``offset``; ``follow=1`` streams until the job ends (or the client goes away)."""
        text = self.get_argument("offset", "0")
        try:
            offset = int(text) if len(text) <= 20 else -1
        except ValueError:
            offset = -1
        if not 0 <= offset <= MAX_LOG_OFFSET:
            raise web.HTTPError(400, f"offset must be a whole number of bytes from 0 to {MAX_LOG_OFFSET} (1 TiB); "
                                     "use the X-Ptcuda-Log-Offset of the previous reply")
        follow = self.get_argument("follow", "0").lower()
        if follow not in ("0", "1", "true", "false", ""):
            raise web.HTTPError(400, "follow must be 0 or 1")
        content_type = "text/plain; charset=utf-8"
        if follow in ("1", "true"):
            job = await self.jobs.get(job_id)
            self.set_header("Content-Type", content_type)
            self.set_header("X-Ptcuda-Job-State", job.state)
            self.set_header("Cache-Control", "no-cache")
            await self._stream(job.id, offset)
            self.finish(set_content_type=content_type)
            return
        data, job = await self.jobs.read_log(job_id, offset)
        self.set_header("X-Ptcuda-Job-State", job.state)
        self.set_header("X-Ptcuda-Log-Offset", str(offset + len(data)))
        self.finish(data, set_content_type=content_type)

    async def _stream(self, job_id: str, offset: int) -> None:
        self._closed = asyncio.Event()
        chunks = self.jobs.follow(job_id, offset)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(chunks.__anext__())
                await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():  # the client went away
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    return
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    return
                self.write(chunk)
                try:
                    await self.flush()
                except StreamClosedError:
                    return
        finally:
            closed.cancel()
            await chunks.aclose()

    def on_connection_close(self) -> None:
        if self._closed is not None:
            self._closed.set()
        super().on_connection_close()


class JobFiguresHandler(JobsBase):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """The job's figures, by cell (``path`` relative to the server root, for opening in JupyterLab)."""
        job = await self.jobs.get(job_id)
        figures = await asyncio.to_thread(list_figures, job)
        for figure in figures:
            figure["path"] = relative_to_root(self.root_dir, os.path.join(job.output_dir or "", figure["path"]))
        self.set_header("X-Ptcuda-Job-State", job.state)
        self.write_json(figures)


class JobFigureHandler(JobsBase):
    @web.authenticated
    @authorized
    async def get(self, job_id: str, name: str) -> None:
        """One figure as image/png, read through no link (the job folder's artifacts are the job's)."""
        job = await self.jobs.get(job_id)
        f = await asyncio.to_thread(open_figure, job, name)
        try:
            data = await asyncio.to_thread(f.read, MAX_FIGURE_BYTES)
        finally:
            f.close()
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, no-cache")
        self.finish(data, set_content_type="image/png")


class JobRegisterHandler(JobsBase):
    @web.authenticated
    @authorized("write")
    async def post(self, job_id: str) -> None:
        """A model version from the job's MLflow run: ``{"name", "artifact"?}``; 201 + the version."""
        body = self.json_body()
        unknown = sorted(set(body) - {"name", "artifact"})
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(unknown)}; known: name, artifact.")
        if not isinstance(body.get("name"), str) or not isinstance(body.get("artifact", ""), (str, type(None))):
            raise ConfigError("'name' (a string: the registered model's name) is required; 'artifact' is a string.")
        job = await self.jobs.get(job_id)
        version = await self.jobs.tracker.register_job(job, body.get("name"), body.get("artifact"))
        self.write_json(version, status=201)


handlers = [
    (rf"/{NAMESPACE}/exports", ExportsHandler),
    (rf"/{NAMESPACE}/jobs", JobsHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}", JobHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}/log", JobLogHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}/rerun", JobRerunHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}/register", JobRegisterHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}/figures", JobFiguresHandler),
    (rf"/{NAMESPACE}/jobs/{_JOB_ID}/figures/(?P<name>[^/]+)", JobFigureHandler),
]
