"""The broker's HTTP handlers: every request is authenticated by its Hub token before a byte of its body is
read (:class:`AuthenticatedHandler`), then one operation runs for that Hub user (:class:`OpHandler`,
``POST /v1/<op>``) or a container's output streams (:class:`FollowHandler`). The terminal websocket is
:mod:`.tty`. Errors answer as JSON with the broker's sentence (:func:`~jupyter_ptcuda.containers.wire.error_to_json`)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tornado import web

from ..containers import wire
from ..errors import ConfigError, Forbidden, PtcudaError
from .ops import Broker

log = logging.getLogger("jupyter_ptcuda.broker")


class AuthenticatedHandler(web.RequestHandler):
    async def prepare(self) -> None:  # type: ignore[override]
        auth = self.settings["hub_auth"]
        header = self.request.headers.get("Authorization", "")
        match = auth.auth_header_pat.match(header)
        if not match:
            raise Forbidden("no Hub token: call the broker with 'Authorization: token $JUPYTERHUB_API_TOKEN' "
                            "(jupyter-ptcuda does this in a single-user server).")
        model = await auth.user_for_token(match.group(1), sync=False)
        if not model or model.get("kind", "user") != "user":
            raise Forbidden("the Hub does not know this token as a user's: use the single-user server's "
                            "$JUPYTERHUB_API_TOKEN.")
        if not auth.check_scopes(auth.access_scopes, model):
            raise Forbidden(f"this token of {model['name']!r} may not use the broker (it lacks "
                            f"{' or '.join(sorted(auth.access_scopes))}): the Hub operator grants it to users' servers "
                            "(a role with that scope and c.Spawner.server_token_scopes; see examples/jupyterhub_config.py).")
        self.hub_user = model["name"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        if isinstance(exc, PtcudaError):
            self.finish(json.dumps(wire.error_to_json(exc)))
        else:
            if status_code >= 500:
                log.error("broker: %s %s failed", self.request.method, self.request.path, exc_info=kwargs.get("exc_info"))
            self.finish(json.dumps({"error": "EngineError" if status_code >= 500 else "", "message": self._reason}))

    def check_xsrf_cookie(self) -> None:  # token auth, no cookies
        return


@web.stream_request_body
class OpHandler(AuthenticatedHandler):
    """``POST /v1/<op>``: the body is streamed, so :meth:`AuthenticatedHandler.prepare` checks the token before a byte of it
    is read, and a body past ``c.PtcudaBroker.max_body_bytes`` is refused (413) as it arrives."""

    def initialize(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    async def prepare(self) -> None:  # type: ignore[override]
        limit = int(self.settings["config"].max_body_bytes)
        declared = self.request.headers.get("Content-Length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise TooLarge(limit)
        await super().prepare()
        if self.request.connection is not None:
            self.request.connection.set_max_body_size(limit)  # type: ignore[attr-defined]

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > int(self.settings["config"].max_body_bytes):
            raise TooLarge(int(self.settings["config"].max_body_bytes))
        self._chunks.append(chunk)

    async def post(self, op: str) -> None:
        body = parse_body(b"".join(self._chunks))
        self._chunks = []
        self._task = asyncio.ensure_future(self.settings["broker"].call(self.hub_user, op, body))
        try:
            result = await self._task
        except asyncio.CancelledError:
            if self._gone:
                return  # the caller hung up (a kernel start that gave up waiting for a GPU): nothing to answer
            raise
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"result": result}))

    _task: asyncio.Future[Any] | None = None
    _gone = False

    def on_connection_close(self) -> None:
        """The caller hung up while the operation ran: stop it (a request waiting in the GPU queue leaves it)."""
        self._gone = True
        if self._task is not None:
            self._task.cancel()


class TooLarge(PtcudaError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes (c.PtcudaBroker.max_body_bytes): send less "
                         "(a kernel's files and a job's command are small).")


def parse_body(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 saying why (not JSON, nested too deep, not an object)."""
    try:
        body = json.loads(raw or b"{}")
    except RecursionError:
        raise ConfigError("the body is nested too deeply to be a broker request.") from None
    except ValueError:
        raise ConfigError("the body is not JSON: send a JSON object.") from None
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object.")
    return body


@web.stream_request_body
class FollowHandler(AuthenticatedHandler):
    """``GET /v1/follow?cid=``: a container's output as it comes (a long call: counted per user)."""

    def data_received(self, chunk: bytes) -> None:
        raise ConfigError("GET /v1/follow takes no body.")

    async def get(self) -> None:
        broker: Broker = self.settings["broker"]
        cid = self.get_argument("cid", "")
        with broker.limits.long_call(self.hub_user):
            chunks = await broker.follow(self.hub_user, cid)
            self.set_header("Content-Type", "application/octet-stream")
            try:
                async for chunk in chunks:
                    self.write(chunk)
                    await self.flush()
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        self.finish()
