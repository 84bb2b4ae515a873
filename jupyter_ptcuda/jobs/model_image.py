"""``jupyter ptcuda image build --model models:/NAME/VERSION --tag T``: a registered model baked into an
inference image built on the image it was trained in, for a cluster or another team.

The CLI calls :func:`build_model_image` (blocking). The steps, each named in errors like ``image build``'s:

1. **model** — the version in the user's registry (``c.JobManager.mlflow_tracking_uri`` /
   ``$MLFLOW_TRACKING_URI`` / the default SQLite store: read on the host, like ``serve``): its tags (set by
   ``jobs register``) name the image digest it was trained in, the job and the run. ``--base IMAGE`` builds
   on another image (a version registered some other way has no digest tag and needs it).
2. **base** — that image on this engine (a local id is never pulled; a ``REPO@sha256:`` digest is pulled
   on the host when missing), which must import ``mlflow`` (the scoring server; the ``serve`` preset).
3. **download** — MLflow downloads the model's files on the host into a private staging folder; links and
   anything but regular files and folders are left out; their sha256 is taken.
4. **build** — a context of the model's files and a Dockerfile with no ``RUN`` (and no network: the build
   reaches nothing) on the base, tagged for the length of the build: the files copied to :data:`MODEL_DIR`
   owned by root (read-only for the server's user), labels :data:`~..containers.labels.MODEL_URI` & co.,
   ``USER`` :data:`USER` (not root), and MLflow's scoring server as the command, as ``serve`` runs it
   (``/invocations``, ``/ping`` on port :data:`~.serving.PORT`).

``--push`` then pushes it like any built image (:func:`..registry.push_image`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from typing import IO, Any

from ..containers import labels as L
from ..containers.engine import Engine
from ..errors import ConfigError, PtcudaError
from ..images import L_MODULES, ImageBuildError, docker_build, engine_imports
from .serving import MODEL_DIR, PORT, model_version, parse_uri, scoring_command, shown_uri
from .tracking import TAG, JobTracker

Progress = Callable[[str], None]
#: The inference image's user: not root, no host account's uid (a cluster may run it as any other).
USER = "65532:65532"


def build_model_image(engine: Engine, tracker: JobTracker, uri: str, *, tag: str, base: str | None = None,
                      python: str = "python", pull: bool = True, progress: Progress = print) -> dict[str, Any]:
    """Build ``tag`` holding model version ``uri`` on the image it was trained in (or ``base``). Blocking (the
    CLI). Returns ``{"tag", "image_id", "labels"}``. ConfigError without MLflow or for a bad URI; ImageBuildError
    naming the step otherwise (an unknown version, no digest and no ``--base``, a base without MLflow)."""
    name, version = parse_uri(uri)
    if not tracker.enabled:
        raise ConfigError('image build --model reads the MLflow model registry: pip install "jupyter-ptcuda[mlflow]" '
                          "(and leave c.JobManager.mlflow_tracking on).")
    progress(f"[model] {uri} in {shown_uri(tracker.uri)}")
    try:
        mv = model_version(tracker, name, version)
    except LookupError as exc:
        raise ImageBuildError("model", str(exc.args[0])) from None
    tags = dict(mv.tags or {})
    trained_in = tags.get(f"{TAG}image_digest", "")
    if not base and not trained_in:
        raise ImageBuildError("model", f"{uri} has no {TAG}image_digest tag (it was not registered from a job), so "
                              "the image it was trained in is unknown: give the image to build on with --base IMAGE "
                              "(one that imports mlflow and what the model needs), or register the job's model with "
                              "`jupyter ptcuda jobs register JOB --name NAME`.")
    base_ref = base or trained_in
    if base and trained_in and base != trained_in:
        progress(f"[model] building on --base {base}, not on {trained_in[:80]}, the image it was trained in")
    base_id = _base_image(engine, base_ref, given=bool(base), pull=pull, progress=progress)
    _check_scoring_server(engine, base_ref, base_id, python, given=bool(base), progress=progress)

    staging = tempfile.mkdtemp(prefix="ptcuda-model-image-")
    temp_tag = f"ptcuda-model-base:{secrets.token_hex(6)}"
    try:
        model = _download(tracker, name, version, os.path.join(staging, "download"), progress)
        labels = {L.MODEL_URI: f"models:/{name}/{version}", L.MODEL_NAME: name, L.MODEL_VERSION: version,
                  L.MODEL_RUN_ID: str(mv.run_id or ""), L.MODEL_JOB_ID: tags.get(f"{TAG}job_id", ""),
                  L.MODEL_TRAINED_IN: trained_in, L.MODEL_BASE: base_ref,
                  "org.opencontainers.image.base.name": base_ref, "org.opencontainers.image.base.digest": base_id}

        def dockerfile(sha256: str) -> str:
            labels[L.MODEL_SHA256] = sha256
            return _dockerfile(temp_tag, labels, python)

        with open(os.path.join(staging, "context.tar"), "w+b") as context:
            _write_context(context, model, dockerfile)
            context.seek(0)
            engine.run_sync(lambda api: api.tag(base_id, *temp_tag.split(":")), what="docker tag (the base)")
            progress(f"[build] {tag}: FROM {base_ref[:80]}, the model at {MODEL_DIR}, USER {USER}, no network")
            image_id = docker_build(engine, context, tag, "build", progress, network_mode="none")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            engine.run_sync(lambda api: api.remove_image(temp_tag, noprune=True))
        except PtcudaError:
            pass
    progress(f"built {tag}: {uri} (run {labels[L.MODEL_RUN_ID] or '?'}, sha256 {labels[L.MODEL_SHA256][:12]}) on "
             f"{base_ref[:80]}; `docker run {tag}` serves it on port {PORT} (/invocations, /ping)")
    return {"tag": tag, "image_id": image_id, "labels": labels}


def _base_image(engine: Engine, ref: str, *, given: bool, pull: bool, progress: Progress) -> str:
    """The id of image ``ref`` on this engine; a registry digest is pulled when missing (unless ``pull`` is off)."""
    def image_id() -> str:
        return str(engine.run_sync(lambda api: api.inspect_image(ref))["Id"])

    try:
        return image_id()
    except PtcudaError:
        pass
    whose = "--base" if given else "the image the model was trained in,"
    if ref.startswith("sha256:") or not pull:  # a local image id is nowhere else
        raise ImageBuildError("base", f"{whose} {ref[:120]}, is not on this Docker engine: build or pull it here "
                              "(`docker pull REPO@DIGEST` for a pushed one), or give --base IMAGE.") from None
    progress(f"[base] pulling {ref}")
    try:
        engine.run_sync(lambda api: [None for _ in api.pull(ref, stream=True, decode=True)], what=f"docker pull {ref}")
        return image_id()
    except PtcudaError as exc:
        raise ImageBuildError("base", f"{whose} {ref[:120]}, is not here and cannot be pulled "
                              f"({exc.message.splitlines()[0][:200]}): `docker login` to its registry, or give "
                              "--base IMAGE.") from None


def _check_scoring_server(engine: Engine, ref: str, image_id: str, python: str, *, given: bool,
                          progress: Progress) -> None:
    """ImageBuildError unless the base imports mlflow (its label, else one probe container)."""
    labels = (engine.run_sync(lambda api: api.inspect_image(image_id)).get("Config") or {}).get("Labels") or {}
    if labels.get(L_MODULES):
        has = "mlflow" in labels[L_MODULES].split()
    else:
        progress(f"[base] can {ref[:80]} import mlflow?")
        has = bool(engine_imports(engine, image_id, ["mlflow"], python).get("mlflow"))
    if not has:
        fix = ("give --base an image that has it" if given else
               "build the training image with the serve preset (`jupyter ptcuda image build --base IMG --preset serve "
               "--tag IMG`), train and register again, or give --base IMAGE with mlflow")
        raise ImageBuildError("base", f"{ref[:120]} cannot import mlflow, which MLflow's scoring server needs: {fix}.")


def _download(tracker: JobTracker, name: str, version: str, dest: str, progress: Progress) -> str:
    """The model's files downloaded by MLflow on the host into ``dest``; the folder with its MLmodel."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    os.makedirs(dest, 0o700)
    try:
        source = tracker.client().get_model_version_download_uri(name, version)
        progress(f"[download] {source}")
        got = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dest, tracking_uri=tracker.uri)
    except MlflowException as exc:
        raise ImageBuildError("download", f"models:/{name}/{version}'s files cannot be downloaded: "
                              f"{str(exc).splitlines()[0][:200]}") from None
    if not os.path.isfile(os.path.join(got, "MLmodel")) or os.path.islink(os.path.join(got, "MLmodel")):
        raise ImageBuildError("download", f"models:/{name}/{version} has no MLmodel file: it is not an MLflow model "
                              "(register the folder that mlflow.pytorch.log_model wrote, e.g. --artifact model).")
    return str(got)


def _dockerfile(base: str, labels: dict[str, str], python: str) -> str:
    label_line = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels.items())
    return (f"FROM {base}\n"
            f"COPY --chown=0:0 model/ {MODEL_DIR}/\n"
            f"{label_line}\n"
            "ENV HOME=/tmp PYTHONUNBUFFERED=1\n"
            "WORKDIR /tmp\n"
            f"USER {USER}\n"
            f"EXPOSE {PORT}\n"
            f"CMD {json.dumps(scoring_command(python))}\n")


def _write_context(out: IO[bytes], model: str, dockerfile: Callable[[str], str]) -> None:
    """The build context into ``out``: ``model/...``, then ``dockerfile(sha256)`` as the ``Dockerfile``, given
    the sha256 of the model's files (each relative path and its sha256, in order). Only regular files and
    folders, read through no link; root's, modes 0644/0755, time 0 (the same files give the same layer)."""
    tree = hashlib.sha256()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: IO[bytes] | None, size: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = (tarfile.REGTYPE, 0o644) if data is not None else (tarfile.DIRTYPE, 0o755)
            info.size, info.uid, info.gid, info.mtime = size, 0, 0, 0
            tar.addfile(info, data)

        add("model", None)
        for folder, dirs, files in os.walk(model):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(folder, d)))
            rel = os.path.relpath(folder, model)
            for d in dirs:
                add(os.path.normpath(os.path.join("model", rel, d)), None)
            for f in sorted(files):
                path = os.path.join(folder, f)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO never blocks
                except OSError:
                    continue  # a link: left out
                with os.fdopen(fd, "rb") as reader:
                    st = os.fstat(reader.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    digest = hashlib.sha256()
                    for block in iter(lambda: reader.read(1 << 20), b""):
                        digest.update(block)
                    reader.seek(0)
                    name = os.path.normpath(os.path.join("model", rel, f))
                    add(name, reader, st.st_size)
                    tree.update(f"{name[len('model/'):]}\0{digest.hexdigest()}\n".encode())
        text = dockerfile(tree.hexdigest()).encode()
        add("Dockerfile", io.BytesIO(text), len(text))
