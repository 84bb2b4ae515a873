"""POST jupyter-ptcuda/terminals: a terminal in a kernel's container, over the server's own authenticated
terminal websocket (real server, real kernel container, the stand-in NVIDIA hook for its GPU)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json
from tests.integration.conftest import hook_engine

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")]
KERNEL_UID = "1000" if os.geteuid() == 0 else str(os.getuid())


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["ServerApp"]["jpserver_extensions"]["jupyter_server_terminals"] = True
    return jp_server_config


@pytest.fixture
def gpu_kernelspec(jp_data_dir, jp_root_dir, test_image):
    if os.geteuid() == 0:
        os.chown(jp_root_dir, 1000, 100)
    d = jp_data_dir / "kernels" / "ptcuda-term"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (1 GPU)", {"image": test_image, "gpus": 1})))
    return "ptcuda-term"


def top(cid: str) -> str:
    return subprocess.run(["docker", "top", cid, "-eo", "pid,args"], capture_output=True, text=True).stdout


async def read_until(ws, needle: str, timeout: float = 30) -> str:
    out, deadline = "", time.monotonic() + timeout
    while needle not in out:
        msg = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if msg is None:
            break
        kind, *rest = json.loads(msg)
        if kind == "stdout":
            out += rest[0]
    return out


async def wait_until(cond, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    return cond()


async def test_refused_ids_and_bad_bodies(api):
    assert (await api("POST", "terminals", {"kernel_id": "no-such-kernel"}))[0] == 404
    assert (await api("POST", "terminals", {"job_id": "no-such-job"}))[0] == 404
    status, err, _ = await api("POST", "terminals", {})
    assert status == 400 and "kernel_id" in err["message"]
    assert (await api("POST", "terminals", {"kernel_id": "a", "job_id": "b"}))[0] == 400
    assert (await api("POST", "terminals", {"kernel_id": ["x"]}))[0] == 404


async def test_terminal_in_the_kernel_container(jp_fetch, jp_ws_fetch, api, jp_serverapp, jp_root_dir, gpu_kernelspec):
    r = await jp_fetch("api", "sessions", method="POST", request_timeout=120, body=json.dumps(
        {"path": "t.ipynb", "type": "notebook", "name": "t.ipynb", "kernel": {"name": gpu_kernelspec}}))
    kid = json.loads(r.body)["kernel"]["id"]  # a notebook's kernel: it works in the notebook's folder
    km = jp_serverapp.kernel_manager
    tm = jp_serverapp.web_app.settings["terminal_manager"]
    try:
        cid = km.get_kernel(kid).provisioner.container_id
        _, kernels, _ = await api("GET", "kernels")
        devices = ",".join(next(k for k in kernels if k["kernel_id"] == kid)["gpus"])  # the GPU the ledger gave it
        assert devices
        # a client-chosen command, folder and environment are ignored
        status, term, r = await api("POST", "terminals", {"kernel_id": kid, "shell_command": ["sh", "-c", "echo PWNED"],
                                                          "cwd": "/", "extra_env": {"X_EVIL": "1"}})
        assert status == 201, term
        assert term["kind"] == "kernel" and term["id"] == kid and r.headers["Location"].endswith(f"/api/terminals/{term['name']}")
        assert tm.terminals[term["name"]].ptyproc.argv[-2:] == ["attach", cid]

        ws = await jp_ws_fetch("terminals", "websocket", term["name"])
        ws.write_message(json.dumps(["stdin", "echo uid=$(id -u) host=$(hostname) dev=$NVIDIA_VISIBLE_DEVICES "
                                              "dir=$PWD evil=${X_EVIL:-none}; echo END-$((1+1))\r"]))
        out = await read_until(ws, "END-2")
        assert f"uid={KERNEL_UID} host={cid[:12]} dev={devices} dir={jp_root_dir} evil=none" in out, out
        assert "PWNED" not in out.replace("echo PWNED", "") and "PTCUDA-PID" not in out
        # the container's uid has no passwd entry in the image: the shell still names its user, and
        # nvidia-smi, where the container has none, says why instead of "command not found"
        ws.write_message(json.dumps(["stdin", "nvidia-smi; echo who=$USER; echo END-$((2+1))\r"]))
        more = await read_until(ws, "END-3")
        assert "I have no name!" not in out + more and "ptcuda@" in out + more, out + more
        assert "who=ptcuda" in more and "nvidia-smi: command not found" not in more, more
        assert "nvidia-smi: not in this container" in more or "NVIDIA-SMI" in more, more

        # closing the terminal ends the shell in the container and the attach process here
        ws.write_message(json.dumps(["stdin", "sleep 4321\r"]))
        assert await wait_until(lambda: "sleep 4321" in top(cid))
        attach = tm.terminals[term["name"]].ptyproc
        ws.close()
        r = await jp_fetch("api", "terminals", term["name"], method="DELETE")
        assert r.code == 204
        assert await wait_until(lambda: "sleep 4321" not in top(cid) and "bash" not in top(cid)), top(cid)
        assert not attach.isalive()

        # shutting the kernel down ends its terminal
        status, term2, _ = await api("POST", "terminals", {"kernel_id": kid})
        assert status == 201 and term2["name"] in tm.terminals
        await km.shutdown_kernel(kid, now=True)
        assert await wait_until(lambda: term2["name"] not in tm.terminals), "the terminal outlived its kernel"
        assert (await api("POST", "terminals", {"kernel_id": kid}))[0] == 404
    finally:
        if kid in km:
            await km.shutdown_kernel(kid, now=True)
        from jupyter_ptcuda.provisioner import drain_removals

        await drain_removals()


@pytest.fixture
def job_env(tmp_path, monkeypatch, jp_root_dir):
    """Before the server starts (list it first): a private job store, the test image, no leftovers."""
    from tests.conftest import TEST_IMAGE
    from tests.server.helpers import job_environment

    with job_environment(tmp_path, monkeypatch, jp_root_dir, TEST_IMAGE):
        yield


async def test_terminal_in_a_running_job(job_env, api, jp_ws_fetch, jp_fetch, jp_root_dir):
    from tests.server.helpers import wait_for

    (jp_root_dir / "nb").mkdir(exist_ok=True)
    (jp_root_dir / "nb" / "wait.py").write_text("import time\ntime.sleep(120)\n")
    status, job, _ = await api("POST", "jobs", {"path": "nb/wait.py", "gpus": "none"})
    assert status == 201, job
    try:
        await wait_for(api, f"jobs/{job['id']}", lambda s, b: s == 200 and b["state"] == "running", timeout=60)
        status, term, _ = await api("POST", "terminals", {"job_id": job["id"]})
        assert status == 201 and term["kind"] == "job" and term["id"] == job["id"], term
        ws = await jp_ws_fetch("terminals", "websocket", term["name"])
        ws.write_message(json.dumps(["stdin", "echo uid=$(id -u) job=$(cat /etc/hostname); echo END-$((2+2))\r"]))
        out = await read_until(ws, "END-4")
        assert f"uid={KERNEL_UID} job={term['container_id']}" in out, out
        ws.close()
        await jp_fetch("api", "terminals", term["name"], method="DELETE")
    finally:
        await api("DELETE", f"jobs/{job['id']}")
        await wait_for(api, f"jobs/{job['id']}", lambda s, b: s == 200 and b["state"] not in ("queued", "running"),
                       timeout=60)
