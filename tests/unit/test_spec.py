"""The pure spec builder and option parsers: what reaches Docker, by dict equality."""

from __future__ import annotations

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers import spec as S
from jupyter_ptcuda.errors import ConfigError


@pytest.mark.parametrize("value, expected", [
    ("all", S.GpuRequest("all")),
    (True, S.GpuRequest("all")),
    ("none", S.GpuRequest()),
    (None, S.GpuRequest()),
    (0, S.GpuRequest()),
    (2, S.GpuRequest("count", count=2)),
    ("2", S.GpuRequest("count", count=2)),
    (["1"], S.GpuRequest("ids", ids=("1",))),
    ("0,1", S.GpuRequest("ids", ids=("0", "1"))),
    ("device=3", S.GpuRequest("ids", ids=("3",))),
    (["GPU-5a3f0e2b-aaaa-bbbb"], S.GpuRequest("ids", ids=("GPU-5a3f0e2b-aaaa-bbbb",))),
])
def test_parse_gpus(value, expected):
    assert S.parse_gpus(value) == expected


@pytest.mark.parametrize("value, words", [
    (-1, "cannot be negative"), ("banana", "not a GPU index"), (["0", "0"], "listed twice"), (1.5, "not understood"),
])
def test_parse_gpus_errors(value, words):
    with pytest.raises(ConfigError, match=words):
        S.parse_gpus(value)


@pytest.mark.parametrize("value, expected", [
    ("2g", 2 * 1024**3), ("512m", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3)), (1024, 1024), (None, None), ("", None),
])
def test_parse_size(value, expected):
    assert S.parse_size(value, "mem_limit") == expected


@pytest.mark.parametrize("value", ["-1g", -5, "lots", True])
def test_parse_size_errors(value):
    with pytest.raises(ConfigError, match="mem_limit"):
        S.parse_size(value, "mem_limit")


def test_mounts_and_socket_refused():
    assert S.parse_mounts(["/data:/mnt/data:ro", "/scratch"]) == (
        S.Mount("/data", "/mnt/data", True), S.Mount("/scratch", "/scratch", False))
    with pytest.raises(ConfigError, match="Docker socket"):
        S.parse_mounts(["/var/run/docker.sock:/var/run/docker.sock"])
    with pytest.raises(ConfigError, match="absolute"):
        S.parse_mounts(["data:/data"])


def test_env_allowlist():
    env = {"LANG": "C.UTF-8", "LC_ALL": "C", "JUPYTER_TOKEN": "secret", "PATH": "/host/bin", "WANDB_KEY": "k"}
    assert S.filter_env(env, S.DEFAULT_ENV_ALLOWLIST) == {"LANG": "C.UTF-8", "LC_ALL": "C"}
    assert S.filter_env(env, ["WANDB_*"]) == {"WANDB_KEY": "k"}


def test_build_create_kwargs_is_hardened():
    spec = S.ContainerSpec(
        image="img:1", command=("python", "-m", "ipykernel_launcher"), user="1000:100", workdir="/home/u/nb",
        env={"LANG": "C"}, labels={L.KIND: "kernel"}, mounts=(S.Mount("/home/u/nb", "/home/u/nb"),),
        gpus=S.GpuRequest("ids", ids=("1",)), ports={5000: 5000}, mem_limit=1024**3, cpus=2.0,
    )
    kw = S.build_create_kwargs(spec)
    assert kw["host_config"] == {
        "Binds": ["/home/u/nb:/home/u/nb:rw"],
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "Init": True,
        "NetworkMode": "bridge",
        "PortBindings": {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5000"}]},
        "Tmpfs": {"/tmp/ptcuda-home": "rw,exec,nosuid,size=1g,uid=1000,gid=100,mode=0700"},
        "Ulimits": [{"Name": "memlock", "Soft": -1, "Hard": -1}, {"Name": "stack", "Soft": 67108864, "Hard": 67108864}],
        "DeviceRequests": [{"Driver": "", "Capabilities": [["gpu"]], "Options": {}, "Count": 0, "DeviceIDs": ["1"]}],
        "Privileged": False,
        "ShmSize": 2 * 1024**3,
        "Memory": 1024**3,
        "MemorySwap": 1024**3,
        "NanoCpus": 2 * 10**9,
        "PidsLimit": 4096,
    }
    assert kw["user"] == "1000:100" and kw["working_dir"] == "/home/u/nb"
    assert kw["environment"] == {"LANG": "C", "HOME": "/tmp/ptcuda-home"}
    assert kw["ports"] == [5000]


def test_device_requests_match_docker_cli():
    assert S.device_requests(S.GpuRequest("all")) == [
        {"Driver": "", "Capabilities": [["gpu"]], "Options": {}, "Count": -1, "DeviceIDs": None}]
    assert S.device_requests(S.GpuRequest("count", count=2))[0]["Count"] == 2
    assert S.device_requests(S.GpuRequest()) == []


def test_with_gpus_updates_label():
    spec = S.ContainerSpec(image="i", command=("x",), user="1:1", workdir="/w", gpus=S.GpuRequest("count", count=2))
    assert spec.with_gpus(S.GpuRequest("ids", ids=("0", "3"))).labels[L.GPUS] == "0,3"
