"""``jupyter ptcuda serve`` on the Kubernetes backend, through the in-memory API server (Role enforced) whose node
runs pods on the local Docker engine: a job (a Kubernetes Job) logs a small PyTorch model to real MLflow, it is
registered, and serving it makes a pod (schema-validated: the job's digest, hardened, a readiness probe on /ping)
whose scoring server answers a prediction at the pod's IP; stopping it deletes the pod and the model's copy.
Not exercised here (no real cluster): the kubelet's probes, image pulls, a CNI enforcing the NetworkPolicy."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import kubernetes_validate
import pytest
from traitlets.config import Config

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.jobs import serving
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.conftest import finished
from tests.integration.test_tracking import mlflow_image  # noqa: F401 - the fixture

from .fakeapi import SCHEMA
from .test_kube_jobs import gone, objects, project, script
from .test_kube_kernels import node_cluster

pytestmark = pytest.mark.integration

TRAIN = """\
import mlflow, torch
model = torch.nn.Linear(2, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[2.0, 3.0]])); model.bias.fill_(1.0)
mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
"""
ROW = b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}'


async def test_a_registered_model_is_served_from_a_pod_of_its_digest_and_answers_at_its_ip(tmp_path, mlflow_image):  # noqa: F811
    async with node_cluster(tmp_path) as (fake, svc, node):
        c = Config()
        c.JobOptions.image = mlflow_image
        c.JobManager.mlflow_tracking = True
        c.JobManager.mlflow_tracking_uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
        mgr = JobManager(service=svc, config=c, db_path=str(tmp_path / "jobs.sqlite"), poll_interval=0.2,
                         cancel_grace=1.0, reconcile_interval=0)
        try:
            proj = project(tmp_path)
            job = await mgr.submit(JobRequest(path=script(proj, "train.py", TRAIN), gpus="none", timeout=600))
            job = await finished(mgr, job.id, within=180)
            assert job.state == "completed", Path(job.log_path).read_text()
            deadline = time.monotonic() + 60  # the run is closed just after the job's end is recorded
            while ((job := await mgr.get(job.id)).meta.get("mlflow") or {}).get("status") not in ("FINISHED", "FAILED"):
                assert time.monotonic() < deadline, job.meta
                await asyncio.sleep(0.2)
            version = await mgr.tracker.register_job(job, "kubelinear", None)
            assert version["uri"] == "models:/kubelinear/1", version

            served = await serving.start(mgr, "models:/kubelinear/1", wait=180)
            try:
                (pod,) = [o for o in objects(fake, "pods") if o["metadata"]["labels"].get(L.KIND) == "serve"]
                kubernetes_validate.validate(pod, SCHEMA, strict=True)
                main = pod["spec"]["containers"][0]
                assert main["image"] == job.image_digest == served["image"]  # the digest the model was trained in
                assert main["readinessProbe"]["httpGet"]["path"] == "/ping"
                assert pod["spec"]["securityContext"]["runAsUser"] == 1000
                assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
                model = next(m for m in main["volumeMounts"] if m["mountPath"] == serving.MODEL_DIR)
                assert model["readOnly"] and model["subPath"].startswith(f"proj/outputs/{job.id}/served-model-")

                where = await serving.endpoint(mgr, served["id"])
                assert where.url.startswith("http://") and where.url.endswith(":5000") and not where.socket
                code, ctype, body = await serving.forward(mgr, served["id"], "POST", "invocations", ROW,
                                                          "application/json", 60)
                assert code == 200 and b"9.0" in body, body
                assert [s["id"] for s in await serving.servers(mgr)] == [served["id"]]
            finally:
                await serving.stop(mgr, served["id"])
            await gone(fake, "pods")
            assert not [p for p in os.listdir(job.output_dir) if p.startswith("served-model-")]
        finally:
            await mgr.stop()
