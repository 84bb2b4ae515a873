"""--from-kernel: spec_from_container is the inverse of the spec builder; what a job keeps of a kernel;
the job's command line (parameters → flags, `run` argument splitting)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers import spec as S
from jupyter_ptcuda.containers.build import Policy, build, job_from_kernel
from jupyter_ptcuda.containers.identity import Identity
from jupyter_ptcuda.containers.options import ContainerOptions
from jupyter_ptcuda.containers.spec import spec_from_container
from jupyter_ptcuda.errors import ConfigError
from jupyter_ptcuda.jobs.cli import register, split_run_argv
from jupyter_ptcuda.jobs.request import JobRequest, job_command, params_to_flags, parse_param

ANN = Identity(uid=1000, gid=100, name="ann", server_id="host:42:1", server_pid=42)


def inspect_like(kwargs: dict, name: str | None = None, image_config: dict | None = None) -> dict:
    """What ``docker inspect`` reports for a container created with these arguments (the fields we read).

    Docker merges the image's environment and labels into the container's; ``image_config`` does so."""
    image_config = image_config or {}
    env = dict(e.partition("=")[::2] for e in image_config.get("Env", []))
    env.update(kwargs["environment"])
    return {
        "Id": "f" * 64,
        "Name": f"/{name or 'quirky_turing'}",
        "Image": "sha256:" + "1" * 64,
        "Config": {"Image": kwargs["image"], "Cmd": kwargs["command"], "User": kwargs["user"],
                   "WorkingDir": kwargs["working_dir"], "Env": [f"{k}={v}" for k, v in env.items()],
                   "Labels": {**image_config.get("Labels", {}), **kwargs["labels"]},
                   "ExposedPorts": {f"{p}/tcp": {} for p in kwargs["ports"]}},
        "HostConfig": kwargs["host_config"],
        "State": {"Running": True},
    }


def kernel_spec(**overrides) -> S.ContainerSpec:
    """A kernel's spec, built by the real builder the provisioner uses."""
    opts = ContainerOptions(gpus=["1"], mounts=["/data:/data:ro", "/scratch"], mem_limit="8g", cpus=2,
                            shm_size="4g")
    spec = opts.base_spec(kind=L.KERNEL, id="k1", identity=ANN, user="1000:100",
                          command=["python", "-m", "ipykernel_launcher", "-f", "/run/ptcuda/kernel.json"],
                          workdir="/home/ann/project", env={"LANG": "C.UTF-8", "JUPYTER_PTCUDA_KERNEL_ID": "k1"},
                          ports={50001: 50001, 50002: 50002}, private_dir="/run/jupyter-ptcuda/k1")
    return dataclasses.replace(spec, name="ptcuda-kernel-k1", **overrides)


@pytest.mark.parametrize("overrides", [
    {},
    {"gpus": S.GpuRequest("all")},
    {"gpus": S.GpuRequest("count", count=2)},
    {"gpus": S.GpuRequest("ids", ids=("0", "GPU-5a3f0e2b-aaaa"))},
    {"gpus": S.GpuRequest()},
    {"shm_size": None, "mem_limit": None, "cpus": None, "pids_limit": None, "ulimits": {}, "init": False},
    {"network_mode": "host", "ports": {}, "user": "0:0", "home": "/root-home"},
])
def test_spec_from_container_inverts_the_builder(overrides):
    spec = kernel_spec(**overrides)
    inspect = inspect_like(S.build_create_kwargs(spec), name=spec.name)
    assert spec_from_container(inspect) == spec


def test_image_env_and_labels_are_not_taken_as_requested():
    spec = kernel_spec()
    image = {"Env": ["PATH=/usr/bin", "LANG=C.UTF-8"], "Labels": {"io.jupyter-ptcuda.image.torch": "2.13.0"}}
    inspect = inspect_like(S.build_create_kwargs(spec), name=spec.name, image_config=image)
    assert "PATH" in spec_from_container(inspect).env  # without the image's config: kept (harmless)
    back = spec_from_container(inspect, image_config=image)
    # LANG was asked for *and* equals the image's: dropping it changes nothing in the container
    assert back == dataclasses.replace(spec, env={"JUPYTER_PTCUDA_KERNEL_ID": "k1"})


def job_of(kernel: S.ContainerSpec, **kwargs) -> S.ContainerSpec:
    return build(job_from_kernel(kernel, **kwargs), Policy(images=(kernel.image,)), ANN)


def test_job_keeps_the_kernel_environment_not_its_kernel_parts():
    kernel = kernel_spec(files=(S.SpecFile("/run/ptcuda/kernel.json", b'{"key": "secret"}'),))
    job = job_of(kernel, command=["python", "-u", "train.py"], workdir="/home/ann/project",
                 env={"JUPYTER_PTCUDA_JOB_ID": "j1"}, id="j1")
    assert (job.image, job.user, job.gpus, job.mem_limit, job.cpus, job.shm_size) == (
        kernel.image, kernel.user, kernel.gpus, kernel.mem_limit, kernel.cpus, kernel.shm_size)
    assert "/run/jupyter-ptcuda/k1" in [m.source for m in kernel.mounts]  # the kernel's private folder...
    assert job.mounts == tuple(m for m in kernel.mounts if m.source != "/run/jupyter-ptcuda/k1")  # ...not the job's
    assert job.ports == {} and job.name is None and job.files == ()
    assert job.env == {"LANG": "C.UTF-8", "JUPYTER_PTCUDA_JOB_ID": "j1"}
    assert job.labels == {L.KIND: "job", L.JOB_ID: "j1", L.GPUS: "1", L.OWNER_UID: "1000", L.OWNER: "ann",
                          L.SERVER_ID: "host:42:1", L.SERVER_PID: "42"}
    kwargs = S.build_create_kwargs(job)
    assert kwargs["host_config"]["DeviceRequests"][0]["DeviceIDs"] == ["1"]
    assert kwargs["working_dir"] == "/home/ann/project" and kwargs["command"] == ["python", "-u", "train.py"]


@pytest.mark.parametrize("network", ["shared", "container:" + "a" * 64])
def test_job_of_a_shared_namespace_kernel_gets_a_namespace_of_its_own(network):
    job = job_of(kernel_spec(network_mode=network), command=["python", "x.py"], workdir="/home/ann/project",
                 env={}, id="j1")
    assert job.network_mode == "bridge"


def test_job_in_another_folder_gets_it_mounted_and_overrides_win():
    kernel = kernel_spec()
    job = job_of(kernel, command=["python", "x.py"], workdir="/srv/other", env={}, id="j2",
                 gpus=S.GpuRequest(), mem_limit=1024 * 1024 * 64)
    assert S.Mount("/srv/other", "/srv/other", False) in job.mounts
    assert job.gpus == S.GpuRequest() and job.mem_limit == 1024 * 1024 * 64 and job.labels[L.GPUS] == "none"
    inside = job_of(kernel, command=["python", "x.py"], workdir="/home/ann/project/sub", env={}, id="j3")
    assert len(inside.mounts) == len(kernel.mounts) - 1  # already inside the kernel's folder mount


def test_params_become_the_exported_scripts_flags():
    kinds = {"lr": {"type": "float"}, "amp": {"type": "bool"}, "layers": {"type": "json"},
             "run_name": {"type": "str"}, "seed": {"type": "json"}}
    flags = params_to_flags({"lr": 0.5, "amp": False, "layers": [64, 32], "run_name": "b 1", "seed": None}, kinds)
    assert flags == ["--lr", "0.5", "--no-amp", "--layers", "[64, 32]", "--run-name", "b 1", "--seed", "null"]
    assert params_to_flags({"amp": True}) == ["--amp"]
    with pytest.raises(ConfigError, match="unknown parameter.*lr"):
        params_to_flags({"epochs": 3}, {"lr": {"type": "float"}})


def test_parse_param():
    assert parse_param("lr=0.5") == ("lr", 0.5)
    assert parse_param("layers=[1, 2]") == ("layers", [1, 2])
    assert parse_param("name=baseline") == ("name", "baseline")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_param("lr")


def test_job_command():
    assert job_command("python", "/nb/train.py", ["--lr", "0.5"], None) == ["python", "-u", "/nb/train.py", "--lr", "0.5"]
    assert job_command("python", "t.py", [], 4) == ["python", "-u", "-m", "torch.distributed.run",
                                                     "--nproc-per-node", "4", "t.py"]


@pytest.mark.parametrize("field, value, words", [
    ("nproc_per_node", 0, "positive"), ("timeout", -1, "positive"), ("params", {"1x": 2}, "identifier"),
    ("args", ["--lr", 0.5], "list of strings"), ("image", "img", "not both"),
])
def test_request_validation(field, value, words):
    kwargs = {"path": "/nb/train.py", field: value}
    if field == "image":
        kwargs["kernel_id"] = "k1"
    with pytest.raises(ConfigError, match=words):
        JobRequest(**kwargs)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


@pytest.mark.parametrize("argv, script, script_args, wait, params", [
    (["run", "train.py", "--wait", "--", "--lr", "0.5"], "train.py", ["--lr", "0.5"], True, []),
    (["run", "--wait", "train.py", "--", "--wait"], "train.py", ["--wait"], True, []),
    (["run", "-p", "a=1", "train.ipynb", "--param", "b=2"], "train.ipynb", [], False, ["a=1", "b=2"]),
    (["run", "--", "train.py", "--lr", "1"], "train.py", ["--lr", "1"], False, []),
])
def test_run_options_after_the_script_and_passthrough(argv, script, script_args, wait, params):
    args = _parse(argv)
    assert split_run_argv(args) == (script, script_args)
    assert args.wait is wait and args.param == params


def test_run_unknown_option_says_to_use_double_dash():
    args = _parse(["run", "train.py", "--lr", "0.5"])
    with pytest.raises(ConfigError, match=r"after --"):
        split_run_argv(args)
    with pytest.raises(ConfigError, match="give the notebook"):
        split_run_argv(_parse(["run", "--wait"]))
