"""``c.KubeBackend.*``: what the operator configures for the Kubernetes backend, gathered once.

:class:`KubeBackend` (traitlets) is read once into :class:`KubeOptions` (a frozen dataclass), which
is all the pure pod builder (:mod:`.pods`) sees. Nothing here imports ``kubernetes_asyncio``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from traitlets import Dict, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

#: Where a pod's own namespace is written inside a cluster (the server's service account).
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclasses.dataclass(frozen=True)
class KubeOptions:
    """The operator's Kubernetes settings, as plain data (see :class:`KubeBackend` for each)."""

    namespace: str = "default"
    pvc_name_template: str = "claim-{username}"
    notebook_root: str = "/home/jovyan"
    volumes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    gpu_resource: str = "nvidia.com/gpu"
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu",)
    launch_timeout: float = 300.0
    pod_service_account: str = ""
    job_ttl: int = 3600
    home_size: str = "1Gi"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    queue_name: str = ""


class KubeBackend(Configurable):
    """The Kubernetes backend of the container service (``jupyter_ptcuda.containers.kube``)."""

    namespace = Unicode(help="""Namespace the kernel and job pods run in. Default: the namespace of the
        server's own service account (in a pod), else "default".
        Example: c.KubeBackend.namespace = "jupyterhub" """).tag(config=True)

    @default("namespace")
    def _namespace_default(self) -> str:
        try:
            with open(SA_NAMESPACE_FILE) as f:
                return f.read().strip() or "default"
        except OSError:
            return "default"

    pvc_name_template = Unicode("claim-{username}", help="""The user's PersistentVolumeClaim, mounted where
        the notebook folder is ({username}, {uid}: the owner's). Default "claim-{username}" (zero-to-jupyterhub's
        name). Example: c.KubeBackend.pvc_name_template = "home-{username}" """).tag(config=True)
    notebook_root = Unicode("/home/jovyan", help="""The path at which the user's claim is mounted in the
        server's pod: a notebook folder below it is mounted from the claim (subPath). Default "/home/jovyan".
        Example: c.KubeBackend.notebook_root = "/home/jovyan" """).tag(config=True)
    volumes = Dict(help="""Further folders a kernel may mount: path prefix -> a Kubernetes volume source.
        A mount outside notebook_root and these is refused (no hostPath). Default {}. Example:
        c.KubeBackend.volumes = {"/data": {"persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}}
        """).tag(config=True)
    node_selector = Dict(help="""nodeSelector of every pod. Default {}. Example:
        c.KubeBackend.node_selector = {"nvidia.com/gpu.present": "true"}""").tag(config=True)
    tolerations: List[Any] = List(help="""tolerations of every pod. Default []. Example:
        c.KubeBackend.tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        """).tag(config=True)
    gpu_resource = Unicode("nvidia.com/gpu", help="""The extended resource a GPU count asks for, unless the
        kernelspec names another of gpu_resources. Default "nvidia.com/gpu".
        Example: c.KubeBackend.gpu_resource = "nvidia.com/mig-1g.18gb" """).tag(config=True)
    gpu_resources = List(Unicode(), help="""The GPU resources a kernelspec may name (``gpu_resource``
        option), e.g. MIG profiles. gpu_resource is always allowed. Default []. Example:
        c.KubeBackend.gpu_resources = ["nvidia.com/mig-1g.18gb", "nvidia.com/mig-3g.71gb"]""").tag(config=True)
    launch_timeout = Float(300.0, help="""Seconds a pod may stay Pending (no GPU free, quota, image pull)
        before it is deleted and the launch fails with the scheduler's reason. Default 300.
        Example: c.KubeBackend.launch_timeout = 600""").tag(config=True)
    service_account = Unicode("", help="""serviceAccountName of kernel and job pods (their API token is never
        mounted). Default "": the namespace's default account. The *server* uses its own pod's account, which
        needs the Role in examples/k8s/role.yaml. Example: c.KubeBackend.service_account = "ptcuda-kernels"
        """).tag(config=True)
    job_ttl = Int(3600, help="""ttlSecondsAfterFinished of job Jobs: seconds a finished Job (and its logs)
        is kept. Default 3600. Example: c.KubeBackend.job_ttl = 86400""").tag(config=True)
    home_size = Unicode("1Gi", help="""sizeLimit of the emptyDir that is the container's HOME. Default "1Gi".
        Example: c.KubeBackend.home_size = "4Gi" """).tag(config=True)
    image_pull_policy = Unicode("IfNotPresent", help="""imagePullPolicy of the container. Default
        "IfNotPresent". Example: c.KubeBackend.image_pull_policy = "Always" """).tag(config=True)

    image_pull_secrets = List(Unicode(), help="""Names of the Secrets (type kubernetes.io/dockerconfigjson, in
        the pods' namespace) the kubelet uses to pull kernel and job images from a registry that needs a
        login: the pods' imagePullSecrets. The operator's registry credentials stay in the cluster; no user's
        token reaches a container. Default []. Make one with `kubectl create secret docker-registry regcred
        --docker-server=REGISTRY --docker-username=USER --docker-password=...`.
        Example: c.KubeBackend.image_pull_secrets = ["regcred"]""").tag(config=True)

    queue_name = Unicode("", help="""Kueue opt-in: the LocalQueue (in the pods' namespace) that admits jobs and
        kernels, so the cluster's fair-share queue is the real one. Jobs are created suspended with the label
        kueue.x-k8s.io/queue-name (Kueue unsuspends a Job it admits); kernel pods carry the same label (Kueue's
        pod integration gates them until admitted). While a Job waits for admission its reason is Kueue's
        event, and it is not deleted at launch_timeout. Default "": no Kueue.
        Example: c.KubeBackend.queue_name = "team-a" """).tag(config=True)

    @validate("queue_name")
    def _check_queue_name(self, proposal: Any) -> str:
        name = str(proposal["value"]).strip()
        if name and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?", name):
            raise TraitError(f"c.KubeBackend.queue_name: {name!r} is not a LocalQueue name (at most 63 lower-case "
                             "letters, digits, '-' and '.'), e.g. \"team-a\".")
        return name

    @validate("image_pull_secrets")
    def _check_pull_secrets(self, proposal: Any) -> list[str]:
        names = [str(n).strip() for n in proposal["value"]]
        for name in names:
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
                raise TraitError(f"c.KubeBackend.image_pull_secrets: {name!r} is not a Secret name (lower-case "
                                 "letters, digits, '-' and '.'), e.g. \"regcred\".")
        return names

    def options(self) -> KubeOptions:
        """The settings as plain data for :func:`.pods.pod_manifest`."""
        allowed = tuple(dict.fromkeys([self.gpu_resource, *self.gpu_resources]))
        return KubeOptions(
            namespace=self.namespace or os.environ.get("POD_NAMESPACE", "") or "default",
            pvc_name_template=self.pvc_name_template, notebook_root=self.notebook_root.rstrip("/") or "/",
            volumes={k.rstrip("/") or "/": dict(v) for k, v in self.volumes.items()},
            node_selector={str(k): str(v) for k, v in self.node_selector.items()},
            tolerations=tuple(dict(t) for t in self.tolerations), gpu_resource=self.gpu_resource,
            gpu_resources=allowed, launch_timeout=self.launch_timeout, pod_service_account=self.service_account,
            job_ttl=self.job_ttl, home_size=self.home_size, image_pull_policy=self.image_pull_policy,
            image_pull_secrets=tuple(self.image_pull_secrets), queue_name=self.queue_name,
        )
