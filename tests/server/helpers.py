"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator

import pytest


async def wait_for(api, path, pred, timeout=60):
    """GET ``path`` until ``pred(status, body)``; the body then, or AssertionError after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body, _ = await api("GET", path)
        if pred(status, body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path}: still {status} {body}")
        await asyncio.sleep(0.2)


def _job_containers(root) -> list[str]:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=job"], capture_output=True,
                         text=True).stdout.split()
    return [i for i in ids if str(root) in subprocess.run(
        ["docker", "inspect", "-f", '{{index .Config.Labels "io.jupyter-ptcuda.notebook"}}', i],
        capture_output=True, text=True).stdout]


@contextlib.contextmanager
def job_environment(tmp_path, monkeypatch, root, image: str) -> Iterator[None]:
    """For a server job test: a private job store, ``image`` as the jobs' default, ``nb/`` owned by the job
    user; afterwards no job container of this server root may be left (removed, then the test fails)."""
    from tests.conftest import _engine_answers

    if not _engine_answers():
        pytest.fail("no Docker engine answers: run scripts/ensure-engine") if os.environ.get("CI") else \
            pytest.skip("no Docker engine")
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    monkeypatch.setenv("JUPYTER_PTCUDA_IMAGE", image)
    (root / "nb").mkdir()
    if os.geteuid() == 0:
        os.chown(root / "nb", 1000, 100)
    yield
    # A job's container is removed when the job is finalised, which may still be in progress as the
    # server stops (a cancel's grace, a removal under load): left behind means still there 30 s later.
    deadline = time.monotonic() + 30
    while True:
        left = _job_containers(root)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for cid in left:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    assert not left, f"job containers left behind: {left}"
