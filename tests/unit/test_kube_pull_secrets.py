"""Kubernetes pulls kernel and job images from a registry with the operator's login: c.KubeBackend
image_pull_secrets become the pods' (and Jobs' pods') imagePullSecrets, and an image pinned by digest
stays pinned in every container of the manifest. Schema-validated (kubernetes-validate, strict)."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy
from jupyter_ptcuda.containers.gpus import GpuRequest
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.containers.kube.options import KubeBackend
from jupyter_ptcuda.containers.spec import SpecFile
from tests.unit.test_kube_pods import ANN, job_request, validate

PINNED = "registry.example.org:5000/team/kernel@sha256:" + "ab" * 32


def options(**traits):
    c = Config()
    c.KubeBackend.namespace = "hub"
    for k, v in traits.items():
        setattr(c.KubeBackend, k, v)
    return KubeBackend(config=c).options()


def test_a_job_pulls_its_pinned_digest_with_the_operators_secrets():
    opts = options(image_pull_secrets=["regcred", "mirror.creds"])
    m = validate(P.build_pod(job_request(image=PINNED), Policy(images=(PINNED,)), ANN, opts, name="ptcuda-job-x"))
    pod = m["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.creds"}]
    assert pod["containers"][0]["image"] == PINNED


def test_a_kernel_pod_and_its_file_copier_run_the_same_digest():
    opts = options(image_pull_secrets=["regcred"])
    spec = P.build(job_request(kind=L.KERNEL, image=PINNED, gpus=GpuRequest(),
                               files=(SpecFile("/run/ptcuda/kernel.json", b"{}"),)), Policy(images=(PINNED,)), ANN)
    pod = validate(P.pod_manifest(spec, opts, ANN, name="ptcuda-kernel-x"))["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {PINNED}


def test_without_secrets_the_manifest_has_none():
    m = validate(P.build_pod(job_request(), Policy(images=("img:1",)), ANN, options(), name="j"))
    assert "imagePullSecrets" not in m["spec"]["template"]["spec"]


@pytest.mark.parametrize("bad", ["RegCred", "reg cred", "", "-x"])
def test_a_bad_secret_name_is_refused_with_an_example(bad):
    with pytest.raises(TraitError, match="is not a Secret name .* e.g. \"regcred\""):
        options(image_pull_secrets=[bad])
