"""Base handler: every verb authenticated + authorized, JSON in and out, our errors → HTTP status.

Bad input is bounded here, for every handler: a body above :data:`MAX_BODY` is 413; a body that is not
JSON, nests deeper than :data:`MAX_DEPTH`, holds ``NaN``/``Infinity`` or a NUL byte in any string is 400;
every error message, in the reply and in the server log, is cut to :data:`MAX_MESSAGE` characters ("…").
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..errors import PtcudaError, http_status

#: The resource name given to the server's Authorizer (JupyterHub maps it to the user's scopes).
AUTH_RESOURCE = "jupyter_ptcuda"
NAMESPACE = "jupyter-ptcuda"

MAX_BODY = 1024 * 1024  #: bytes of a request body (1 MiB); above: 413
MAX_DEPTH = 32  #: nesting of a JSON body
MAX_MESSAGE = 400  #: characters of an error message, in replies and in the log


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` in at most ``limit`` characters. A longer message loses its middle, not its end: our
    messages say what happened, then (in their last sentence) what to do, and the fix must survive —
    "GPU 0 requested, but held by … . Choose another device, a count, …" keeps "Choose another…"."""
    text = str(text)
    if len(text) <= limit:
        return text
    body = text.rstrip()
    cut = body.rfind(". ", 0, len(body) - 1)
    tail = body[cut + 2 :] if cut != -1 else ""
    if not tail or len(tail) > limit // 4:  # a short closing fix, not a long aside
        tail = ""
    head = limit - len(tail) - (3 if tail else 1)
    return body[:head].rstrip() + (f" … {tail}" if tail else "…")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def check_json(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """400 when a parsed body nests deeper than ``max_depth`` or holds a NUL byte in a string or key.

    Iterative (no recursion), so any parsed value is checked in bounded stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > max_depth:
            raise web.HTTPError(400, f"the request body nests deeper than {max_depth} levels; send a flatter object")
        if isinstance(item, str):
            if "\0" in item:
                raise web.HTTPError(400, f"{where or 'the body'} contains a NUL byte (\\0): remove it")
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}" if where else str(key)
                if "\0" in key:
                    raise web.HTTPError(400, f"a field name contains a NUL byte (\\0): {truncate(repr(key), 80)}")
                stack.append((sub, truncate(name, 80), depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, truncate(f"{where}[{i}]", 80), depth + 1) for i, sub in enumerate(item))


class PtcudaHandler(ExtensionHandlerMixin, APIHandler):
    """Subclasses decorate each verb with ``@web.authenticated`` and ``@authorized``."""

    auth_resource = AUTH_RESOURCE

    @property
    def state(self) -> Any:
        """The extension's shared state (:class:`~jupyter_ptcuda.server.extension.PtcudaState`)."""
        return self.settings["jupyter_ptcuda_state"]

    async def backend_queue(self) -> list[dict[str, Any]] | None:
        """The GPU queue of a backend that keeps its own (the JupyterHub broker's), in order, as ``GET queue``
        shows it: ``id`` (the job or kernel id: only the user's own), ``what``, ``place``, ``reason`` (own
        only), ``waited_s``, ``gpus``. None where the server's own queue (the allocation layer) is the one."""
        if self.state.queue is not None:
            return None
        rows = await self.state.service.queue_view()
        if rows is None:
            return None
        return [{"id": str(r.get("claim") or "").split("/", 1)[-1] or None if r.get("mine") else None,
                 "what": r.get("what", "another user"), "place": r.get("place"),
                 "reason": (r.get("reason") or None) if r.get("mine") else None,
                 "waited_s": r.get("waited_s"), "gpus": r.get("gpus")} for r in rows]

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; 413 above :data:`MAX_BODY`, 400 with a message if it is not
        one (see the module docstring)."""
        raw = self.request.body or b"{}"
        if len(raw) > MAX_BODY:
            raise web.HTTPError(413, f"the request body is {len(raw)} bytes; at most {MAX_BODY} (1 MiB) are accepted")
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except RecursionError:
            raise web.HTTPError(400, f"the request body nests too deeply; at most {MAX_DEPTH} levels are "
                                     "accepted") from None
        except ValueError as exc:  # UnicodeDecodeError too
            raise web.HTTPError(400, f"the request body is not valid JSON: {truncate(str(exc), 200)}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        check_json(body)
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
            reply: dict[str, Any] = {"message": truncate(exc.message), "reason": type(exc).__name__}
            extra = {k: truncate(v) if isinstance(v, str) else v for k, v in exc.details.items()
                     if isinstance(v, str | int | float | bool | type(None))}
            if extra:
                reply["details"] = extra
        elif isinstance(exc, web.HTTPError):
            reply = {"message": truncate(exc.log_message or self._reason),
                     "reason": truncate(exc.reason or self._reason, 80)}
        else:
            reply = {"message": "internal error (see the server log)", "reason": "error"}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """One bounded line for 4xx (the client's mistake); a bounded traceback for anything else."""
        where = f"{self.request.method} {truncate(self.request.path, 200)}"
        if isinstance(value, PtcudaError) and http_status(value) < 500:
            self.log.info("jupyter-ptcuda: %s -> %s", where, truncate(value.message))
            return
        if isinstance(value, web.HTTPError):
            text = value.log_message % value.args if value.log_message and value.args else value.log_message
            log = self.log.warning if value.status_code < 500 else self.log.error
            log("jupyter-ptcuda: %s -> %d %s", where, value.status_code, truncate(text or value.reason or ""))
            return
        frames = "".join(traceback.format_tb(tb)[-12:]) if tb is not None else ""
        self.log.error("jupyter-ptcuda: uncaught exception %s\nTraceback (most recent call last):\n%s%s: %s",
                       where, truncate(frames, 6000), getattr(typ, "__name__", typ), truncate(str(value)))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PtcudaError):
            status_code = http_status(exc)
        super().send_error(status_code, **kwargs)
