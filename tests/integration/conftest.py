from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.kernelspec import make_kernel_json

pytestmark = pytest.mark.integration


def hook_engine() -> bool:
    return os.environ.get("PTCUDA_ENGINE_HOOK", "1") == "1"


async def started(name: str, cwd) -> tuple[AsyncKernelManager, object]:
    """A kernel of kernelspec ``name`` started by jupyter_client in ``cwd``, and its ready client."""
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=90)
    return km, kc


@pytest.fixture
def notebook_dir(tmp_path):
    """A notebook directory owned by the user the kernel will run as."""
    d = tmp_path / "notebooks"
    d.mkdir()
    if os.geteuid() == 0:
        os.chown(d, 1000, 100)
    return d


@pytest.fixture
def kernelspec(tmp_path, monkeypatch, test_image):
    """make(config) -> kernel name, installed in a private JUPYTER_PATH."""
    root = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))

    def make(interrupt_mode: str = "signal", **config) -> str:
        name = "ptcuda-" + uuid.uuid4().hex[:8]
        config.setdefault("image", test_image)
        config.setdefault("gpus", "none")
        spec = make_kernel_json("PyTorch (test)", {**config, "interrupt_mode": interrupt_mode})
        d = root / "kernels" / name
        d.mkdir(parents=True)
        (d / "kernel.json").write_text(json.dumps(spec))
        assert name in KernelSpecManager().find_kernel_specs()
        return name

    return make


def dump_containers(request) -> None:
    """On failure: logs and inspect of our containers, for the next person debugging."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.jupyter-ptcuda.kind", "-q"],
                         capture_output=True, text=True).stdout.split()
    for cid in out:
        print(f"--- container {cid}")
        print(subprocess.run(["docker", "logs", "--tail", "50", cid], capture_output=True, text=True).stdout)
        print(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True).stdout[:4000])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        dump_containers(item)


@pytest.fixture(autouse=True)
def no_leftovers(request, engine):
    """Every integration test must leave no container of ours behind.

    Kernel containers started by another test process (labelled with its pid) are not ours to judge."""
    from tests.conftest import ours

    def mine() -> list[dict]:
        pid = str(os.getpid())
        return [c for c in ours(engine) if (c.get("Labels") or {}).get("io.jupyter-ptcuda.server-pid", pid) == pid]

    before = {c["Id"] for c in mine()}
    yield
    # a kernel's container is removed just after its shutdown returns (in a worker thread): give it a moment
    deadline = time.monotonic() + 15
    while (left := [c for c in mine() if c["Id"] not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for c in left:
        subprocess.run(["docker", "rm", "-f", c["Id"]], capture_output=True)
    assert not left, f"containers left behind: {[(c['Id'][:12], c['Labels']) for c in left]}"


__all__ = ["Path", "hook_engine", "started"]


@pytest.fixture
def notices_board(monkeypatch):
    """This process's notices (what GET jupyter-ptcuda/notices serves), as a server extension sets them."""
    from jupyter_ptcuda import notices as N

    board = N.Notices()
    monkeypatch.setattr(N, "_active", board)
    return board
