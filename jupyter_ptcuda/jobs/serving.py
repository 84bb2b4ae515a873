"""Serving a registered model in the image it was trained in: ``jupyter ptcuda serve models:/NAME/VERSION``.

:func:`start` reads the model version (its tags, set by ``jobs register``: the job and the exact image digest
it ran), copies the model's files into a fresh folder of that job's outputs (``served-model-*``, made by the
server, never through a link the job left) and starts a container of kind ``serve`` from the job's image
digest, built like every container (:func:`~jupyter_ptcuda.containers.build.build`: the user's uid, no
capabilities, no Docker socket), the model mounted read-only at :data:`MODEL_DIR`, running MLflow's scoring
server (``mlflow models serve --env-manager local``).

Where it listens (:func:`endpoint`) is the point: on a backend with private folders on this host (Docker, and
the JupyterHub broker, which makes them) the container has **no network** (``network_mode: none``) and the
scoring server binds a Unix socket (uvicorn's ``UVICORN_UDS``) in the serve's private folder — 0700, the
user's, its parents root's (the broker) or the server's own (:mod:`~jupyter_ptcuda.kernel_files`) — the same
protection as a kernel's ipc sockets: the kernel refuses every other local user, so no port and no bridge IP
exists for another user (or another user's server) to reach. Only on a backend whose containers are pods
(Kubernetes: no host folders) does it listen on :data:`PORT` of the pod's IP (a readiness probe on ``/ping``;
the namespace's NetworkPolicy admits only the user's server). The Jupyter server forwards
``jupyter-ptcuda/serve/<id>/(ping|invocations)`` (authenticated) with :func:`forward`.

:func:`servers` lists them (labels are the truth), :func:`stop` removes one and its copy of the model. A serve
container outlives the command that started it (like a job); the reaper removes one whose scoring server
has exited (:mod:`~jupyter_ptcuda.containers.reaper`).

Callers: the CLI (``jupyter ptcuda serve``), the server's ``serve`` routes (:mod:`~jupyter_ptcuda.server.handlers`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

from .. import nofollow
from ..containers import labels as L
from ..containers.build import build
from ..containers.identity import this_server
from ..containers.spec import Mount
from ..containers.types import ContainerState
from ..errors import ConfigError, LaunchError, NotFound
from .request import JobRequest
from .tracking import TAG

if TYPE_CHECKING:
    from .manager import JobManager
    from .tracking import JobTracker

#: Where the model is mounted in the serving container (read-only).
MODEL_DIR = "/opt/ptcuda-model"
#: The scoring server's port inside a pod (Kubernetes; never published on a host).
PORT = L.SERVE_PORT
#: The scoring server's socket in the serve's private folder (where the backend has them).
SOCKET = "scoring.sock"
#: The longest path a Unix socket may have (sun_path, with its NUL).
MAX_SOCKET_PATH = 107
#: The largest reply read back from a scoring server.
MAX_REPLY = 64 * 1024**2
COPY_PREFIX = "served-model-"
MODEL_URI = re.compile(r"^models:/([A-Za-z0-9][A-Za-z0-9._-]{0,99})/([0-9]{1,9})$")


def parse_uri(uri: str) -> tuple[str, str]:
    m = MODEL_URI.match(uri or "")
    if not m:
        raise ConfigError(f"model {str(uri)[:120]!r}: give a registered model version, models:/NAME/VERSION "
                          "(e.g. models:/linear/1; `jupyter ptcuda jobs register JOB --name NAME` makes one).")
    return m.group(1), m.group(2)


def shown_uri(uri: str) -> str:
    """A tracking URI as errors may show it: one with a user or password in it is not shown."""
    return uri if "@" not in uri else "the tracking server (c.JobManager.mlflow_tracking_uri)"


def model_version(tracker: JobTracker, name: str, version: str) -> Any:
    """The registry's ModelVersion of ``models:/NAME/VERSION`` (blocking: the tracker's worker thread, or the
    CLI). LookupError, one sentence with what to do, when the registry has no such version; ConfigError when the
    registry cannot be read. Callers: :func:`start`, :mod:`.model_image`."""
    from mlflow.exceptions import MlflowException

    client = tracker.client()
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"cannot read the model registry of {shown_uri(tracker.uri)}: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    try:
        have = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
    except MlflowException:
        have = []
    where = f"the model registry of {shown_uri(tracker.uri)}"
    if have:
        raise LookupError(f"models:/{name}/{version} is not in {where}: {name} has version{'s' * (len(have) > 1)} "
                          f"{', '.join(have[-10:])}; give one of them, or register another with "
                          f"`jupyter ptcuda jobs register JOB --name {name}`.")
    raise LookupError(f"models:/{name}/{version} is not in {where}: no model is registered as {name!r}; make "
                      f"version 1 with `jupyter ptcuda jobs register JOB --name {name}` (JOB: a job that logged a "
                      "model, e.g. with mlflow.pytorch.log_model).")


def _version(mgr: JobManager, name: str, version: str) -> tuple[dict[str, str], str]:
    """(tags, source) of a model version (blocking: the tracker's worker thread)."""
    mv = model_version(mgr.tracker, name, version)
    return dict(mv.tags or {}), str(mv.source)


def _download(mgr: JobManager, name: str, version: str, out_dir: str) -> str:
    """The model's files copied into a new ``served-model-*`` folder of the job's folder ``out_dir``; its path.

    MLflow downloads into a private staging folder of the server; the copy is made relative to the job
    folder's descriptor (reached through no link, owned by the server: :mod:`~jupyter_ptcuda.nofollow`), so a
    link planted anywhere on the way is refused, and links among the model's files are left out."""
    import mlflow.artifacts

    staging = tempfile.mkdtemp(prefix="ptcuda-model-")
    try:
        uri = mgr.tracker.client().get_model_version_download_uri(name, version)
        got = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=staging, tracking_uri=mgr.tracker.uri)
        if not os.path.isfile(os.path.join(got, "MLmodel")):
            raise LookupError(f"models:/{name}/{version} has no MLmodel file: it is not an MLflow model (register "
                              "the folder that mlflow.pytorch.log_model wrote).")
        copy = COPY_PREFIX + secrets.token_hex(6)
        with nofollow.folder(out_dir, owned=True) as top:
            os.mkdir(copy, 0o755, dir_fd=top)
            _copy_tree(got, top, copy)
        return os.path.join(out_dir, copy)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_tree(src: str, parent_fd: int, name: str) -> None:
    fd = os.open(name, nofollow.DIR_FLAGS, dir_fd=parent_fd)
    try:
        os.fchmod(fd, 0o755)  # the container's user reads it (a read-only mount)
        for entry in os.scandir(src):
            if entry.is_dir(follow_symlinks=False):
                os.mkdir(entry.name, 0o755, dir_fd=fd)
                _copy_tree(entry.path, fd, entry.name)
            elif entry.is_file(follow_symlinks=False):
                out = nofollow.create_at(fd, entry.name, 0o644)
                with open(entry.path, "rb") as reader, open(out, "wb") as writer:
                    shutil.copyfileobj(reader, writer)
    finally:
        os.close(fd)


def _remove_copy(path: str) -> None:
    """Remove a ``served-model-*`` folder, reached through no link."""
    parent, name = os.path.split(path.rstrip("/"))
    if not name.startswith(COPY_PREFIX):
        return
    try:
        with nofollow.folder(parent) as fd:
            shutil.rmtree(name, dir_fd=fd)
    except (OSError, nofollow.UnsafePath):
        pass


async def start(mgr: JobManager, uri: str, *, gpus: Any = None, wait: float = 180.0) -> dict[str, Any]:
    """Start serving ``uri`` (models:/NAME/VERSION); returns :func:`describe` of it once ``/ping`` answers.

    ConfigError without MLflow or for a bad URI or a version not made by ``jobs register``; NotFound for a
    version or job not found; LaunchError when the scoring server does not answer within ``wait`` s (its
    container is removed, its last log lines said)."""
    name, version = parse_uri(uri)
    if not mgr.tracker.enabled:
        raise ConfigError('MLflow is not installed (or c.JobManager.mlflow_tracking is False): '
                          'pip install "jupyter-ptcuda[mlflow]".')
    try:
        tags, _ = await mgr.tracker._call(_version, mgr, name, version)
    except LookupError as exc:
        raise NotFound(str(exc.args[0])) from None
    digest, job_id = tags.get(f"{TAG}image_digest", ""), tags.get(f"{TAG}job_id", "")
    if not digest or not job_id:
        raise ConfigError(f"{uri} was not registered from a job (no {TAG}image_digest/job_id tags): register it "
                          "with `jupyter ptcuda jobs register JOB --name NAME` so it is served in its own image.")
    job = await mgr.get(job_id)  # one of this user's jobs (NotFound otherwise)
    if job.image_digest != digest:
        raise ConfigError(f"{uri} says it was trained in {digest[:80]}, but job {job_id} ran {job.image_digest[:80]}: "
                          "register the job's model again.")
    opts = mgr._options(JobRequest(path="", gpus=gpus if gpus is not None else "none"))
    image_info = await mgr.service.image(digest)
    serve_id = uuid.uuid4().hex[:12]
    try:
        model = await mgr.tracker._call(_download, mgr, name, version, job.output_dir)
    except LookupError as exc:
        raise NotFound(str(exc.args[0])) from None
    try:
        user = str(job.meta.get("user") or opts.container_user(job.workdir))
        request = opts.request(kind=L.SERVE, id=serve_id, notebook=uri, command=scoring_command(mgr.python),
                               workdir=None, env={"PYTHONUNBUFFERED": "1"}, mount_workdir=False, user=user,
                               image_labels=image_info.labels)
        request = dataclasses.replace(request, image=digest, mounts=(Mount(model, MODEL_DIR, True),))
        launched = await _launch(mgr, request, opts.policy(configured=[job.image, digest]))
    except BaseException:
        await asyncio.to_thread(_remove_copy, model)
        raise
    return await _ready(mgr, serve_id, launched.id, wait)


async def start_image(mgr: JobManager, image: str, *, gpus: Any = None, wait: float = 180.0) -> dict[str, Any]:
    """Serve the model an image made by ``jupyter ptcuda image build --model`` holds (its files at
    :data:`MODEL_DIR`, its labels name the version), like :func:`start`: kind ``serve``, the user's uid, hardened,
    GPUs from the ledger, nothing mounted; the image must be one the operator's policy allows (as for a kernel).
    ConfigError for an image that holds no model; ImageNotFound when it is not here."""
    info = await mgr.service.image(image)
    uri = info.labels.get(L.MODEL_URI, "")
    if not uri:
        raise ConfigError(f"image {image[:120]!r} holds no model (no {L.MODEL_URI} label): make one with `jupyter ptcuda "
                          "image build --model models:/NAME/VERSION --tag TAG`, or serve a registered version with "
                          "`jupyter ptcuda serve models:/NAME/VERSION`.")
    opts = mgr._options(JobRequest(path="", gpus=gpus if gpus is not None else "none"))
    serve_id = uuid.uuid4().hex[:12]
    request = opts.request(kind=L.SERVE, id=serve_id, notebook=uri, command=scoring_command(mgr.python), workdir=None,
                           env={"PYTHONUNBUFFERED": "1"}, mount_workdir=False, image_labels=info.labels)
    request = dataclasses.replace(request, image=image, mounts=())
    launched = await _launch(mgr, request, opts.policy(configured=[]))
    return await _ready(mgr, serve_id, launched.id, wait)


def scoring_command(python: str = "python") -> list[str]:
    """MLflow's scoring server over :data:`MODEL_DIR` on :data:`PORT` (``serve``, and the command of an image
    made by ``image build --model``)."""
    return [python, "-m", "mlflow", "models", "serve", "-m", MODEL_DIR, "--env-manager", "local", "-h", "0.0.0.0",
            "-p", str(PORT)]


async def _launch(mgr: JobManager, request: Any, policy: Any) -> Any:
    """Launch a serve container for ``request`` under ``policy``. Where the backend has private folders on this
    host (Docker, the broker) it gets one and **no network**: the scoring server binds a Unix socket there
    (uvicorn's ``UVICORN_UDS``); elsewhere (a pod) it listens on :data:`PORT` of its own IP. The folder is
    removed again if the launch fails."""
    private, env = "", dict(request.env)
    if mgr.service.kernel_placement == "local":
        private = str(await mgr.service.private_dir(request.id, request.run_as or ""))
        sock = os.path.join(private, SOCKET)
        if len(sock.encode()) > MAX_SOCKET_PATH:
            await asyncio.to_thread(_remove_private, private)
            raise ConfigError(f"the model server's socket path {sock} is longer than a Unix socket may be "
                              f"({MAX_SOCKET_PATH} bytes): set JUPYTER_PTCUDA_RUNTIME_DIR (or the broker's "
                              "c.PtcudaBroker.private_root) to a shorter folder.")
        env["UVICORN_UDS"] = sock  # uvicorn (MLflow's scoring server) binds it instead of host:port
    request = dataclasses.replace(request, name=f"ptcuda-serve-{request.id}", env=env, private_dir=private,
                                  network_mode="none" if private else "bridge", ports={})
    try:
        spec = build(request, policy, this_server())
        mgr.service.validate(spec)
        return await mgr.service.launch(spec, claim=f"serve-{request.id}")
    except BaseException:
        if private:
            await asyncio.to_thread(_remove_private, private)
        raise


async def _ready(mgr: JobManager, serve_id: str, cid: str, wait: float) -> dict[str, Any]:
    """:func:`describe` of serve ``serve_id`` once /ping answers; removed (with its copy) if it does not."""
    try:
        await _until_ready(mgr, cid, wait)
    except BaseException:
        await stop(mgr, serve_id)
        raise
    return await describe(mgr, (await mgr.service.list(L.SERVE, id=serve_id))[0])


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a scoring server answers: a Unix socket on this host (``socket``) or ``http://IP:PORT``."""

    socket: str = ""
    url: str = ""


async def endpoint(mgr: JobManager, serve_id: str) -> Endpoint:
    """Where running serve ``serve_id`` of this user answers; NotFound saying how to list them. Under the broker
    the list is the broker's (only this Hub user's containers), and the socket is in this user's own folder."""
    found = await mgr.service.list(L.SERVE, id=serve_id, owner_uid=os.geteuid(), running=True) \
        if re.fullmatch(r"[0-9a-f]{12}", serve_id or "") else []
    if not found:
        raise NotFound(f"no model server {str(serve_id)[:40]!r} is running: list them with `jupyter ptcuda serve list`.")
    return await _endpoint_of(mgr, found[0])


async def _endpoint_of(mgr: JobManager, c: ContainerState) -> Endpoint:
    if c.tag.kernel_dir:
        return Endpoint(socket=os.path.join(c.tag.kernel_dir, SOCKET))
    return Endpoint(url=f"http://{await mgr.service.address(c.id)}:{PORT}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _request(where: Endpoint, method: str, route: str, body: bytes | None, content_type: str,
             timeout: float) -> tuple[int, str, bytes]:
    """(status, content type, body) of one HTTP request to a scoring server (blocking: run in a thread); the reply
    is read up to :data:`MAX_REPLY` bytes (past it: OSError)."""
    if where.socket:
        conn: http.client.HTTPConnection = _UnixConnection(where.socket, timeout)
    else:
        host, _, port = where.url.removeprefix("http://").rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, f"/{route}", body=body, headers=headers)
        reply = conn.getresponse()
        data = reply.read(MAX_REPLY + 1)
        if len(data) > MAX_REPLY:
            raise OSError(f"the reply is larger than {MAX_REPLY} bytes")
        return reply.status, reply.getheader("Content-Type") or "application/json", data
    finally:
        conn.close()


async def forward(mgr: JobManager, serve_id: str, method: str, route: str, body: bytes | None, content_type: str,
                  timeout: float) -> tuple[int, str, bytes]:
    """One request (``GET ping``, ``POST invocations``) to this user's model server ``serve_id``, answered as the
    scoring server answered it. NotFound for a server not this user's; LaunchError when it does not answer."""
    where = await endpoint(mgr, serve_id)
    try:
        return await asyncio.to_thread(_request, where, method, route, body, content_type, timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise LaunchError(f"model server {serve_id} did not answer ({exc}): see its log with `docker logs` or stop "
                          "it with `jupyter ptcuda serve stop` and serve the model again.") from None


async def _until_ready(mgr: JobManager, cid: str, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        state = await mgr.service.inspect(cid)
        if state is None or not state.running:
            raise mgr.service.describe_exit(state, await mgr.service.logs(cid), "the model server")
        try:
            where = await _endpoint_of(mgr, state)
            if (await asyncio.to_thread(_request, where, "GET", "ping", None, "", 2))[0] == 200:
                return
        except (OSError, http.client.HTTPException, LaunchError):
            pass
        if time.monotonic() > deadline:
            tail = "\n".join((await mgr.service.logs(cid, tail=20)).splitlines()[-20:])
            raise LaunchError(f"the model server did not answer /ping in {within:.0f} s; it was removed. Last log "
                              f"lines:\n{tail}")
        await asyncio.sleep(0.5)


async def describe(mgr: JobManager, c: ContainerState) -> dict[str, Any]:
    return {"id": c.tag.id, "model": c.tag.notebook, "image": c.image, "gpus": c.tag.gpus, "state": c.status,
            "container_id": c.id, "created": c.created, "owner": c.tag.owner}


async def servers(mgr: JobManager) -> list[dict[str, Any]]:
    """This user's model servers, newest first."""
    return [await describe(mgr, c) for c in await mgr.service.list(L.SERVE, owner_uid=os.geteuid())]


async def stop(mgr: JobManager, serve_id: str) -> dict[str, Any]:
    """Remove model server ``serve_id`` (a unique prefix will do) and its copy of the model."""
    mine = await mgr.service.list(L.SERVE, owner_uid=os.geteuid())
    found = [c for c in mine if serve_id and c.tag.id.startswith(serve_id)]
    if len(found) != 1:
        why = "is not a model server of yours" if not found else "matches more than one; give more of the id"
        raise NotFound(f"serve {str(serve_id)[:40]!r} {why}: list them with `jupyter ptcuda serve list`.")
    c = found[0]
    copies: list[str] = []
    try:
        spec, _ = await mgr.service.spec_of(c.id)
        copies = [m.source for m in spec.mounts if m.target == MODEL_DIR and m.read_only]
    except NotFound:
        pass
    await mgr.service.remove(c.id)
    for path in copies:  # only a folder this module made (served-model-*), never through a link
        await asyncio.to_thread(_remove_copy, path)
    if c.tag.kernel_dir:  # the socket's folder (under the broker, the broker removed it with the container)
        await asyncio.to_thread(_remove_private, c.tag.kernel_dir)
    return await describe(mgr, c)


def _remove_private(path: str) -> None:
    """Remove a serve's private folder (``<private>/<serve id>``, made by the backend's ``private_dir``): only a
    real folder named like a serve id, never through a link at its end."""
    import stat

    if not re.fullmatch(r"[0-9a-f]{12}", os.path.basename(path)):
        return
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass
