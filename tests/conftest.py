"""Shared fixtures. Integration tests need a real Docker engine: in CI (CI set) a missing engine is a
failure, never a skip."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from jupyter_ptcuda.jobs.manager import JobManager
    from jupyter_ptcuda.jobs.store import Job

# Jobs are MLflow runs only where a test asks (tests/integration/test_tracking.py: mlflow_tracking=True);
# elsewhere a job would import MLflow and write the default store in the user's data dir.
os.environ.setdefault("JUPYTER_PTCUDA_MLFLOW", "0")

# pytest-jupyter runs every coroutine test on its io_loop (jp_fetch needs that loop).
pytest_plugins = ["pytest_jupyter.jupyter_server"]

TEST_IMAGE = os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu")
DEBIAN_BASE = "jupyter-ptcuda/debian-base:bookworm"


def _engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def engine():
    """The real engine; fails in CI when it does not answer (skips only outside CI)."""
    from jupyter_ptcuda.containers.engine import get_engine

    if not _engine_answers():
        msg = "no Docker engine answers: run scripts/ensure-engine (scripts/test does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return get_engine()


@pytest.fixture(scope="session")
def test_image(engine):
    """The CPU kernel image with torch + ipykernel (built by scripts/test; built here if missing)."""
    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode != 0:
        from jupyter_ptcuda.images import build_image

        build_image(engine, base="debian", torch="torch==2.13.0", tag=TEST_IMAGE, progress=lambda s: None)
    return TEST_IMAGE


def ours(engine, **labels) -> list[dict]:
    from jupyter_ptcuda.containers import labels as L

    filters = [L.PREFIX + "kind"] + [f"{L.PREFIX}{k.replace('_', '-')}={v}" for k, v in labels.items()]
    return engine.run_sync(lambda api: api.containers(all=True, filters={"label": filters}))


async def finished(mgr: JobManager, job_id: str, within: float = 90) -> Job:
    """Job ``job_id`` once it has ended (completed, failed, cancelled, timed out), as ``mgr`` reports it;
    AssertionError naming its state and reason when it is still going after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        job = await mgr.get(job_id)
        if job.terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} ({job.reason})"
        await asyncio.sleep(0.1)


@pytest.fixture(autouse=True)
def _no_kubernetes_backend_outlives_its_test():
    """A Kubernetes test installs its fake cluster's backend as the process's (``factory.set_service``) and
    puts the old one back when it ends; a test stopped by pytest-timeout never gets there (its coroutine is
    not resumed), and every later server test would then run on a cluster that is gone. Put it back here."""
    from jupyter_ptcuda.containers import factory
    from jupyter_ptcuda.containers.kube.backend import KubeContainerService

    before = factory._service
    yield
    if factory._service is not before and isinstance(factory._service, KubeContainerService):
        factory.set_service(before)
