"""A real Jupyter server (pytest-jupyter) with the extension, authentication on, and the fake NVML
(two GPUs) — the one part that cannot exist on this machine."""

from __future__ import annotations

import json

import pytest

from tests.server.openapi_check import validate_response


@pytest.fixture
def jp_server_config(jp_root_dir, request):
    """``@pytest.mark.ptcuda_config(**traits)`` sets more PtcudaExtension traits for one test. The GC
    freeze is off unless a test asks: it would freeze the test process's objects, test after test."""
    marker = request.node.get_closest_marker("ptcuda_config")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True}},
        "PtcudaExtension": {"nvml": "fake:2:model=H100+L4", "sample_interval": 0.2, "freeze_gc": False,
                            **(marker.kwargs if marker else {})},
    }


@pytest.fixture
def api(jp_fetch, jp_serverapp):
    """api(method, path, body=None, **kw) -> (status, parsed JSON or text); never raises on HTTP errors."""
    from tornado.httpclient import HTTPClientError

    async def call(method, path, body=None, **kw):
        kwargs = {"method": method, "raise_error": False, **kw}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = b""
        try:
            r = await jp_fetch("jupyter-ptcuda", *path.split("/"), **kwargs)
        except HTTPClientError as e:  # pragma: no cover - raise_error=False
            if e.response is None:
                raise
            r = e.response
        text = r.body.decode() if r.body else ""
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        validate_response(method, path, r.code, r.headers.get("Content-Type", ""), body)
        return r.code, body, r

    return call
