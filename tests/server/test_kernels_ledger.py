"""Kernels started through the real server: GPU ledger, kernel map, NVML pid attribution, reaping.

Needs the engine with the stand-in NVIDIA hook (device requests by id start for real)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json
from tests.conftest import DEBIAN_BASE
from tests.integration.conftest import hook_engine
from tests.server.helpers import wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")]


@pytest.fixture
def gpu_kernelspec(jp_data_dir, jp_root_dir, test_image):
    if os.geteuid() == 0:
        os.chown(jp_root_dir, 1000, 100)
    d = jp_data_dir / "kernels" / "ptcuda-one-gpu"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (1 GPU)", {"image": test_image, "gpus": 1})))
    return "ptcuda-one-gpu"


async def start_kernel(jp_fetch, name):
    from tornado.httpclient import HTTPClientError

    try:
        r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}), request_timeout=120)
    except HTTPClientError as e:
        return e.code, json.loads(e.response.body)
    return r.code, json.loads(r.body)


async def test_ledger_gives_each_kernel_its_own_gpu(jp_fetch, api, jp_serverapp, gpu_kernelspec, engine):
    km = jp_serverapp.kernel_manager
    ids = []
    try:
        for _ in range(2):
            code, model = await start_kernel(jp_fetch, gpu_kernelspec)
            assert code == 201, model
            ids.append(model["id"])
        status, kernels, _ = await api("GET", "kernels")
        by_id = {k["kernel_id"]: k for k in kernels}
        gpus = [by_id[i]["gpus"] for i in ids]
        assert sorted(g for gs in gpus for g in gs) == ["0", "1"], gpus  # one each, never the same
        assert all(by_id[i]["in_container"] and by_id[i]["container_id"] for i in ids)

        # a third kernel waits in the GPU queue: JupyterLab's notice names its place and who holds the GPUs
        third = asyncio.ensure_future(start_kernel(jp_fetch, gpu_kernelspec))
        body = await wait_for(api, "notices", lambda s, b: any(n["state"] == "waiting" for n in b["notices"]))
        notice = next(n for n in body["notices"] if n["state"] == "waiting")
        assert notice["kind"] == "kernel_pending" and not third.done()
        assert "is waiting for 1 GPU: next in line; GPUs held by your kernel" in notice["message"]
        assert ids[0][:8] in notice["message"] and ids[1][:8] in notice["message"]

        # GET gpus shows the holders; NVML pids map to the kernel's container
        kernel = km.get_kernel(ids[0])
        info = await engine.inspect(kernel.provisioner.container_id)
        index = int(by_id[ids[0]]["gpus"][0])
        sampler = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].sampler
        sampler.ensure_started()
        sampler._nvml.set_processes(index, [(info["State"]["Pid"], 3 << 30)])
        await asyncio.sleep(0.6)
        _, body, _ = await api("GET", "gpus")
        gpu = body["snapshot"]["gpus"][index]
        assert [h["id"] for h in gpu["holders"]] == [ids[0]]
        proc = gpu["processes"][0]
        assert proc["container"] == info["Id"][:12] and proc["owner"] == ids[0] and proc["kind"] == "kernel"

        # the first kernel shut down: the third starts by itself, on the GPU it gave back
        await km.shutdown_kernel(ids.pop(0), now=True)
        code, model = await asyncio.wait_for(third, 60)
        assert code == 201, model
        ids.append(model["id"])
        _, kernels, _ = await api("GET", "kernels")
        assert {k["kernel_id"]: k for k in kernels}[model["id"]]["gpus"] == [str(index)]
        body = await wait_for(api, "notices", lambda s, b: any(n["state"] == "started" for n in b["notices"]))
        assert "started after waiting" in next(n for n in body["notices"] if n["state"] == "started")["message"]
    finally:
        for kid in ids:
            await km.shutdown_kernel(kid, now=True)
    # holders are refreshed in the background at most every second: the panel sees them go within ~1 s
    await wait_for(api, "gpus", lambda s, b: all(g["holders"] == [] for g in b["snapshot"]["gpus"]), timeout=5)


async def test_a_kernel_that_waits_past_its_launch_timeout_fails_saying_so(jp_fetch, api, jp_serverapp, gpu_kernelspec,
                                                                            jp_data_dir, test_image):
    d = jp_data_dir / "kernels" / "ptcuda-two-gpus-impatient"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (2 GPUs)", {"image": test_image, "gpus": 2,
                                                                                   "launch_timeout": 3})))
    km = jp_serverapp.kernel_manager
    await wait_for(api, "gpus", lambda s, b: s == 200 and b["snapshot"]["state"] == "ok")  # GPUs are assigned
    code, model = await start_kernel(jp_fetch, gpu_kernelspec)
    assert code == 201, model
    try:
        code, err = await start_kernel(jp_fetch, "ptcuda-two-gpus-impatient")
        assert code == 500 and "no GPU freed up within launch_timeout=3 s (count:2 asked for)" in err["message"], err
        _, body, _ = await api("GET", "notices")
        assert [n["state"] for n in body["notices"]] == ["failed"]  # told it waited, then that it gave up
        status, text, _ = await api("GET", "metrics")
        assert "ptcuda_gpu_queue_length 0" in text  # it left the line
    finally:
        await km.shutdown_kernel(model["id"], now=True)


async def test_server_reaps_orphans_of_dead_servers(jp_serverapp, engine, test_image):
    from jupyter_ptcuda.containers import labels as L
    from jupyter_ptcuda.containers.spec import ContainerSpec

    dead = "4194301"
    spec = ContainerSpec(image=DEBIAN_BASE, command=("sleep", "600"), user="65534:65534", workdir="/tmp",
                         labels={L.KIND: "kernel", L.KERNEL_ID: "k-dead-server",
                                 L.SERVER_ID: f"{socket.gethostname()}:{dead}:0", L.SERVER_PID: dead})
    cid = await engine.run(spec)
    foreign = subprocess.run(["docker", "run", "-d", DEBIAN_BASE, "sleep", "600"], capture_output=True, text=True,
                             check=True).stdout.strip()
    try:
        ext = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].app
        removed = await ext.reap_once()
        assert "k-dead-server" in [c["kernel_id"] for c in removed]
        assert await engine.inspect(cid) is None
        assert await engine.inspect(foreign) is not None  # not ours: never touched
    finally:
        subprocess.run(["docker", "rm", "-f", cid, foreign], capture_output=True)


async def test_health_check_inside_a_running_kernel(jp_fetch, api, jp_serverapp, gpu_kernelspec):
    from tests.server.helpers import wait_for

    code, model = await start_kernel(jp_fetch, gpu_kernelspec)
    assert code == 201, model
    try:
        _, kernels, _ = await api("GET", "kernels")
        gpu = next(k for k in kernels if k["kernel_id"] == model["id"])["gpus"]
        status, entry, _ = await api("POST", "health", {"kernel_id": model["id"]})
        assert status == 201
        done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=120)
        assert done["state"] == "done", done
        report = done["report"]
        assert report["target"]["kernel_id"] == model["id"]
        assert report["env"]["NVIDIA_VISIBLE_DEVICES"] == ",".join(gpu)  # it ran inside the kernel's container
        assert {c["id"]: c for c in report["checks"]}["torch_import"]["status"] == "pass"
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(model["id"], now=True)


def health_containers() -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=health"],
                          capture_output=True, text=True, check=True).stdout.split()


async def test_a_health_check_never_runs_on_a_gpu_a_kernel_holds(jp_fetch, api, jp_serverapp, gpu_kernelspec,
                                                                 test_image):
    """The check asks for 'all' (c.ContainerOptions.gpus): every GPU nobody holds, through the ledger."""
    ids = []
    try:
        code, model = await start_kernel(jp_fetch, gpu_kernelspec)
        assert code == 201, model
        ids.append(model["id"])
        _, kernels, _ = await api("GET", "kernels")
        held = next(k for k in kernels if k["kernel_id"] == model["id"])["gpus"]
        free = [g for g in ("0", "1") if g not in held]
        status, entry, _ = await api("POST", "health", {"image": test_image})
        assert status == 201, entry
        done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=120)
        assert done["state"] == "done", done
        assert done["report"]["target"]["gpus"] == ",".join(free)
        assert done["report"]["env"]["NVIDIA_VISIBLE_DEVICES"] == ",".join(free)  # not the kernel's GPU

        code, model = await start_kernel(jp_fetch, gpu_kernelspec)  # now both GPUs are held
        assert code == 201, model
        ids.append(model["id"])
        status, entry, _ = await api("POST", "health", {"image": test_image})
        done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=60)
        assert done["state"] == "error"
        message = done["error"]["message"]
        assert "no GPU is free for a health check" in message and ids[0][:8] in message and ids[1][:8] in message
        assert health_containers() == []
    finally:
        for kid in ids:
            await jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)


@pytest.mark.ptcuda_config(health_concurrency=1)
async def test_health_checks_beyond_the_limit_are_429(api, test_image):
    status, first, _ = await api("POST", "health", {"image": test_image, "gpus": "none"})
    assert status == 201
    status, reply, _ = await api("POST", "health", {"image": test_image, "gpus": "none"})
    assert status == 429 and "c.PtcudaExtension.health_concurrency = 1" in reply["message"]
    await wait_for(api, f"health/{first['id']}", lambda s, b: b["state"] != "running", timeout=120)
    status, again, _ = await api("POST", "health", {"image": test_image, "gpus": "none"})
    assert status == 201  # a slot is free again
    await wait_for(api, f"health/{again['id']}", lambda s, b: b["state"] != "running", timeout=120)


@pytest.mark.ptcuda_config(health_timeout=3)
async def test_a_hung_health_check_is_killed_at_the_timeout(api, jp_fetch, jp_serverapp, gpu_kernelspec, test_image,
                                                           monkeypatch, engine):
    """A check that never ends (here: one that sleeps) is stopped at health_timeout, in a one-off container
    (removed) and inside a kernel (its process ends itself), and says so."""
    import jupyter_ptcuda.health.runner as runner

    monkeypatch.setattr(runner, "check_script_source", lambda: "import time\ntime.sleep(600)\n")
    code, model = await start_kernel(jp_fetch, gpu_kernelspec)
    assert code == 201, model
    try:
        _, image_check, _ = await api("POST", "health", {"image": test_image, "gpus": "none"})
        _, kernel_check, _ = await api("POST", "health", {"kernel_id": model["id"]})
        for entry in (image_check, kernel_check):
            done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=30)
            assert done["state"] == "error" and "did not finish in 3 s" in done["error"]["message"], done
        assert health_containers() == []  # the one-off container is gone
        cid = jp_serverapp.kernel_manager.get_kernel(model["id"]).provisioner.container_id
        code, out = await engine.exec(cid, ["ps", "-eo", "args"])
        assert "signal.alarm" not in out.decode()  # the check's process in the kernel has ended
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(model["id"], now=True)
