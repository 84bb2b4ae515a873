"""Reaping orphaned containers (kernels, health checks, probes, namespace holders) from their labels; jobs and
other containers are never touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.containers.reaper import reap_orphans
from jupyter_ptcuda.containers.spec import ContainerSpec
from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


def _sleeper(engine, labels):
    spec = ContainerSpec(image=DEBIAN_BASE, command=("sleep", "600"), user="65534:65534", workdir="/tmp", labels=labels)
    return engine.run_sync(lambda api: engine._run_sync(api, spec))


async def test_reap_removes_orphans_only(engine, test_image):
    import socket

    dead_pid = "4194300"  # above pid_max's default: never alive
    orphan = _sleeper(engine, {L.KIND: "kernel", L.KERNEL_ID: "k-orphan",
                               L.SERVER_ID: f"{socket.gethostname()}:{dead_pid}:0", L.SERVER_PID: dead_pid})
    import os

    alive = _sleeper(engine, {L.KIND: "kernel", L.KERNEL_ID: "k-alive",
                              L.SERVER_ID: f"{socket.gethostname()}:{os.getpid()}:0", L.SERVER_PID: str(os.getpid())})
    foreign = subprocess.run(["docker", "run", "-d", "--label", "purpose=not-ours", DEBIAN_BASE, "sleep", "600"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dead = {L.SERVER_ID: f"{socket.gethostname()}:{dead_pid}:0", L.SERVER_PID: dead_pid}
    # a dead server's hung health check, image probe and namespace holder; its job runs on, on purpose
    check = _sleeper(engine, {L.KIND: "health", L.CHECK_ID: "c-hung", **dead})
    probe = _sleeper(engine, {L.KIND: "probe", **dead})
    holder = _sleeper(engine, {L.KIND: "netns", **dead})
    job = _sleeper(engine, {L.KIND: "job", L.JOB_ID: "j-of-dead-server", **dead})
    try:
        dry = await reap_orphans(DockerContainerService(engine), dry_run=True)
        assert sorted((c["kind"], c["kernel_id"] or "") for c in dry) == [
            ("health", ""), ("kernel", "k-orphan"), ("netns", ""), ("probe", "")]
        assert await engine.inspect(orphan) is not None

        out = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "reap"], capture_output=True, text=True)
        assert out.returncode == 0 and "k-orphan" in out.stdout and "is gone" in out.stdout
        assert "health" in out.stdout and "probe" in out.stdout and "netns" in out.stdout
        for gone in (orphan, check, probe, holder):
            assert await engine.inspect(gone) is None
        assert await engine.inspect(alive) is not None
        assert await engine.inspect(job) is not None
        assert await engine.inspect(foreign) is not None

        # the server's own view: a kernel id it no longer manages is an orphan too
        own = f"{socket.gethostname()}:{os.getpid()}:0"
        gone = await reap_orphans(DockerContainerService(engine), own_server_id=own, known_kernels=set(), grace=0)
        assert [c["kernel_id"] for c in gone] == ["k-alive"]
    finally:
        for c in (orphan, alive, foreign, check, probe, holder, job):
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
