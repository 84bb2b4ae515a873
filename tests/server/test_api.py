"""The REST API through a real Jupyter server: GPUs (fake NVML), kernels, health (real engine), metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from tests.server.helpers import wait_for

OPENAPI = Path(__file__).resolve().parents[2] / "jupyter_ptcuda" / "server" / "openapi.yaml"


async def test_gpus_snapshot_and_history(api):
    body = await wait_for(api, "gpus", lambda s, b: s == 200 and len(next(iter(b["history"].values()), {}).get("t", [])) >= 3)
    snap = body["snapshot"]
    assert snap["state"] == "ok"
    names = [g["name"] for g in snap["gpus"]]
    assert len(names) == 2 and "H100" in names[0] and "L4" in names[1]
    g0 = snap["gpus"][0]
    for key in ("uuid", "utilization_gpu", "memory_used", "memory_total", "temperature_c", "power_w",
                "power_limit_w", "clock_sm_mhz", "throttle_reasons", "ecc_volatile_uncorrected", "mig_mode", "holders"):
        assert key in g0, key
    assert set(body["history"]) == {g["uuid"] for g in snap["gpus"]}
    assert body["engine"]["state"] in ("ok", "unavailable")
    status, again, _ = await api("GET", "gpus", params={"since": str(snap["sampled_at"])})
    assert status == 200


async def test_gpus_etag_gives_304_until_the_next_sample(api):
    await wait_for(api, "gpus", lambda s, b: s == 200 and b["snapshot"]["state"] == "ok")
    seen = []
    for _ in range(10):  # a new sample (every 0.2 s here) may land between the two requests: try again
        _, body, r = await api("GET", "gpus")
        status, again, r2 = await api("GET", "gpus", headers={"If-None-Match": r.headers["Etag"]})
        seen.append(status)
        if status == 304:
            assert again == "" and r2.headers["Etag"] == r.headers["Etag"]
            break
        assert status == 200 and r2.headers["Etag"] != r.headers["Etag"]  # new content, new tag
    assert seen[-1] == 304, seen


@pytest.mark.ptcuda_config(freeze_gc=True)
async def test_gc_is_frozen_once_the_server_has_started(jp_serverapp, api):
    import gc

    ext = jp_serverapp.web_app.settings["jupyter_ptcuda_state"].app
    await ext._start_jupyter_server_extension(jp_serverapp)  # what ServerApp.start does (pytest-jupyter does not)
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while gc.get_freeze_count() == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 10_000  # the server's modules and objects: no longer scanned
        status, _, _ = await api("GET", "gpus")  # and the server goes on serving
        assert status == 200
    finally:
        gc.unfreeze()


async def test_bad_query_is_400(api):
    status, body, _ = await api("GET", "gpus", params={"max_points": "banana"})
    assert status == 400 and "max_points" in body["message"]


async def test_no_driver_is_a_state_not_an_error(jp_serverapp, api, monkeypatch):
    from jupyter_ptcuda.containers.docker.service import DockerContainerService
    from jupyter_ptcuda.containers.engine import Engine
    from jupyter_ptcuda.nvml.sampler import GpuSampler
    from jupyter_ptcuda_testing.nvml import make_fake_nvml

    state = jp_serverapp.web_app.settings["jupyter_ptcuda_state"]
    state.service = DockerContainerService(Engine(base_url="unix:///nonexistent/docker.sock"))  # and no Docker engine (Binder)
    state.sampler.stop()
    state.sampler = GpuSampler(make_fake_nvml("driver_not_loaded"), interval=0.2)
    body = await wait_for(api, "gpus", lambda s, b: s == 200 and b["snapshot"]["state"] == "unavailable")
    assert "driver" in body["snapshot"]["reason"].lower() and body["snapshot"]["gpus"] == []
    assert body["engine"]["state"] == "unavailable" and "does not answer" in body["engine"]["reason"]
    state.sampler.stop()


async def test_metrics_prometheus(api):
    await wait_for(api, "gpus", lambda s, b: s == 200 and b["snapshot"]["state"] == "ok")
    status, text, r = await api("GET", "metrics")
    assert status == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert "ptcuda_nvml_up 1" in text
    assert 'ptcuda_gpu_memory_total_bytes{gpu="0"' in text and 'gpu="1"' in text


async def test_unauthenticated_is_refused(jp_fetch):
    from tornado.httpclient import HTTPClientError

    for method, body in (("GET", None), ("POST", "{}")):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("jupyter-ptcuda", "health", method=method, body=body, headers={"Authorization": "token wrong"})
        assert err.value.code in (401, 403)


async def test_health_check_bad_input(api):
    for body, words in (("not json", "not valid JSON"), ({}, "exactly one"), ({"image": "x", "kernel_id": "y"}, "exactly one"),
                        ({"image": 3}, "must be a string"), ({"image": "x", "gpus": "banana"}, "not a GPU index")):
        status, reply, _ = await api("POST", "health", body)
        assert status == 400 and words in reply["message"], (body, reply)
    status, reply, _ = await api("POST", "health", {"kernel_id": "nope"})
    assert status == 404
    status, reply, _ = await api("GET", "health/unknown123")
    assert status == 404 and "no health check" in reply["message"]


@pytest.mark.integration
async def test_health_check_of_image(api, engine, test_image):
    status, entry, r = await api("POST", "health", {"image": test_image, "gpus": "none"})
    assert status == 201 and r.headers["Location"].endswith(f"/jupyter-ptcuda/health/{entry['id']}")
    done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running", timeout=120)
    assert done["state"] == "done", done
    report = done["report"]
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["torch_import"]["status"] == "pass" and "2.13.0" in checks["torch_import"]["value"]
    # no GPU asked for: "CUDA available" is not a failure, and says why
    assert checks["cuda_available"]["status"] == "skip" and report["cuda"]["reason_code"] == "no_gpu_requested"
    assert "by choice" in checks["cuda_available"]["detail"] and checks["cuda_available"]["remediation"]


@pytest.mark.integration
async def test_health_check_of_missing_image(api, engine, monkeypatch):
    status, reply, _ = await api("POST", "health", {"image": "jupyter-ptcuda/absent:0"})  # not allowed
    assert status == 403 and "not present on this Docker engine" in reply["message"]
    monkeypatch.setenv("JUPYTER_PTCUDA_IMAGE", "jupyter-ptcuda/absent:0")  # the configured jobs image: allowed
    status, entry, _ = await api("POST", "health", {"image": "jupyter-ptcuda/absent:0"})
    assert status == 201, entry
    done = await wait_for(api, f"health/{entry['id']}", lambda s, b: b["state"] != "running")
    assert done["state"] == "error" and "jupyter ptcuda image build" in done["error"]["message"]


def test_openapi_lists_every_route():
    from jupyter_ptcuda.server import handlers

    spec = yaml.safe_load(OPENAPI.read_text())
    documented = set(spec["paths"])
    from jupyter_ptcuda.server import docs

    routes = {"/" + p.split("/", 2)[2].replace("(?P<item_id>[A-Za-z0-9_.-]+)", "{id}")
              for p, *_ in handlers.handlers + docs.handlers}
    assert routes <= documented, routes - documented



def test_our_log_lines_carry_the_servers_prefix():
    """A warning from the container service / engine modules is written like every server line:
    ``[W <time> jupyter_ptcuda.containers.service] jupyter-ptcuda: ...`` (it was Python's bare last-resort output)."""
    import io
    import logging

    from jupyter_server.serverapp import ServerApp

    from jupyter_ptcuda.server.extension import share_server_log

    server_log = ServerApp().log  # the server's own logger and handler, as `jupyter lab` has them
    stream = io.StringIO()
    for h in server_log.handlers:
        h.setStream(stream)
    undo = share_server_log(server_log)
    try:
        logging.getLogger("jupyter_ptcuda.containers.service").warning("jupyter-ptcuda: probe %d", 7)
        logging.getLogger("jupyter_ptcuda.containers.engine").debug("not shown at the server's level")
    finally:
        undo()
    line = stream.getvalue()
    assert line.startswith("[W ") and "containers.service] jupyter-ptcuda: probe 7" in line and "not shown" not in line, line
    assert logging.getLogger("jupyter_ptcuda").propagate  # undone


async def test_docs_page_is_served_and_authenticated(jp_fetch):
    """The Help menu's page: this version's README, rendered; not without a token."""
    r = await jp_fetch("jupyter-ptcuda", "docs")
    page = r.body.decode()
    assert r.code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "<h1>jupyter-ptcuda</h1>" in page and "scripts/quickstart" in page
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("jupyter-ptcuda", "docs", headers={"Authorization": "token wrong"}, follow_redirects=False)
    assert err.value.code in (302, 401, 403)
