"""Base handler: every verb authenticated + authorized, JSON in and out, our errors → HTTP status."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..errors import PtcudaError, http_status

#: The resource name given to the server's Authorizer (JupyterHub maps it to the user's scopes).
AUTH_RESOURCE = "jupyter_ptcuda"
NAMESPACE = "jupyter-ptcuda"


class PtcudaHandler(ExtensionHandlerMixin, APIHandler):
    """Subclasses decorate each verb with ``@web.authenticated`` and ``@authorized``."""

    auth_resource = AUTH_RESOURCE

    @property
    def state(self) -> Any:
        """The extension's shared state (:class:`~jupyter_ptcuda.server.extension.PtcudaState`)."""
        return self.settings["jupyter_ptcuda_state"]

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; 400 with a message if it is not one."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise web.HTTPError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"message", "reason"}``; a PtcudaError keeps its message; never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PtcudaError):
            status_code = http_status(exc)
            self.set_status(status_code)
            reply: dict[str, Any] = {"message": exc.message, "reason": type(exc).__name__}
            extra = {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool | type(None))}
            if extra:
                reply["details"] = extra
        elif isinstance(exc, web.HTTPError):
            reply = {"message": exc.log_message or self._reason, "reason": exc.reason or self._reason}
        else:
            reply = {"message": "internal error (see the server log)", "reason": "error"}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, PtcudaError) and http_status(value) < 500:
            self.log.info("jupyter-ptcuda: %s %s -> %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PtcudaError):
            status_code = http_status(exc)
        super().send_error(status_code, **kwargs)
