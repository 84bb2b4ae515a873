"""Opening a notebook whose kernel jupyter-ptcuda refuses (more GPUs than the host has: never satisfiable, so
refused at once rather than queued): the client gets the refusal's own
status and message, and the access log has a warning, not a server error with the request headers (real
server, real engine, the fake two-GPU NVML)."""

from __future__ import annotations

import json
import logging

import pytest

from jupyter_ptcuda.kernelspec import make_kernel_json

pytestmark = pytest.mark.integration


async def test_a_refused_kernel_start_is_a_4xx_not_a_server_error(jp_fetch, jp_data_dir, test_image, caplog):
    d = jp_data_dir / "kernels" / "ptcuda-three"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps(make_kernel_json("PyTorch (3 GPUs)", {"image": test_image, "gpus": 3})))
    caplog.set_level(logging.INFO)
    r = await jp_fetch("api", "sessions", method="POST", raise_error=False, request_timeout=120, body=json.dumps(
        {"path": "big.ipynb", "type": "notebook", "name": "big.ipynb", "kernel": {"name": "ptcuda-three"}}))
    body = json.loads(r.body)
    assert r.code == 400, (r.code, body)  # was 500 "HTTP 409: Conflict (...)"
    assert "3 GPU(s) asked for, but this host has 2" in body["message"] and "ask for at most 2" in body["message"]
    # the access log: one warning line; no "500 POST /api/sessions" error with the request's headers dumped
    # and jupyter_client's own record of the failed start is one [W] line with the reason, no traceback
    lines = [(rec.levelno, rec.getMessage()) for rec in caplog.records]
    assert not [m for _, m in lines if "500 POST" in m or '"User-Agent"' in m or "HTTP 400: Bad Request" in m], lines
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info], lines
    said = [m for level, m in lines if level == logging.WARNING and m.startswith("jupyter-ptcuda: kernel start refused")]
    assert len(said) == 1 and "(400): gpus: 3 GPU(s) asked for" in said[0], lines
    assert any(level == logging.WARNING and m.startswith("400 POST") and "/api/sessions" in m for level, m in lines), lines
