"""A real `jupyter ptcuda image build` seen through the server while it runs (``GET jupyter-ptcuda/builds``):
its step moves forward and ends ``built``; a kernel started on the image it is still making is told so (in
its kernel-start notice and its error) instead of "image not found"."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.errors import ImageNotFound
from jupyter_ptcuda.kernelspec import make_kernel_json
from tests.conftest import TEST_IMAGE

pytestmark = pytest.mark.integration


@pytest.fixture
def tag():
    tag = f"jupyter-ptcuda-test:build-{uuid.uuid4().hex[:8]}"
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag, f"{tag}-stage"], capture_output=True)


def install_kernelspec(root, image: str) -> str:
    name = "ptcuda-" + uuid.uuid4().hex[:8]
    d = root / "kernels" / name
    d.mkdir(parents=True)
    import json

    (d / "kernel.json").write_text(json.dumps(make_kernel_json("building", {"image": image, "gpus": "none"})))
    return name


async def test_a_build_shows_its_steps_and_a_kernel_on_its_image_says_it_is_being_built(
        api, tag, tmp_path, jp_env_jupyter_path, jp_root_dir):
    status, body, _ = await api("GET", "builds")
    assert status == 200 and body == {"builds": []}
    wheels = tmp_path / "wheels"  # the base has ipykernel already: nothing to download, the install is a no-op
    wheels.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_ptcuda.cli", "image", "build", "--base", TEST_IMAGE,
                             "--no-pull", "--no-sbom", "--wheelhouse", str(wheels), "--tag", tag],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    seen: list[tuple[int, str]] = []
    refused = None
    try:
        deadline = asyncio.get_running_loop().time() + 300
        while proc.poll() is None:
            assert asyncio.get_running_loop().time() < deadline, "the build did not end in 300 s"
            status, body, _ = await api("GET", "builds")
            assert status == 200
            running = [b for b in body["builds"] if b["tag"] == tag and b["state"] == "running"]
            if running and running[0]["step"]:
                b = running[0]
                assert b["steps"] == 5 and b["message"] == f"building {tag}: step {b['step']}/5 {b['step_name']}"
                assert b["last_line"]
                seen.append((b["step"], b["step_name"]))
                if refused is None:  # while the build runs: a kernel on its image is told why it cannot start
                    km = AsyncKernelManager(kernel_name=install_kernelspec(jp_env_jupyter_path, tag))
                    with pytest.raises(ImageNotFound) as refused:
                        await km.start_kernel(cwd=str(jp_root_dir))
            await asyncio.sleep(0.1)
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = [s for s, _ in seen]
    assert steps == sorted(steps) and len(set(steps)) >= 2, seen  # it moved forward, step by step
    assert refused is not None and "is being built right now by `jupyter ptcuda image build` (step " in str(refused.value)
    _, body, _ = await api("GET", "notices")
    told = [n for n in body["notices"] if n["kind"] == "kernel_image"]
    assert told and told[-1]["state"] == "failed" and f"its image {tag} is being built right now" in told[-1]["message"]
    status, body, _ = await api("GET", "builds")
    done = [b for b in body["builds"] if b["tag"] == tag]
    assert [(b["state"], b["message"]) for b in done] == [("built", f"built {tag}")]


async def test_an_interrupted_build_is_not_running(api, tmp_path, monkeypatch):
    """A build whose process is gone reads as interrupted (a crash leaves its file saying running)."""
    from jupyter_ptcuda.builds import BuildStatus

    status = BuildStatus("img:dead", steps=("probe", "install"))
    status.line("[probe] reading versions from base")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    status.data["pid"] = child.pid
    status._write()
    _, body, _ = await api("GET", "builds")
    assert [(b["tag"], b["state"]) for b in body["builds"]] == [("img:dead", "interrupted")]
    assert "stopped without finishing" in body["builds"][0]["message"]
