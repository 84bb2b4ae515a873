"""A model server (``jupyter ptcuda serve``) on Kubernetes: the pod the pure builder makes for it, validated against
the Kubernetes 1.37 OpenAPI schema (kubernetes-validate, strict). The exact image digest the model was trained in,
the user's uid, no privilege, GPUs as a count of the allowed resource, the model read-only from the user's claim,
the scoring port on the pod's IP and a readiness probe on MLflow's /ping."""

from __future__ import annotations

import kubernetes_validate
import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy, Request
from jupyter_ptcuda.containers.gpus import GpuRequest
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.containers.spec import Mount
from jupyter_ptcuda.errors import ConfigError, Forbidden
from tests.unit.test_kube_pods import ANN, K8S_VERSION, OPTS

DIGEST = "registry.example.org/ml/kernel@sha256:" + "ab" * 32
MODEL = "/home/jovyan/proj/outputs/0a1b2c3d4e5f/served-model-0123456789ab"


def serve_request(**kw) -> Request:
    base = dict(kind=L.SERVE, image=DIGEST, run_as="1000:100", workdir=None, mount_workdir=False,
                command=("python", "-m", "mlflow", "models", "serve", "-m", "/opt/ptcuda-model", "--env-manager",
                         "local", "-h", "0.0.0.0", "-p", "5000"),
                id="0123456789ab", notebook="models:/linear/1", gpus=GpuRequest("count", 1),
                mounts=(Mount(MODEL, "/opt/ptcuda-model", True),), env={"PYTHONUNBUFFERED": "1"},
                mem_limit=4 * 1024**3, cpus=2.0, name="ptcuda-serve-0123456789ab")
    base.update(kw)
    return Request(**base)


def test_a_model_server_is_a_hardened_pod_of_the_digest_with_a_gpu_and_a_readiness_probe_on_ping():
    m = P.build_pod(serve_request(), Policy(images=(DIGEST,)), ANN, OPTS, name="ptcuda-serve-0123456789ab")
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    assert m["kind"] == "Pod" and m["metadata"]["labels"][L.KIND] == "serve"
    assert m["metadata"]["labels"][L.SERVE_ID] == "0123456789ab"
    assert m["metadata"]["annotations"][L.NOTEBOOK] == "models:/linear/1"
    record = P.spec_from_record(m["metadata"]["annotations"])  # what serve stop reads back: the model's copy
    assert record is not None and [(x.source, x.read_only) for x in record[0].mounts] == [(MODEL, True)]
    spec = m["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = spec["containers"]
    assert c["image"] == DIGEST  # the exact image the model was trained in
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert c["resources"] == {"limits": {"cpu": "2000m", "memory": str(4 * 1024**3), "nvidia.com/gpu": "1"},
                              "requests": {"nvidia.com/gpu": "1"}}
    assert c["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "http"}
    # the model, read-only, from the user's claim (never a hostPath)
    model = next(v for v in c["volumeMounts"] if v["mountPath"] == "/opt/ptcuda-model")
    assert model == {"name": "notebooks", "mountPath": "/opt/ptcuda-model", "readOnly": True,
                     "subPath": "proj/outputs/0a1b2c3d4e5f/served-model-0123456789ab"}
    assert {"name": "notebooks", "persistentVolumeClaim": {"claimName": "claim-ann"}} in spec["volumes"]
    assert not any("hostPath" in v for v in spec["volumes"])
    env = {e["name"]: e["value"] for e in c["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in env  # the device plugin's to set
    assert "UVICORN_UDS" not in env  # a pod listens on its IP


def test_a_model_server_without_gpus_gets_no_device_and_a_cpu_only_pod_validates():
    m = P.build_pod(serve_request(gpus=GpuRequest()), Policy(images=(DIGEST,)), ANN, OPTS, name="ptcuda-serve-x")
    kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    c = m["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in c["env"]


def test_a_model_server_outside_the_policy_or_the_claim_is_refused_before_any_pod():
    with pytest.raises(Forbidden, match="not allowed"):
        P.build_pod(serve_request(), Policy(images=("other:1",)), ANN, OPTS, name="x")
    with pytest.raises(ConfigError, match="no Kubernetes volume holds it"):
        P.build_pod(serve_request(mounts=(Mount("/srv/elsewhere/model", "/opt/ptcuda-model", True),)),
                    Policy(images=(DIGEST,)), ANN, OPTS, name="x")
    with pytest.raises(ConfigError, match="ask for a count"):
        P.build_pod(serve_request(gpus=GpuRequest("ids", ids=("0",))), Policy(images=(DIGEST,)), ANN, OPTS, name="x")


def test_the_example_network_policy_admits_only_single_user_servers_to_the_scoring_port():
    import pathlib

    import yaml

    policy = yaml.safe_load((pathlib.Path(__file__).parents[2] / "examples/k8s/networkpolicy-serve.yaml").read_text())
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    pod = P.build_pod(serve_request(), Policy(images=(DIGEST,)), ANN, OPTS, name="ptcuda-serve-x")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"component": "singleuser-server"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": L.SERVE_PORT}]
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == L.SERVE_PORT
