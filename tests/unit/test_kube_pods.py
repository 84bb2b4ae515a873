"""The pure pod builder (containers/kube/pods.py): dict equality, and every manifest it makes validated
against the Kubernetes OpenAPI schema of a current release (kubernetes-validate, strict)."""

from __future__ import annotations

import dataclasses

import kubernetes_validate
import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy, Request
from jupyter_ptcuda.containers.gpus import GpuRequest, parse_gpus
from jupyter_ptcuda.containers.identity import Identity
from jupyter_ptcuda.containers.kube import pods as P
from jupyter_ptcuda.containers.kube.options import KubeBackend, KubeOptions
from jupyter_ptcuda.errors import ConfigError, Forbidden

K8S_VERSION = "1.37.0"  # the newest schema kubernetes-validate ships
ANN = Identity(uid=1000, gid=100, name="ann", server_id="jupyter-ann:7:1700000000", server_pid=7)
OPTS = KubeOptions(namespace="hub", gpu_resources=("nvidia.com/gpu", "nvidia.com/mig-1g.18gb"))
POLICY = Policy(images=("img:1",))


def job_request(**kw) -> Request:
    base = dict(kind=L.JOB, image="img:1", command=("python", "train.py"), run_as="1000:100",
                workdir="/home/jovyan/proj", id="0a1b2c3d4e5f", notebook="proj/nb.ipynb", gpus=GpuRequest("count", 1),
                mem_limit=8 * 1024**3, cpus=4.0, env={"LANG": "C.UTF-8", "NVIDIA_VISIBLE_DEVICES": "all"})
    base.update(kw)
    return Request(**base)


def validate(manifest: dict) -> dict:
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    return manifest


def test_a_job_is_a_hardened_job_with_a_gpu_count_and_the_users_claim():
    m = validate(P.build_pod(job_request(), POLICY, ANN, OPTS, name="ptcuda-job-0a1b2c3d-abc123", timeout=3600))
    labels = L.make(L.JOB, owner_uid=1000, owner="ann", server_id=ANN.server_id, server_pid=7, id="0a1b2c3d4e5f",
                    gpus="count:1", notebook="proj/nb.ipynb")
    k8s_labels = {P.MANAGED_BY: "jupyter-ptcuda", L.KIND: "job", L.SERVER_PID: "7", L.OWNER_UID: "1000",
                  L.OWNER: "ann", L.JOB_ID: "0a1b2c3d4e5f"}  # server-id, gpus, notebook: not label values
    pod_spec = {
        "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "main", "image": "img:1", "imagePullPolicy": "IfNotPresent", "args": ["python", "train.py"],
            "workingDir": "/home/jovyan/proj",
            "env": [{"name": "HOME", "value": "/tmp/ptcuda-home"}, {"name": "LANG", "value": "C.UTF-8"}],
            "resources": {"limits": {"cpu": "4000m", "memory": str(8 * 1024**3), "nvidia.com/gpu": "1"},
                          "requests": {"nvidia.com/gpu": "1"}},
            "volumeMounts": [{"name": "home", "mountPath": "/tmp/ptcuda-home"},
                             {"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "notebooks", "mountPath": "/home/jovyan/proj", "subPath": "proj"}],
            "securityContext": {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        }],
        "volumes": [{"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(2 * 1024**3)}},
                    {"name": "notebooks", "persistentVolumeClaim": {"claimName": "claim-ann"}}],
    }
    assert m == {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "ptcuda-job-0a1b2c3d-abc123", "namespace": "hub", "labels": k8s_labels,
                     "annotations": labels},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600, "activeDeadlineSeconds": 3600,
                 "template": {"metadata": {"labels": k8s_labels, "annotations": labels}, "spec": pod_spec}},
    }
    # the annotations read back as the labels (the truth), whatever Kubernetes allows as label values
    assert L.Tag.read(m["metadata"]["annotations"]).server_id == ANN.server_id


def test_a_check_is_a_pod_without_gpu_devices_and_with_the_operators_scheduling():
    opts = dataclasses.replace(OPTS, node_selector={"pool": "gpu"}, pod_service_account="kernels",
                               tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))
    m = validate(P.build_pod(job_request(kind=L.HEALTH, gpus=GpuRequest(), shm_size=None, mem_limit=None, cpus=None),
                             POLICY, ANN, opts, name="ptcuda-health-0a1b2c3d-x"))
    assert m["kind"] == "Pod" and m["metadata"]["labels"][L.CHECK_ID] == "0a1b2c3d4e5f"
    spec = m["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["serviceAccountName"] == "kernels"
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    c = spec["containers"][0]
    assert c["resources"] == {}
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in c["env"]  # an image's "all" reaches no GPU
    assert [v["name"] for v in spec["volumes"]] == ["home", "notebooks"]  # no /dev/shm volume without shm_size


def test_a_mig_profile_is_asked_for_by_its_resource_name_when_allowed():
    m = validate(P.build_pod(job_request(gpus=parse_gpus(2)), POLICY, ANN, OPTS, name="j",
                             gpu_resource="nvidia.com/mig-1g.18gb"))
    res = m["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/mig-1g.18gb"] == "2" and "nvidia.com/gpu" not in res["limits"]
    with pytest.raises(ConfigError, match="c.KubeBackend.gpu_resources"):
        P.build_pod(job_request(), POLICY, ANN, OPTS, name="j", gpu_resource="nvidia.com/mig-7g.141gb")


@pytest.mark.parametrize(("gpus", "match"), [("all", "ask for a count"), (["0", "1"], "gpus=2")])
def test_gpus_the_scheduler_cannot_give_are_refused_with_the_fix(gpus, match):
    with pytest.raises(ConfigError, match=match):
        P.build_pod(job_request(gpus=parse_gpus(gpus)), POLICY, ANN, OPTS, name="j")


def test_mounts_come_from_configured_volumes_never_from_host_paths():
    opts = dataclasses.replace(OPTS, volumes={"/data": {"persistentVolumeClaim": {"claimName": "datasets"}}})
    from jupyter_ptcuda.containers.spec import Mount

    m = validate(P.build_pod(job_request(mounts=(Mount("/data/imagenet", "/data/imagenet", True),)), POLICY, ANN,
                             opts, name="j"))
    spec = m["spec"]["template"]["spec"]
    assert {"name": "volume-0", "mountPath": "/data/imagenet", "subPath": "imagenet", "readOnly": True} in \
        spec["containers"][0]["volumeMounts"]
    assert {"name": "volume-0", "persistentVolumeClaim": {"claimName": "datasets"}} in spec["volumes"]
    with pytest.raises(ConfigError, match="host paths are never mounted"):
        P.build_pod(job_request(mounts=(Mount("/scratch", "/scratch"),)), POLICY, ANN, opts, name="j")


def test_user_names_become_valid_claim_names():
    ann = dataclasses.replace(ANN, name="Ann.B@x")
    m = validate(P.build_pod(job_request(), POLICY, ann, OPTS, name="j"))
    vols = m["spec"]["template"]["spec"]["volumes"]
    assert {"name": "notebooks", "persistentVolumeClaim": {"claimName": "claim--41nn-2e-42-40x"}} in vols
    with pytest.raises(ConfigError, match="pvc_name_template"):
        P.build_pod(job_request(), POLICY, ANN, dataclasses.replace(OPTS, pvc_name_template="Claim_{username}"),
                    name="j")


@pytest.mark.parametrize(("request_kw", "error", "match"), [
    ({"image": "evil:latest"}, Forbidden, "evil"),
    ({"run_as": "0:0"}, Forbidden, "root"),
    ({"run_as": "1001:100"}, Forbidden, "not yours"),
    ({"cpus": 64.0}, Forbidden, "max_cpus"),
])
def test_every_policy_refusal_is_builds(request_kw, error, match):
    policy = dataclasses.replace(POLICY, allow_built_images=False, max_cpus=8.0)
    with pytest.raises(error, match=match):
        P.build_pod(job_request(**request_kw), policy, ANN, OPTS, name="j")


def test_a_kernels_connection_file_comes_from_a_secret_owned_by_its_pod():
    import base64

    from jupyter_ptcuda.containers.spec import SpecFile

    spec = P.build(job_request(kind=L.KERNEL, gpus=GpuRequest(), files=(SpecFile("/run/ptcuda/kernel.json", b"{key}"),)),
                   POLICY, ANN)
    pod = validate(P.pod_manifest(spec, OPTS, ANN, name="ptcuda-kernel-0a1b2c3d-x"))
    ps = pod["spec"]
    # root:fsGroup 0440 in the pod (Docker: the container user's own, 0400); read-only; nothing else changes
    assert ps["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True, "fsGroup": 100,
                                     "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
    # the Secret, read-only, is copied by an init container (same image, user, hardening) into a memory
    # emptyDir at the file's folder: ipykernel rewrites its connection file at start
    assert ps["volumes"][-2:] == [
        {"name": "secret-0", "secret": {"secretName": "ptcuda-kernel-0a1b2c3d-x", "defaultMode": 0o440,
                                        "items": [{"key": "0-kernel.json", "path": "kernel.json", "mode": 0o440}]}},
        {"name": "files-0", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
    main = ps["containers"][0]
    assert main["volumeMounts"][-1] == {"name": "files-0", "mountPath": "/run/ptcuda"}
    assert ps["initContainers"] == [{
        "name": "files-0", "image": "img:1", "imagePullPolicy": "IfNotPresent",
        "command": ["cp", "-t", "/run/ptcuda", "/var/run/ptcuda-secret-0/kernel.json"],
        "resources": {"limits": {"cpu": "4000m", "memory": str(8 * 1024**3)}},  # no GPU for a copy
        "volumeMounts": [{"name": "secret-0", "mountPath": "/var/run/ptcuda-secret-0", "readOnly": True},
                         {"name": "files-0", "mountPath": "/run/ptcuda"}],
        "securityContext": main["securityContext"]}]
    assert ps["automountServiceAccountToken"] is False
    made = {**pod, "metadata": {**pod["metadata"], "uid": "4f1c"}}  # what the API server answered
    secret = validate(P.secret_manifest(spec, OPTS, name="ptcuda-kernel-0a1b2c3d-x", owner=made))
    assert secret == {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
        "metadata": {"name": "ptcuda-kernel-0a1b2c3d-x", "namespace": "hub", "labels": pod["metadata"]["labels"],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "ptcuda-kernel-0a1b2c3d-x",
                                          "uid": "4f1c"}]},
        "data": {"0-kernel.json": base64.b64encode(b"{key}").decode()}}
    # a pod without files has no fsGroup (a claim's files keep their group)
    plain = P.pod_manifest(P.build(job_request(kind=L.KERNEL, gpus=GpuRequest()), POLICY, ANN), OPTS, ANN, name="k")
    assert "fsGroup" not in plain["spec"]["securityContext"] and "initContainers" not in plain["spec"]


def test_a_kernel_pod_keeps_what_a_job_copies_from_it_and_never_its_key():
    from jupyter_ptcuda.containers.spec import SpecFile

    spec = P.build(job_request(kind=L.KERNEL, gpus=GpuRequest("count", 1), env={"HF_HOME": "/home/jovyan/hf"},
                               files=(SpecFile("/run/ptcuda/kernel.json", b'{"key": "s3cret"}'),)), POLICY, ANN)
    pod = validate(P.pod_manifest(spec, OPTS, ANN, name="k", gpu_resource="nvidia.com/mig-1g.18gb"))
    annotations = pod["metadata"]["annotations"]
    assert "s3cret" not in annotations[P.SPEC] and "kernel.json" not in annotations[P.SPEC]
    back, resource = P.spec_from_record(annotations)
    assert resource == "nvidia.com/mig-1g.18gb"
    assert back == dataclasses.replace(spec, files=(), command=(), ports={})  # labels: from the other annotations
    for kind in (L.JOB, L.HEALTH):  # only kernels are copied
        other = P.manifest(P.build(job_request(kind=kind), POLICY, ANN), OPTS, ANN, name="x")
        meta = other["spec"]["template"]["metadata"] if other["kind"] == "Job" else other["metadata"]
        assert P.SPEC not in meta["annotations"] and P.SPEC not in other["metadata"]["annotations"]
    assert P.spec_from_record({L.KIND: "kernel"}) is None  # an older pod: no record
    with pytest.raises(ConfigError, match="restart the kernel"):
        P.spec_from_record({P.SPEC: '{"spec": {"gpus": 7}}'})


def test_the_schema_check_is_real():
    m = P.build_pod(job_request(), POLICY, ANN, OPTS, name="j")
    m["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] = "ALL"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(m)


def test_names_and_selectors():
    spec = P.build(job_request(), POLICY, ANN)
    assert P.object_name(spec, "abc") == "ptcuda-job-0a1b2c3d-abc"
    selector, after = P.label_selector(L.selector(L.KERNEL, server_id=ANN.server_id, owner_uid=1000))
    assert selector == f"{P.MANAGED_BY}=jupyter-ptcuda,{L.KIND}=kernel,{L.OWNER_UID}=1000"
    assert after == {L.SERVER_ID: ANN.server_id}


def test_traitlets_gather_into_options():
    from traitlets.config import Config

    c = Config()
    c.KubeBackend.namespace = "hub"
    c.KubeBackend.gpu_resources = ["nvidia.com/mig-1g.18gb"]
    c.KubeBackend.volumes = {"/data/": {"persistentVolumeClaim": {"claimName": "d"}}}
    o = KubeBackend(config=c).options()
    assert o.namespace == "hub" and o.gpu_resources == ("nvidia.com/gpu", "nvidia.com/mig-1g.18gb")
    assert o.volumes == {"/data": {"persistentVolumeClaim": {"claimName": "d"}}}


def test_the_example_role_is_valid_least_privilege_and_grants_what_the_backend_uses():
    import pathlib

    import yaml

    docs = list(yaml.safe_load_all((pathlib.Path(__file__).parents[2] / "examples/k8s/role.yaml").read_text()))
    for d in docs:
        validate(d)
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]  # no ClusterRole
    rules = {(g, r): set(rule["verbs"]) for d in docs if d["kind"] == "Role" for rule in d["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert set(rules) == {("", "pods"), ("", "pods/log"), ("batch", "jobs"), ("", "events"), ("", "secrets")}
    assert rules[("", "secrets")] == {"create", "delete"}  # never read back, listed or watched
    assert "exec" not in str(rules) and not any("*" in v for v in rules.values())
    assert {"create", "delete", "list", "watch", "get"} <= rules[("", "pods")] and rules[("", "pods/log")] == {"get"}


def test_torchrun_is_one_pod_with_every_gpu_of_the_node_it_asks_for():
    """A job with nproc_per_node: one Job, one pod, ``torch.distributed.run --nproc-per-node N`` over the N
    GPUs it holds, /dev/shm from a memory emptyDir (NCCL and DataLoader workers need it)."""
    from jupyter_ptcuda.jobs.request import job_command

    cmd = tuple(job_command("python", "/home/jovyan/proj/train.py", ["--epochs", "3"], 4))
    m = validate(P.build_pod(job_request(command=cmd, gpus=parse_gpus(4)), POLICY, ANN, OPTS, name="j", timeout=60))
    tmpl = m["spec"]["template"]["spec"]
    c = tmpl["containers"][0]
    assert c["args"][:6] == ["python", "-u", "-m", "torch.distributed.run", "--nproc-per-node", "4"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4" and m["spec"]["activeDeadlineSeconds"] == 60
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert m["spec"]["backoffLimit"] == 0 and "completionMode" not in m["spec"]  # not an indexed Job


def test_the_example_kernelspec_and_values_are_what_the_code_reads():
    import json
    import pathlib

    import yaml

    from jupyter_ptcuda.kernelspec import KERNEL_ARGV, validate_config

    root = pathlib.Path(__file__).parents[2] / "examples/k8s"
    spec = json.loads((root / "kernel.json").read_text())
    assert spec["argv"] == KERNEL_ARGV and "curve" in spec["metadata"]["supported_encryption"]
    validate_config(spec["metadata"]["kernel_provisioner"]["config"])  # gpu_resource is a provisioner option
    values = yaml.safe_load((root / "z2jh-values.yaml").read_text())
    data = values["singleuser"]["extraFiles"]["ptcuda-config"]["data"]
    from traitlets.config import Config

    from jupyter_ptcuda.containers.factory import ContainerBackend

    assert ContainerBackend(config=Config(data)).backend == "kubernetes"
    assert KubeBackend(config=Config(data)).options().gpu_resources == ("nvidia.com/gpu", "nvidia.com/mig-1g.18gb")
    from jupyter_ptcuda.jobs.manager import JobOptions

    jobs = JobOptions(config=Config(data))  # jobs ask for GPUs by count, of an allowed resource
    assert (jobs.gpus, jobs.gpu_resource) == (1, "nvidia.com/gpu")


def test_the_example_network_policy_admits_the_server_to_the_kernel_ports_only():
    import pathlib

    import yaml

    from jupyter_ptcuda.containers.kube.kernels import PORTS

    policy = validate(yaml.safe_load((pathlib.Path(__file__).parents[2] / "examples/k8s/networkpolicy.yaml").read_text()))
    kernel = P.pod_manifest(P.build(job_request(kind=L.KERNEL, gpus=GpuRequest()), POLICY, ANN), OPTS, ANN, name="k")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= kernel["metadata"]["labels"].items()
    port, = policy["spec"]["ingress"][0]["ports"]
    assert (port["port"], port["endPort"]) == (min(PORTS.values()), max(PORTS.values()))
