"""The pure pod builder: ContainerSpec (+ the operator's :class:`~.options.KubeOptions`) → a V1Pod or
batch/v1 Job manifest, as a plain dict. No I/O; tested by dict equality and validated against the
Kubernetes OpenAPI schema (``tests/unit/test_kube_pods.py``), like kubespawner's ``make_pod``.

Every policy check stays in :func:`~jupyter_ptcuda.containers.build.build`: :func:`build_pod` calls it and
only translates its result. What only Kubernetes needs checking here: GPUs as a count of an allowed
extended resource (the scheduler picks the devices), mounts that a configured volume holds (never a
``hostPath``), names and label values the API server accepts.

Files placed before start (``spec.files``: a kernel's connection file) travel as a Secret
(:func:`secret_manifest`, owned by the pod so the garbage collector deletes it with the pod), copied by
an init container into a memory-backed ``emptyDir`` at the file's folder (ipykernel rewrites its
connection file; a Secret volume is read-only).

Labels: :mod:`..labels` writes them. Kubernetes label values are at most 63 characters of
``[A-Za-z0-9._-]``, so the full set is kept as *annotations* (the truth that :class:`~..labels.Tag`
reads back) and the ones whose value is a valid label value are labels too (what selectors use).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from .. import labels as L
from ..build import Policy, Request, build
from ..identity import Identity
from ..spec import ContainerSpec, Mount
from .options import KubeOptions

#: The label every pod and Job of ours carries (the reaper's and the listings' first filter).
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "jupyter-ptcuda"
#: The label the Job controller puts on a Job's pods.
JOB_NAME = "batch.kubernetes.io/job-name"
CONTAINER = "main"
SHM = "/dev/shm"
#: The annotation of a kernel pod that keeps what a job copies from it (:func:`spec_record`).
SPEC = L.PREFIX + "spec"
#: Where an init container reads a pod's Secret (``-<n>`` per folder of files).
SECRET_DIR = "/var/run/ptcuda-secret"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESOURCE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]"
                       r"([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def escape_name(text: str) -> str:
    """``text`` as a DNS label part: [a-z0-9] kept, anything else ``-xx`` (its hex), as kubespawner's
    escaping does for user names (``"Ann.B"`` → ``"-41nn-2e-42"``)."""
    return "".join(c if c.isascii() and (c.islower() or c.isdigit()) else "".join(f"-{b:02x}" for b in c.encode())
                   for c in text)


def object_name(spec: ContainerSpec, suffix: str) -> str:
    """The pod's (or Job's) name: the spec's name when it is a valid DNS label, else
    ``ptcuda-<kind>-<id[:8]>-<suffix>``."""
    if spec.name and len(spec.name) <= 52 and _DNS_LABEL.match(spec.name):  # 52: the Job's pod adds -xxxxx
        return spec.name
    tag = L.Tag.read(spec.labels)
    ident = escape_name(tag.id)[:8].strip("-")
    return "-".join(p for p in ("ptcuda", tag.kind or "pod", ident, suffix) if p)


def split_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(labels, annotations)``: every label is an annotation; those with a valid value are labels too."""
    return ({MANAGED_BY: MANAGED_BY_VALUE, **{k: v for k, v in labels.items() if valid_label_value(v)}},
            dict(labels))


def label_selector(selector: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """A :func:`..labels.selector` as ``(labelSelector, what to check on the annotations afterwards)``."""
    terms = [f"{MANAGED_BY}={MANAGED_BY_VALUE}"]
    after: dict[str, str] = {}
    for k, v in selector.items():
        if valid_label_value(v):
            terms.append(f"{k}={v}")
        else:
            after[k] = v
    return ",".join(terms), after


def _quantity(n: int) -> str:
    return str(int(n))


def _gpu_resources(spec: ContainerSpec, opts: KubeOptions, resource: str | None) -> dict[str, str]:
    g = spec.gpus
    if g.mode == "none":
        return {}
    name = resource or opts.gpu_resource
    if name not in opts.gpu_resources:
        raise ConfigError(f"gpu_resource {name!r} is not one the operator allows ({', '.join(opts.gpu_resources)}): "
                          "pick one of them, or ask the operator to add it (c.KubeBackend.gpu_resources).")
    if not _RESOURCE.match(name):
        raise ConfigError(f"gpu_resource {name!r} is not a Kubernetes resource name: write e.g. 'nvidia.com/gpu' "
                          "or 'nvidia.com/mig-1g.18gb'.")
    if g.mode == "count":
        return {name: str(g.count)}
    if g.mode == "all":
        raise ConfigError("gpus='all' has no meaning on Kubernetes (the scheduler hands out GPUs by count): "
                          "ask for a count, e.g. gpus=1.")
    raise ConfigError(f"gpus={g.label()!r}: on Kubernetes the scheduler picks the devices; ask for a count "
                      f"(gpus={len(g.ids)}) instead of device ids.")


def _volumes(spec: ContainerSpec, opts: KubeOptions, identity: Identity
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the container's volumeMounts for the spec's mounts, HOME and /dev/shm."""
    volumes: list[dict[str, Any]] = [{"name": "home", "emptyDir": {"sizeLimit": opts.home_size}}]
    mounts: list[dict[str, Any]] = [{"name": "home", "mountPath": spec.home}]
    if spec.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(spec.shm_size)}})
        mounts.append({"name": "dshm", "mountPath": SHM})
    private = spec.labels.get(L.KERNEL_DIR) or None
    roots: list[tuple[str, str, dict[str, Any]]] = []
    claim = opts.pvc_name_template.format(username=escape_name(identity.name), uid=identity.uid)
    if not _DNS_SUBDOMAIN.match(claim) or len(claim) > 253:
        raise ConfigError(f"c.KubeBackend.pvc_name_template gives {claim!r}, not a valid claim name: use lower-case "
                          "letters, digits and '-', e.g. 'claim-{username}'.")
    roots.append((opts.notebook_root, "notebooks", {"persistentVolumeClaim": {"claimName": claim}}))
    for i, (prefix, source) in enumerate(sorted(opts.volumes.items())):
        roots.append((prefix, f"volume-{i}", dict(source)))
    used: set[str] = set()
    for m in spec.mounts:
        mounts.append(_mount(m, private, roots, used, volumes))
    return volumes, mounts


def _mount(m: Mount, private: str | None, roots: list[tuple[str, str, dict[str, Any]]], used: set[str],
           volumes: list[dict[str, Any]]) -> dict[str, Any]:
    if private and m.source == private:
        if "kernel-dir" not in used:
            used.add("kernel-dir")
            volumes.append({"name": "kernel-dir", "emptyDir": {}})
        return {"name": "kernel-dir", "mountPath": m.target}
    source = posixpath.normpath(m.source)
    # the longest root that holds the source
    for prefix, name, volume in sorted(roots, key=lambda r: -len(r[0])):
        if source == prefix or source.startswith(prefix.rstrip("/") + "/") or prefix == "/":
            if name not in used:
                used.add(name)
                volumes.append({"name": name, **volume})
            out: dict[str, Any] = {"name": name, "mountPath": m.target}
            sub = posixpath.relpath(source, prefix)
            if sub != ".":
                out["subPath"] = sub
            if m.read_only:
                out["readOnly"] = True
            return out
    raise ConfigError(f"mount {m.source!r}: no Kubernetes volume holds it (host paths are never mounted). Put the "
                      f"notebook under {roots[0][0]}, or ask the operator to add a volume for it "
                      "(c.KubeBackend.volumes = {'/data': {'persistentVolumeClaim': {'claimName': 'datasets'}}}).")


def pod_spec(spec: ContainerSpec, opts: KubeOptions, identity: Identity, *, gpu_resource: str | None = None,
             secret: str = "") -> dict[str, Any]:
    """The V1PodSpec of ``spec``: the user's uid:gid, no privilege, the limits, GPUs by count, volumes;
    ``spec.files`` (a kernel's connection file) from the Secret ``secret`` (:func:`secret_manifest`)."""
    uid_s, _, gid_s = spec.user.partition(":")
    uid, gid = int(uid_s), int(gid_s or uid_s)
    gpus = _gpu_resources(spec, opts, gpu_resource)
    limits: dict[str, str] = {}
    if spec.cpus:
        limits["cpu"] = f"{int(round(spec.cpus * 1000))}m"
    if spec.mem_limit:
        limits["memory"] = _quantity(spec.mem_limit)
    limits.update(gpus)
    resources: dict[str, Any] = {"limits": limits} if limits else {}
    if gpus:
        resources["requests"] = dict(gpus)
    env = {k: v for k, v in spec.env.items() if k != "NVIDIA_VISIBLE_DEVICES"}  # the device plugin's to set
    env["HOME"] = spec.home
    if not gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"  # an image's "all" must not reach every GPU on the node
    volumes, mounts = _volumes(spec, opts, identity)
    container_security = {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": uid != 0,
                          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    init = _file_copies(spec, secret, volumes, mounts, opts, container_security,
                        {k: v for k, v in limits.items() if k in ("cpu", "memory")})
    container: dict[str, Any] = {
        "name": CONTAINER, "image": spec.image, "imagePullPolicy": opts.image_pull_policy,
        "args": list(spec.command), "workingDir": spec.workdir,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": resources, "volumeMounts": mounts,
        "securityContext": container_security,
    }
    out: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a kernel has no business with the API
        "enableServiceLinks": False,
        "securityContext": {"runAsUser": uid, "runAsGroup": gid, "runAsNonRoot": uid != 0,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            # a Secret's files are root's; its group (fsGroup) lets the container user read them
                            **({"fsGroup": gid, "fsGroupChangePolicy": "OnRootMismatch"} if spec.files else {})},
        **({"initContainers": init} if init else {}),
        "containers": [container],
        "volumes": volumes,
    }
    if opts.pod_service_account:
        out["serviceAccountName"] = opts.pod_service_account
    if opts.image_pull_secrets:  # the operator's registry login, for the kubelet (never in the container)
        out["imagePullSecrets"] = [{"name": n} for n in opts.image_pull_secrets]
    if opts.node_selector:
        out["nodeSelector"] = dict(opts.node_selector)
    if opts.tolerations:
        out["tolerations"] = [dict(t) for t in opts.tolerations]
    return out


def _file_key(i: int, path: str) -> str:
    """The Secret key of the ``i``-th file (keys are ``[-._a-zA-Z0-9]+``)."""
    return f"{i}-" + re.sub(r"[^-._a-zA-Z0-9]", "_", posixpath.basename(path))


def _file_copies(spec: ContainerSpec, secret: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]],
                 opts: KubeOptions, security: dict[str, Any], limits: dict[str, str]) -> list[dict[str, Any]]:
    """``spec.files`` in the pod: per folder, the Secret's items (read-only, root:fsGroup, the owner's
    mode bits given to the group too) copied by an init container into a memory-backed ``emptyDir`` at
    the folder, where the container user owns them as with Docker (ipykernel rewrites its connection
    file at start: a Secret volume is read-only). Adds the volumes and the main container's mounts;
    returns the init containers."""
    folders: dict[str, list[dict[str, Any]]] = {}
    for i, f in enumerate(spec.files):
        if not f.path.startswith("/") or ".." in f.path.split("/"):
            raise ConfigError(f"container file {f.path!r}: give an absolute path without '..'.")
        owner = f.mode & 0o700
        folders.setdefault(posixpath.dirname(f.path), []).append(
            {"key": _file_key(i, f.path), "path": posixpath.basename(f.path), "mode": owner | owner >> 3})
    init: list[dict[str, Any]] = []
    for n, (folder, items) in enumerate(sorted(folders.items())):
        source = f"{SECRET_DIR}-{n}"
        volumes += [{"name": f"secret-{n}", "secret": {"secretName": secret, "items": items, "defaultMode": 0o440}},
                    {"name": f"files-{n}", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
        mounts.append({"name": f"files-{n}", "mountPath": folder})
        init.append({"name": f"files-{n}", "image": spec.image, "imagePullPolicy": opts.image_pull_policy,
                     "command": ["cp", "-t", folder, *(f"{source}/{item['path']}" for item in items)],
                     "resources": {"limits": dict(limits)} if limits else {},
                     "volumeMounts": [{"name": f"secret-{n}", "mountPath": source, "readOnly": True},
                                      {"name": f"files-{n}", "mountPath": folder}],
                     "securityContext": dict(security)})
    return init


def secret_manifest(spec: ContainerSpec, opts: KubeOptions, *, name: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Secret that holds ``spec.files`` for the pod (or Job) ``owner`` (the object the API server
    returned: its uid makes the Secret go with it, by the garbage collector). Immutable: written once."""
    import base64

    labels, _ = split_labels(spec.labels)
    meta = owner.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": {"name": name, "namespace": opts.namespace, "labels": labels,
                         "ownerReferences": [{"apiVersion": owner.get("apiVersion") or "v1", "kind": owner.get("kind") or "Pod",
                                              "name": meta.get("name") or name, "uid": meta.get("uid") or ""}]},
            "data": {_file_key(i, f.path): base64.b64encode(f.data).decode() for i, f in enumerate(spec.files)}}


def spec_record(spec: ContainerSpec, gpu_resource: str | None = None) -> str:
    """What a job copies from a kernel pod (``run --from-kernel`` from another process than the server
    that started it), kept on the pod as annotation :data:`SPEC`: the spec less its files (the kernel's
    key), command, ports and labels (the other annotations), and the kernelspec's ``gpu_resource``. A job
    made from it goes through the policy again (:func:`..build.job_from_kernel` → :func:`..build.build`)."""
    from .. import wire

    data = wire.spec_to_json(dataclasses.replace(spec, files=(), command=(), ports={}, labels={}))
    del data["files"], data["command"], data["ports"], data["labels"]
    return json.dumps({"spec": data, "gpu_resource": gpu_resource or ""}, separators=(",", ":"), sort_keys=True)


def spec_from_record(annotations: Mapping[str, str]) -> tuple[ContainerSpec, str] | None:
    """``(spec, gpu_resource)`` from a kernel pod's annotations (:func:`spec_record`); None when it has no
    record (a pod made before records were kept). ConfigError when the record is malformed."""
    from .. import wire

    raw = annotations.get(SPEC)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        spec = wire.spec_from_json({**data["spec"], "labels": {k: v for k, v in annotations.items() if k != SPEC}})
        return spec, str(data.get("gpu_resource") or "")
    except (ValueError, KeyError, TypeError, ConfigError):
        raise ConfigError(f"the pod's {SPEC} annotation is not what jupyter-ptcuda wrote: restart the kernel "
                          "(its new pod gets a fresh one).") from None


#: The label Kueue reads: which LocalQueue admits a Job or pod (``c.KubeBackend.queue_name``).
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"


def pod_manifest(spec: ContainerSpec, opts: KubeOptions, identity: Identity, *, name: str,
                 gpu_resource: str | None = None) -> dict[str, Any]:
    """The Pod of a kernel (with its :func:`spec_record`; with Kueue, its queue's label), model server (with its
    record too), check or probe."""
    labels, annotations = split_labels(spec.labels)
    if spec.labels.get(L.KIND) in (L.KERNEL, L.SERVE):  # spec_of() reads it back (a model server: its model's copy)
        annotations[SPEC] = spec_record(spec, gpu_resource)
    if spec.labels.get(L.KIND) == L.KERNEL:
        if opts.queue_name:
            labels[KUEUE_QUEUE] = opts.queue_name
    body = pod_spec(spec, opts, identity, gpu_resource=gpu_resource, secret=name)
    if spec.labels.get(L.KIND) == L.SERVE:
        body["containers"][0].update(serve_container())
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": opts.namespace, "labels": labels, "annotations": annotations},
            "spec": body}


def serve_container() -> dict[str, Any]:
    """What a model server's container adds (``jupyter ptcuda serve``): its scoring port (on the pod's IP, where
    the user's server reaches it, as it reaches a kernel: no Service; the NetworkPolicy in examples/k8s admits
    only single-user servers) and a readiness probe on MLflow's ``/ping`` (the pod is Ready once the model is
    loaded)."""
    return {"ports": [{"name": "http", "containerPort": L.SERVE_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": L.SERVE_READY_PATH, "port": "http"}, "initialDelaySeconds": 2,
                               "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}}


def job_manifest(spec: ContainerSpec, opts: KubeOptions, identity: Identity, *, name: str,
                 timeout: float | None = None, gpu_resource: str | None = None) -> dict[str, Any]:
    """The Job of a job: one try (``backoffLimit`` 0), ``activeDeadlineSeconds`` = ``timeout``, kept
    ``job_ttl`` seconds after it finished. With Kueue (``queue_name``): created suspended, labelled with its
    queue, as Kueue expects (it unsuspends the Job when it admits it)."""
    labels, annotations = split_labels(spec.labels)
    job_spec: dict[str, Any] = {  # the queue label on the Job alone: its pods are the Job's, not Kueue pods
        "backoffLimit": 0, "ttlSecondsAfterFinished": opts.job_ttl,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                     "spec": pod_spec(spec, opts, identity, gpu_resource=gpu_resource, secret=name)},
    }
    if opts.queue_name:
        labels[KUEUE_QUEUE] = opts.queue_name
    if timeout:
        job_spec["activeDeadlineSeconds"] = max(1, int(timeout))
    if opts.queue_name:
        job_spec["suspend"] = True
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": opts.namespace, "labels": labels, "annotations": annotations},
            "spec": job_spec}


def manifest(spec: ContainerSpec, opts: KubeOptions, identity: Identity, *, name: str, timeout: float | None = None,
             gpu_resource: str | None = None) -> dict[str, Any]:
    """A Job for a job, a Pod for anything else."""
    if spec.labels.get(L.KIND) == L.JOB:
        return job_manifest(spec, opts, identity, name=name, timeout=timeout, gpu_resource=gpu_resource)
    return pod_manifest(spec, opts, identity, name=name, gpu_resource=gpu_resource)


def build_pod(request: Request, policy: Policy, identity: Identity, opts: KubeOptions, *, name: str,
              timeout: float | None = None, gpu_resource: str | None = None) -> dict[str, Any]:
    """(request, policy, identity) → the Pod or Job manifest: :func:`..build.build`'s spec, translated.
    Every refusal of the policy is build()'s."""
    return manifest(build(request, policy, identity), opts, identity, name=name, timeout=timeout,
                    gpu_resource=gpu_resource)
