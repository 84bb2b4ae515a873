"""Kueue opt-in (c.KubeBackend.queue_name): jobs are Jobs created suspended with Kueue's queue label, kernel
pods carry the label; every manifest validated against the Kubernetes OpenAPI schema (kubernetes-validate,
strict). Without the option nothing changes."""

from __future__ import annotations

import dataclasses

import pytest
from traitlets import TraitError

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.containers.kube.options import KubeBackend
from tests.unit.test_kube_pods import ANN, OPTS, POLICY, job_request, validate

KUEUE = dataclasses.replace(OPTS, queue_name="team-a")


def test_a_job_is_created_suspended_in_its_kueue_queue():
    m = validate(P.build_pod(job_request(), POLICY, ANN, KUEUE, name="ptcuda-job-0a1b2c3d-abc123", timeout=3600))
    assert m["kind"] == "Job" and m["spec"]["suspend"] is True
    assert m["metadata"]["labels"][P.KUEUE_QUEUE] == "team-a"
    assert P.KUEUE_QUEUE not in m["spec"]["template"]["metadata"]["labels"]  # its pods are the Job's
    plain = P.build_pod(job_request(), POLICY, ANN, OPTS, name="ptcuda-job-0a1b2c3d-abc123", timeout=3600)
    assert "suspend" not in plain["spec"] and P.KUEUE_QUEUE not in plain["metadata"]["labels"]
    without = {k: v for k, v in m["spec"].items() if k != "suspend"}
    assert without == plain["spec"]  # Kueue changes nothing else


def test_a_kernel_pod_carries_the_queue_label():
    req = job_request(kind=L.KERNEL, id="k-1234", command=("python", "-m", "ipykernel_launcher"))
    m = validate(P.build_pod(req, POLICY, ANN, KUEUE, name="ptcuda-kernel-k-1234-abc123"))
    assert m["kind"] == "Pod" and m["metadata"]["labels"][P.KUEUE_QUEUE] == "team-a"
    assert P.KUEUE_QUEUE not in P.build_pod(req, POLICY, ANN, OPTS, name="ptcuda-kernel-k-1234-abc123")["metadata"]["labels"]


def test_queue_name_is_a_trait_checked_as_a_localqueue_name():
    assert KubeBackend(queue_name=" team-a ").options().queue_name == "team-a"
    assert KubeBackend().options().queue_name == ""
    with pytest.raises(TraitError, match="is not a LocalQueue name"):
        KubeBackend(queue_name="Team A")

