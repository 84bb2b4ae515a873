"""Exports and batch jobs through a real Jupyter server (auth on) and the real engine with the CPU image."""

from __future__ import annotations

import asyncio
import json
import os

import nbformat
import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from tests.conftest import TEST_IMAGE
from tests.integration.conftest import hook_engine
from tests.server.helpers import job_environment, wait_for

pytestmark = pytest.mark.integration  # a real engine runs the jobs


class ReadOnly(Authorizer):
    """Lets users read jupyter-ptcuda resources but not change them (submit, cancel, export)."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "jupyter_ptcuda" or action == "read"


@pytest.fixture
def jp_server_config(jp_server_config, request):
    """The suite's server config, plus a fast cancel; ``indirect`` param "read-only" swaps the authorizer."""
    config = {**jp_server_config, "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.5}}
    if getattr(request, "param", None) == "read-only":
        config["ServerApp"] = {**config["ServerApp"], "authorizer_class": ReadOnly}
    return config


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir):
    """A private job store, the test image as the default, a root the job user can write; no leftovers."""
    with job_environment(tmp_path, monkeypatch, jp_root_dir, TEST_IMAGE):
        yield


def write_notebook(root, rel="nb/train.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("lr = 0.01\nepochs = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("%env MODE=batch\n!echo shell ok\nprint(f'lr={lr} epochs={epochs}')")]
    nbformat.write(nb, root / rel)
    return rel


async def until(api, path, pred, within=60):
    return await wait_for(api, path, pred, timeout=within)


def terminal(status, body):
    return status == 200 and body["state"] not in ("queued", "running")


async def test_export_returns_the_script_and_can_save_it(api, jp_root_dir):
    rel = write_notebook(jp_root_dir)
    status, body, _ = await api("POST", "exports", {"path": rel})
    assert status == 200
    assert "--lr" in body["script"] or "lr" in body["parameters"]
    assert body["parameters"]["lr"]["default"] == 0.01 and body["report"]
    assert "saved_path" not in body and not (jp_root_dir / "nb" / "train.train.py").exists()
    status, body, _ = await api("POST", "exports", {"path": rel, "save": True})
    assert status == 200 and body["saved_path"] == "nb/train.train.py"
    assert (jp_root_dir / "nb" / "train.train.py").read_text() == body["script"]


async def test_submit_run_read_log_and_list(api, jp_root_dir, jp_base_url):
    rel = write_notebook(jp_root_dir)
    status, job, resp = await api("POST", "jobs", {"path": rel, "params": {"lr": 0.5}, "gpus": "none", "name": "lr sweep"})
    assert status == 201, job
    assert resp.headers["Location"] == f"{jp_base_url}jupyter-ptcuda/jobs/{job['id']}"
    assert job["notebook_path"] == rel and job["output_path"] == f"nb/outputs/{job['id']}"
    done = await until(api, f"jobs/{job['id']}", terminal)
    assert (done["state"], done["exit_code"], done["reason"]) == ("completed", 0, "completed")
    assert done["parameters"] == {"lr": 0.5} and done["args"] == ["--lr", "0.5"]

    status, text, resp = await api("GET", f"jobs/{job['id']}/log")
    assert status == 200 and "lr=0.5 epochs=1" in text and "shell ok" in text
    assert resp.headers["X-Ptcuda-Job-State"] == "completed"
    assert int(resp.headers["X-Ptcuda-Log-Offset"]) == len(text.encode())
    cut = text.index("lr=")
    status, rest, _ = await api("GET", f"jobs/{job['id']}/log", params={"offset": str(cut)})
    assert rest == text[cut:]

    status, jobs, _ = await api("GET", "jobs")
    assert status == 200 and [j["id"] for j in jobs] == [job["id"]] and jobs[0]["name"] == "lr sweep"
    status, body, _ = await api("DELETE", f"jobs/{job['id']}")
    assert status == 409 and "already finished" in body["message"]


async def test_follow_then_cancel(api, jp_fetch, jp_root_dir):
    (jp_root_dir / "nb" / "ticks.py").write_text(
        "import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n")
    status, job, _ = await api("POST", "jobs", {"path": "nb/ticks.py", "gpus": "none"})
    assert status == 201
    chunks: list[bytes] = []
    follow = asyncio.ensure_future(jp_fetch("jupyter-ptcuda", "jobs", job["id"], "log", params={"follow": "1"},
                                            streaming_callback=chunks.append, request_timeout=60))
    deadline = asyncio.get_running_loop().time() + 30
    while b"tick 2" not in b"".join(chunks):
        assert asyncio.get_running_loop().time() < deadline and not follow.done(), b"".join(chunks)
        await asyncio.sleep(0.1)
    status, body, _ = await api("DELETE", f"jobs/{job['id']}")
    assert status == 202 and body["cancel_requested"] is True
    resp = await asyncio.wait_for(follow, 30)  # the stream ends with the job
    assert resp.code == 200
    text = b"".join(chunks).decode()
    assert text.startswith("tick 0\ntick 1\ntick 2\n")
    done = await until(api, f"jobs/{job['id']}", terminal)
    assert (done["state"], done["reason"]) == ("cancelled", "cancelled")
    status, full, _ = await api("GET", f"jobs/{job['id']}/log")
    assert full.startswith(text)  # nothing lost or repeated between the stream and the saved log


@pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")
async def test_gpu_count_is_assigned_by_the_ledger(api, jp_root_dir):
    (jp_root_dir / "nb" / "gpu.py").write_text("import os\nprint('visible', os.environ.get('NVIDIA_VISIBLE_DEVICES'))\n")
    status, job, _ = await api("POST", "jobs", {"path": "nb/gpu.py", "gpus": 1})
    assert status == 201 and job["gpus"] in ("0", "1")  # a concrete device of the fake two-GPU machine
    done = await until(api, f"jobs/{job['id']}", terminal)
    _, text, _ = await api("GET", f"jobs/{job['id']}/log")
    assert done["state"] == "completed" and f"visible {job['gpus']}" in text


async def test_paths_outside_the_root_are_refused(api, jp_root_dir, tmp_path):
    (tmp_path / "outside.py").write_text("print('no')\n")
    os.symlink(tmp_path, jp_root_dir / "nb" / "up")
    for path in ["../outside.py", str(tmp_path / "outside.py"), "nb/up/outside.py", "nb/../../outside.py"]:
        status, body, _ = await api("POST", "jobs", {"path": path, "gpus": "none"})
        assert status == 403 and "outside the server's root" in body["message"], path
    status, body, _ = await api("POST", "exports", {"path": "../outside.py"})
    assert status == 403
    status, body, _ = await api("POST", "jobs", {"path": "nb/missing.ipynb"})
    assert status == 404 and "does not exist" in body["message"]


async def test_bad_requests_are_400_and_unknown_ids_404(api, jp_fetch, jp_root_dir):
    rel = write_notebook(jp_root_dir)
    for body, words in [("{not json", "not valid JSON"), ("[1]", "JSON object"), ({"path": rel, "colour": 1}, "unknown field"),
                        ({"path": rel, "timeout": "soon"}, "'timeout'"), ({"path": rel, "params": {"nope": 1}}, "unknown parameter"),
                        ({"path": rel, "gpus": "banana"}, "not a GPU index")]:
        status, reply, _ = await api("POST", "jobs", body)
        assert status == 400 and words in reply["message"], (body, reply)
    status, reply, _ = await api("POST", "exports", {"path": "nb"})
    assert status == 400
    status, reply, _ = await api("GET", "jobs/0123456789ab")
    assert status == 404 and "no job" in reply["message"]
    status, reply, _ = await api("GET", "jobs/0123456789ab/log")
    assert status == 404
    status, reply, _ = await api("DELETE", "jobs/0123456789ab")
    assert status == 404
    status, reply, _ = await api("POST", "jobs/0123456789ab/register", {"name": "m"})
    assert status == 404 and "no job" in reply["message"]
    for body, words in [({}, "'name'"), ({"name": "m", "colour": 1}, "unknown field"), ({"name": 3}, "'name'")]:
        status, reply, _ = await api("POST", "jobs/0123456789ab/register", body)
        assert status == 400 and words in reply["message"], (body, reply)
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("jupyter-ptcuda", "jobs", "0123456789ab", "log", params={"offset": "-1"})
    assert err.value.code == 400


async def test_unauthenticated_requests_are_refused(jp_fetch, jp_root_dir):
    rel = write_notebook(jp_root_dir)
    for method, parts, body in [("GET", ("jobs",), None), ("POST", ("jobs",), json.dumps({"path": rel})),
                                ("POST", ("exports",), json.dumps({"path": rel})),
                                ("POST", ("jobs", "0123456789ab", "register"), json.dumps({"name": "m"}))]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("jupyter-ptcuda", *parts, method=method, body=body,
                           headers={"Authorization": "token not-the-token"})
        assert err.value.code in (401, 403)
    assert not (jp_root_dir / "nb" / "outputs").exists()


@pytest.mark.parametrize("jp_server_config", ["read-only"], indirect=True)
async def test_authorizer_decides(api, jp_root_dir):
    rel = write_notebook(jp_root_dir)
    status, body, _ = await api("GET", "jobs")
    assert status == 200 and body == []
    status, body, _ = await api("POST", "jobs", {"path": rel, "gpus": "none"})
    assert status == 403 and "not authorized" in body["message"]
    status, body, _ = await api("POST", "exports", {"path": rel})
    assert status == 403
    status, body, _ = await api("POST", "jobs/0123456789ab/register", {"name": "m"})
    assert status == 403
    assert not (jp_root_dir / "nb" / "outputs").exists()


async def test_a_refused_submission_is_not_a_job(api, jp_root_dir):
    """More GPUs than the host has (3 of the 2 fake ones): never satisfiable, so not queued but refused at once
    (400, saying how many there are), and no `failed` row left behind."""
    (jp_root_dir / "nb" / "gpu.py").write_text("print('ran')\n")
    status, body, _ = await api("POST", "jobs", {"path": "nb/gpu.py", "gpus": 3})
    assert status == 400 and "this host has 2" in body["message"], body
    assert body["message"] and len(body["message"]) < 400
    _, jobs, _ = await api("GET", "jobs")
    assert jobs == []
    assert not list((jp_root_dir / "nb" / "outputs").glob("*"))  # no job folder either
