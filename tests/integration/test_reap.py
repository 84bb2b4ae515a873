"""Reaping orphaned kernel containers from their labels; other containers are never touched."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jupyter_ptcuda.reaper import reap_orphans
from jupyter_ptcuda.spec import LABEL_KERNEL_ID, LABEL_KIND, LABEL_SERVER_ID, LABEL_SERVER_PID, ContainerSpec
from tests.conftest import DEBIAN_BASE

pytestmark = pytest.mark.integration


def _sleeper(engine, labels):
    spec = ContainerSpec(image=DEBIAN_BASE, command=("sleep", "600"), user="65534:65534", workdir="/tmp", labels=labels)
    return engine.run_sync(lambda api: engine._run_sync(api, spec))


async def test_reap_removes_orphans_only(engine, test_image):
    import socket

    dead_pid = "4194300"  # above pid_max's default: never alive
    orphan = _sleeper(engine, {LABEL_KIND: "kernel", LABEL_KERNEL_ID: "k-orphan",
                               LABEL_SERVER_ID: f"{socket.gethostname()}:{dead_pid}:0", LABEL_SERVER_PID: dead_pid})
    import os

    alive = _sleeper(engine, {LABEL_KIND: "kernel", LABEL_KERNEL_ID: "k-alive",
                              LABEL_SERVER_ID: f"{socket.gethostname()}:{os.getpid()}:0", LABEL_SERVER_PID: str(os.getpid())})
    foreign = subprocess.run(["docker", "run", "-d", "--label", "purpose=not-ours", DEBIAN_BASE, "sleep", "600"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        dry = await reap_orphans(engine, dry_run=True)
        assert [c["kernel_id"] for c in dry] == ["k-orphan"]
        assert await engine.inspect(orphan) is not None

        out = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "reap"], capture_output=True, text=True)
        assert out.returncode == 0 and "k-orphan" in out.stdout and "is gone" in out.stdout
        assert await engine.inspect(orphan) is None
        assert await engine.inspect(alive) is not None
        assert await engine.inspect(foreign) is not None

        # the server's own view: a kernel id it no longer manages is an orphan too
        own = f"{socket.gethostname()}:{os.getpid()}:0"
        gone = await reap_orphans(engine, own_server_id=own, known_kernels=set(), grace=0)
        assert [c["kernel_id"] for c in gone] == ["k-alive"]
    finally:
        for c in (orphan, alive, foreign):
            subprocess.run(["docker", "rm", "-f", c], capture_output=True)
