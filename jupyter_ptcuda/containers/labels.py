"""Container labels: the one place that writes and reads them. Labels are the truth (house style):
any process rebuilds who holds what — the reaper, the GPU ledger, the kernels view — from them alone.

:func:`make` writes the labels of a container of ``kind`` for an :class:`~.identity.Identity`;
:class:`Tag` reads them back; :func:`selector` is the label filter for listing them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

PREFIX = "io.jupyter-ptcuda."
KIND = PREFIX + "kind"
KERNEL_ID = PREFIX + "kernel-id"
JOB_ID = PREFIX + "job-id"
CHECK_ID = PREFIX + "check-id"  # a health check (or probe) run
SERVER_ID = PREFIX + "server-id"
SERVER_PID = PREFIX + "server-pid"
OWNER_UID = PREFIX + "owner-uid"  # the uid of whoever asked (the server's, or the Hub user's under a broker)
OWNER = PREFIX + "owner"  # their name
GPUS = PREFIX + "gpus"
NOTEBOOK = PREFIX + "notebook"
NAME = PREFIX + "name"  # a job's name (the GPU queue names who holds a GPU by it)
QUEUED_AT = PREFIX + "queued-at"  # epoch seconds a GPU request joined the queue (its place, across a restart)
KERNEL_DIR = PREFIX + "kernel-dir"  # a kernel's private ipc folder: never mounted into a job
#: JSON [[host path, target], ...]: the folders a broker-built container mounts, as their user asked for them
#: (Docker binds the broker's staging paths: see jupyter_ptcuda.broker.mounts).
MOUNTS = PREFIX + "mounts"
#: Image labels written by ``jupyter ptcuda image build`` (torch/cuda empty for CPU builds).
IMAGE_BASE = PREFIX + "image.base"
IMAGE_TORCH = PREFIX + "image.torch"
IMAGE_CUDA = PREFIX + "image.cuda"
IMAGE_PYTHON = PREFIX + "image.python"
IMAGE_IPYKERNEL = PREFIX + "image.ipykernel"
IMAGE_MODULES = PREFIX + "image.modules"  # top-level modules the image can import (the jobs' import check)
IMAGE_PRESET = PREFIX + "image.preset"
IMAGE_TORCHVISION = PREFIX + "image.torchvision"
#: Image labels written by ``jupyter ptcuda image build --model``: the registered model version it holds
#: (``models:/NAME/VERSION``, name, version), the run and job it came from, the image digest it was trained in,
#: the image it was built on (that digest, or ``--base``), and the sha256 of its files (:mod:`..jobs.model_image`).
MODEL_URI = PREFIX + "model.uri"
MODEL_NAME = PREFIX + "model.name"
MODEL_VERSION = PREFIX + "model.version"
MODEL_RUN_ID = PREFIX + "model.run-id"
MODEL_JOB_ID = PREFIX + "model.job-id"
MODEL_TRAINED_IN = PREFIX + "model.trained-in"
MODEL_BASE = PREFIX + "model.base"
MODEL_SHA256 = PREFIX + "model.sha256"

SERVE_ID = PREFIX + "serve-id"  # a model server (``jupyter ptcuda serve``); its NOTEBOOK label is the model URI

#: The kinds of container we run. Jobs and model servers outlive their server on purpose; every other kind
#: belongs to the server that started it (the reaper removes it when that server is gone).
KERNEL, JOB, HEALTH, PROBE, NETNS, SERVE = "kernel", "job", "health", "probe", "netns", "serve"
KINDS = (KERNEL, JOB, HEALTH, PROBE, NETNS, SERVE)
#: The port a model server's scoring server listens on where it has a network of its own (a pod; never published).
SERVE_PORT = 5000
#: What answers 200 once a model server is ready (MLflow's scoring server).
SERVE_READY_PATH = "/ping"
#: Kinds that hold GPUs in the ledger's eyes.
GPU_KINDS = (KERNEL, JOB, HEALTH, SERVE)
_ID_LABEL = {KERNEL: KERNEL_ID, JOB: JOB_ID, HEALTH: CHECK_ID, PROBE: CHECK_ID, SERVE: SERVE_ID}


def make(kind: str, *, owner_uid: int, server_id: str, server_pid: int, owner: str = "", id: str = "",
         gpus: str = "none", notebook: str = "", kernel_dir: str = "") -> dict[str, str]:
    """The labels of a new container. ``id``: its kernel, job or check id (none for a netns holder)."""
    if kind not in KINDS:
        raise ValueError(f"unknown container kind {kind!r}")
    labels = {KIND: kind, SERVER_ID: server_id, SERVER_PID: str(server_pid), OWNER_UID: str(owner_uid), GPUS: gpus}
    if owner:
        labels[OWNER] = owner
    if id and kind in _ID_LABEL:
        labels[_ID_LABEL[kind]] = id
    if notebook:
        labels[NOTEBOOK] = notebook
    if kernel_dir:
        labels[KERNEL_DIR] = kernel_dir
    return labels


@dataclasses.dataclass(frozen=True)
class Tag:
    """What a container's labels say about it."""

    kind: str
    id: str
    server_id: str = ""
    server_pid: int | None = None
    owner_uid: int | None = None
    owner: str = ""
    gpus: str = "none"
    notebook: str = ""
    kernel_dir: str = ""
    name: str = ""

    @classmethod
    def read(cls, labels: Mapping[str, str] | None) -> Tag:
        labels = labels or {}
        kind = labels.get(KIND, "")
        return cls(kind=kind, id=labels.get(_ID_LABEL.get(kind, ""), ""), server_id=labels.get(SERVER_ID, ""),
                   server_pid=_int(labels.get(SERVER_PID)), owner_uid=_int(labels.get(OWNER_UID)),
                   owner=labels.get(OWNER, ""), gpus=labels.get(GPUS, "none") or "none",
                   notebook=labels.get(NOTEBOOK, ""), kernel_dir=labels.get(KERNEL_DIR, ""),
                   name=labels.get(NAME, ""))

    @property
    def host(self) -> str:
        return self.server_id.split(":", 1)[0]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def selector(kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
             server_id: str | None = None) -> dict[str, str]:
    """Label filters (all must match) for listing containers; ``{}`` = every container of ours."""
    out: dict[str, str] = {}
    if kind is not None:
        out[KIND] = kind
        if id is not None:
            out[_ID_LABEL[kind]] = id
    if owner_uid is not None:
        out[OWNER_UID] = str(owner_uid)
    if server_id is not None:
        out[SERVER_ID] = server_id
    return out
