"""Model servers through the Jupyter server (``{base_url}jupyter-ptcuda/serve...``): list, start, stop, and
the scoring server's ``ping``/``invocations`` forwarded to it (:func:`~jupyter_ptcuda.jobs.serving.forward`: its
Unix socket in the user's private folder; a pod's IP on Kubernetes).

Every verb is ``@web.authenticated`` + ``@authorized``; only this server's user's model servers are found
(labels: owner uid; under JupyterHub the broker's list, which holds only the Hub user's). The scoring server
has no network and publishes no port: this route is the only way in.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import ConfigError, LaunchError
from ..jobs import serving
from .base import NAMESPACE, PtcudaHandler

_SERVE_ID = r"(?P<serve_id>[0-9a-f]{1,12})"
#: The largest request body forwarded to a scoring server, and the longest a prediction may take.
MAX_INVOCATION = 64 * 1024**2
INVOCATION_TIMEOUT = 300.0


class ServeCollectionHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(await serving.servers(self.state.jobs))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start serving ``{"model": "models:/NAME/VERSION" | "image": IMAGE, "gpus"?: ...}`` (``image``: one made by
        ``image build --model``); 201 once it answers /ping."""
        body = self.json_body()
        model, image = body.get("model"), body.get("image")
        if isinstance(image, str) and model is None:
            self.write_json(await serving.start_image(self.state.jobs, image, gpus=body.get("gpus")), status=201)
            return
        if not isinstance(model, str) or image is not None:
            raise ConfigError("give 'model': a registered model version such as 'models:/linear/1' (or 'image': an "
                              "image made by `jupyter ptcuda image build --model`)")
        self.write_json(await serving.start(self.state.jobs, model, gpus=body.get("gpus")), status=201)


class ServeHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def delete(self, serve_id: str) -> None:
        self.write_json(await serving.stop(self.state.jobs, serve_id))


class ServeForwardHandler(PtcudaHandler):
    """``ping`` and ``invocations`` of MLflow's scoring server, forwarded as they are (status, body, type)."""

    async def _forward(self, serve_id: str, route: str) -> None:
        body = self.request.body if self.request.method == "POST" else None
        if body is not None and len(body) > MAX_INVOCATION:
            raise web.HTTPError(413, f"the request body is {len(body)} bytes; at most {MAX_INVOCATION} are forwarded")
        try:
            code, ctype, data = await serving.forward(
                self.state.jobs, serve_id, self.request.method or "GET", route, body,
                self.request.headers.get("Content-Type", "application/json"), INVOCATION_TIMEOUT)
        except LaunchError as exc:
            raise web.HTTPError(502, exc.message) from None
        self.set_status(code)
        self.set_header("Content-Type", ctype)
        self.finish(data)

    @web.authenticated
    @authorized
    async def get(self, serve_id: str, route: str) -> None:
        await self._forward(serve_id, route)

    @web.authenticated
    @authorized
    async def post(self, serve_id: str, route: str) -> None:
        await self._forward(serve_id, route)


handlers = [
    (rf"/{NAMESPACE}/serve", ServeCollectionHandler),
    (rf"/{NAMESPACE}/serve/{_SERVE_ID}", ServeHandler),
    (rf"/{NAMESPACE}/serve/{_SERVE_ID}/(?P<route>ping|invocations)", ServeForwardHandler),
]
