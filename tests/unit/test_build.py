"""The pure builder: (request, policy, identity) -> Docker create arguments, by dict equality, and every
refusal with the sentence a user reads."""

from __future__ import annotations

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy, Request, build
from jupyter_ptcuda.containers.gpus import ALL, GpuRequest
from jupyter_ptcuda.containers.identity import Identity
from jupyter_ptcuda.containers.spec import Mount, build_create_kwargs
from jupyter_ptcuda.errors import ConfigError, Forbidden

ANN = Identity(uid=1000, gid=100, name="ann", server_id="gpu1:4242:1700000000", server_pid=4242)
ROOT = Identity(uid=0, gid=0, name="root", server_id="gpu1:1:1700000000", server_pid=1)
IMAGE = "jupyter-ptcuda/pytorch-kernel:latest"
POLICY = Policy(images=(IMAGE,))
HARDENING = {"CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "Privileged": False, "Init": True}
ULIMITS = [{"Name": "memlock", "Soft": -1, "Hard": -1}, {"Name": "stack", "Soft": 67108864, "Hard": 67108864}]


def kwargs_of(request: Request, policy: Policy = POLICY, identity: Identity = ANN) -> dict:
    return build_create_kwargs(build(request, policy, identity))


def kernel(**changes) -> Request:
    base = dict(kind=L.KERNEL, image=IMAGE, command=("python", "-m", "ipykernel_launcher", "-f", "/run/ptcuda/kernel.json"),
                run_as="1000:100", workdir="/home/ann/nb", gpus=GpuRequest("ids", ids=("1",)), env={"LANG": "C.UTF-8"},
                id="k1", notebook="nb/train.ipynb", private_dir="/run/user/1000/jupyter-ptcuda/k1")
    return Request(**{**base, **changes})


def test_a_kernel():
    assert kwargs_of(kernel()) == {
        "image": IMAGE,
        "command": ["python", "-m", "ipykernel_launcher", "-f", "/run/ptcuda/kernel.json"],
        "name": None, "user": "1000:100", "working_dir": "/home/ann/nb",
        "environment": {"LANG": "C.UTF-8", "HOME": "/tmp/ptcuda-home"},
        "labels": {L.KIND: "kernel", L.KERNEL_ID: "k1", L.SERVER_ID: "gpu1:4242:1700000000", L.SERVER_PID: "4242",
                   L.OWNER_UID: "1000", L.OWNER: "ann", L.GPUS: "1", L.NOTEBOOK: "nb/train.ipynb",
                   L.KERNEL_DIR: "/run/user/1000/jupyter-ptcuda/k1"},
        "ports": [],
        "host_config": {
            **HARDENING,
            "Binds": ["/home/ann/nb:/home/ann/nb:rw",
                      "/run/user/1000/jupyter-ptcuda/k1:/run/user/1000/jupyter-ptcuda/k1:rw"],
            "NetworkMode": "bridge", "PortBindings": {},
            "Tmpfs": {"/tmp/ptcuda-home": "rw,exec,nosuid,size=1g,uid=1000,gid=100,mode=0700"},
            "Ulimits": ULIMITS,
            "DeviceRequests": [{"Driver": "", "Capabilities": [["gpu"]], "Options": {}, "Count": 0, "DeviceIDs": ["1"]}],
            "ShmSize": 2 * 1024**3, "PidsLimit": 4096,
        },
        "detach": True, "stdin_open": False, "tty": False,
    }


def test_a_health_check_mounts_nothing_and_a_job_no_kernel_parts():
    check = kwargs_of(Request(kind=L.HEALTH, image=IMAGE, command=("python", "-I", "-c", "..."), run_as="1000:100",
                              workdir="/tmp", mount_workdir=False, gpus=ALL, id="c1"))
    assert check["host_config"]["Binds"] == [] and check["working_dir"] == "/tmp"
    assert check["labels"][L.KIND] == "health" and check["labels"][L.CHECK_ID] == "c1" and check["labels"][L.GPUS] == "all"
    job = kwargs_of(Request(kind=L.JOB, image=IMAGE, command=("python", "-u", "train.py"), run_as="1000:100",
                            workdir="/home/ann/nb", mounts=(Mount("/home/ann", "/home/ann"),), id="j1", mem_limit=2**30))
    # the notebook folder is inside a read-write mount at the same path: not mounted twice
    assert job["host_config"]["Binds"] == ["/home/ann:/home/ann:rw"]
    assert job["host_config"]["Memory"] == job["host_config"]["MemorySwap"] == 2**30
    assert L.KERNEL_DIR not in job["labels"] and job["labels"][L.JOB_ID] == "j1"


@pytest.mark.parametrize("kind", [L.PROBE, L.NETNS])
def test_probes_and_holders_run_as_nobody_whoever_asks(kind):
    spec = build(Request(kind=kind, image=IMAGE, command=("sleep", "1"), run_as="0:0", workdir="/", mount_workdir=False),
                 POLICY, ROOT)
    assert spec.user == "65534:65534" and spec.mounts == ()


def test_a_root_server_may_run_a_container_as_the_folder_owner():
    assert build(kernel(run_as="1234:1234"), POLICY, ROOT).user == "1234:1234"
    assert build(kernel(run_as="0:0"), Policy(images=(IMAGE,), allow_root=True), ROOT).user == "0:0"


@pytest.mark.parametrize("request_, policy, error, message", [
    (kernel(mounts=(Mount("/var/run/docker.sock", "/var/run/docker.sock"),)), POLICY, Forbidden,
     r"'/var/run/docker.sock' is never mounted.*Docker socket"),
    (kernel(mounts=(Mount("/run", "/host-run"),)), POLICY, Forbidden, r"'/run' is never mounted"),
    (kernel(mounts=(Mount("/home/ann/../../var/run/docker.sock", "/s"),)), POLICY, Forbidden, r"never mounted"),
    (kernel(mounts=(Mount("/", "/host"),)), POLICY, Forbidden, r"'/' is never mounted"),
    (kernel(workdir="/etc"), POLICY, Forbidden, r"notebook folder '/etc' is never mounted"),
    (kernel(mounts=(Mount("/srv/data", "/data", True),)), Policy(images=(IMAGE,), mount_roots=("/home/ann",)),
     Forbidden, r"mount '/srv/data' is outside the folders that may be mounted \(/home/ann\).*mount_roots"),
    (kernel(workdir="/home/ann/../bob/nb"), Policy(images=(IMAGE,), mount_roots=("/home/ann",)), Forbidden,
     r"notebook folder '/home/ann/../bob/nb' is outside"),
    (kernel(workdir="/home/annette"), Policy(images=(IMAGE,), mount_roots=("/home/ann",)), Forbidden, r"outside"),
    (kernel(run_as="0:0"), POLICY, Forbidden, r"would run as root.*allow_root"),
    (kernel(run_as="1001:100"), POLICY, Forbidden, r"uid 1001 is not yours \(ann is uid 1000\)"),
    (kernel(run_as="ann"), POLICY, ConfigError, r"numeric uid:gid"),
    (kernel(image="evil/miner:latest"), POLICY, Forbidden, r"image 'evil/miner:latest' is not allowed.*allowed_images"),
    (kernel(image=""), POLICY, ConfigError, r"no image"),
    (kernel(gpus=GpuRequest("count", count=4)), Policy(images=(IMAGE,), max_gpus=GpuRequest("count", count=2)),
     Forbidden, r"asks for 4 GPU\(s\), beyond the operator's limit c.ContainerPolicy.max_gpus"),
    (kernel(mem_limit=None), Policy(images=(IMAGE,), max_mem=2**30), Forbidden, r"asks for no limit.*at most 1g"),
    (kernel(mem_limit=2**31), Policy(images=(IMAGE,), max_mem=2**30), Forbidden, r"above the operator's limit"),
    (kernel(cpus=8.0), Policy(images=(IMAGE,), max_cpus=4.0), Forbidden, r"cpus 8.0 is above.*max_cpus = 4.0"),
    (kernel(kind="daemon"), POLICY, ConfigError, r"unknown container kind 'daemon'"),
])
def test_refusals(request_, policy, error, message):
    with pytest.raises(error, match=message):
        build(request_, policy, ANN)


def test_allowed_by_pattern_or_as_a_built_image():
    mine = kernel(image="team/torch:2.9")
    assert build(mine, Policy(images=(IMAGE,), image_patterns=("team/*",)), ANN).image == "team/torch:2.9"
    built = {L.IMAGE_BASE: "debian", L.IMAGE_TORCH: "", L.IMAGE_CUDA: "", L.IMAGE_PYTHON: "3.11", L.IMAGE_IPYKERNEL: "7"}
    assert build(kernel(image="local:1", image_labels=built), POLICY, ANN).image == "local:1"
    with pytest.raises(Forbidden, match="allow_built_images is False"):
        build(kernel(image="local:1", image_labels=built), Policy(images=(IMAGE,), allow_built_images=False), ANN)


def test_home_cannot_be_chosen_and_hardening_is_always_on():
    spec = build(kernel(env={"HOME": "/root", "LANG": "C"}), POLICY, ANN)
    kwargs = build_create_kwargs(spec)
    assert kwargs["environment"] == {"LANG": "C", "HOME": "/tmp/ptcuda-home"}
    assert {k: kwargs["host_config"][k] for k in HARDENING} == HARDENING


@pytest.mark.parametrize("request_", [GpuRequest(), ALL, GpuRequest("count", count=3), GpuRequest("ids", ids=("0",)),
                                      GpuRequest("ids", ids=("1", "GPU-5a3f0e2b-aaaa"))])
def test_gpu_labels_read_back_as_written(request_):
    from jupyter_ptcuda.containers.gpus import from_label

    assert from_label(request_.label()) == request_


def test_gpu_devices_a_user_sees():
    from jupyter_ptcuda.containers.gpus import devices

    seen = [{"index": 0, "uuid": "GPU-aaaa"}, {"index": 1, "uuid": "GPU-bbbb"}]
    assert devices("all", seen) == ["0", "1"]  # a gpus: "all" kernel has every GPU (the status bar shows them)
    assert devices("all", seen, all_devices=False) == []  # ...and claims none in the ledger
    assert devices("0", seen) == ["0"] and devices("GPU-bbbb", seen) == ["1"]
    assert devices("none", seen) == devices("count:2", seen) == devices("garbage!", seen) == []
