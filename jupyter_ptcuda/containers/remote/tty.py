"""The client of the broker's terminal (``/v1/tty``, :mod:`jupyter_ptcuda.broker.tty`): a shell in a
kernel's or job's container from a user's server under JupyterHub, where there is no Docker socket.

:meth:`RemoteTty.connect` is what :meth:`BrokerEndpoint.open_tty
<jupyter_ptcuda.containers.remote.BrokerEndpoint.open_tty>` returns, for the blocking terminal
loop of :func:`jupyter_ptcuda.shell.interactive` (``jupyter ptcuda shell`` and the process behind a
JupyterLab terminal in the kernel's container). The websocket runs on an event loop in a thread of its
own; the shell's output reaches the caller through one end of a socket pair, so the caller can
``select()`` on it with its terminal. Only the container id, the terminal type and its size are sent:
the broker builds the shell (see there).

Closing (or losing) the websocket is the hangup: the broker ends the shell's session in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from typing import Any, Protocol
from urllib.parse import urlencode

from ...errors import EngineUnavailable
from .. import wire


class BrokerEndpoint(Protocol):
    """What a terminal needs of the broker client: where the broker is, the Hub token, the unreachable error."""

    url: str
    token: str

    def _unreachable(self, exc: BaseException) -> EngineUnavailable: ...

CONNECT_TIMEOUT = 30.0


class RemoteTty:
    """A :class:`jupyter_ptcuda.shell.TtySession` over the broker's websocket."""

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair()  # ours: what the caller reads; theirs: the loop's
        self._theirs.setblocking(False)
        self._task: asyncio.Future[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ptcuda-remote-tty", daemon=True)
        self._ws: Any = None
        self.code: int | None = None
        self.message = ""  # why it ended, when not by the shell's exit: shown once in the terminal
        self._ended = threading.Event()

    @classmethod
    def connect(cls, service: BrokerEndpoint, cid: str, *, term: str,
                size: tuple[int, int] | None = None) -> RemoteTty:
        """Open the broker's terminal for container ``cid`` (blocking); the broker's refusal (403, 404)
        comes back as the same error class with its sentence."""
        if not service.token:
            raise EngineUnavailable("JUPYTER_PTCUDA_BROKER_URL is set but JUPYTERHUB_API_TOKEN is not: the broker needs "
                                    "the single-user server's Hub token (start the server from JupyterHub).")
        query = {"cid": cid, "term": term, **({"rows": size[0], "cols": size[1]} if size else {})}
        url = "ws" + service.url[len("http"):] if service.url.startswith("http") else service.url
        tty = cls()
        tty._thread.start()
        future = asyncio.run_coroutine_threadsafe(tty._open(f"{url}/v1/tty?{urlencode(query)}", service), tty._loop)
        try:
            future.result(CONNECT_TIMEOUT + 5)
        except BaseException:
            tty.close()
            raise
        return tty

    async def _open(self, url: str, service: BrokerEndpoint) -> None:
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect

        request = HTTPRequest(url, headers={"Authorization": f"token {service.token}"},
                              connect_timeout=CONNECT_TIMEOUT, request_timeout=CONNECT_TIMEOUT)
        try:
            self._ws = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
        except HTTPClientError as exc:
            if exc.response is None or exc.code == 599:
                raise service._unreachable(exc) from None
            raise wire.error_from_http(exc.code, exc.response.body) from None
        except OSError as exc:
            raise service._unreachable(exc) from None
        self._task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        """The broker's frames: bytes to the caller's end of the pair; the exit status; then EOF."""
        try:
            while (msg := await self._ws.read_message()) is not None:
                if isinstance(msg, bytes):
                    await self._loop.sock_sendall(self._theirs, msg)
                    continue
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    data = json.loads(msg)
                    if "exit" in data:
                        self.code = data["exit"]
                        self.message = str(data.get("message") or "")
            if self.code is None and not self.message:
                reason = self._ws.close_reason or f"code {self._ws.close_code}"
                self.message = f"the broker closed the terminal ({reason})"
        except OSError:
            pass  # the caller closed its end
        finally:
            self._ended.set()
            with contextlib.suppress(OSError):
                self._theirs.shutdown(socket.SHUT_WR)

    # -- TtySession ---------------------------------------------------------------------------------
    def fileno(self) -> int:
        return self._ours.fileno()

    def read(self) -> bytes | None:
        try:
            data = self._ours.recv(65536)
        except OSError:
            data = b""
        if data:
            return data
        if self.message:  # said once, in the terminal, where the user looks
            data, self.message = f"\r\njupyter ptcuda: {self.message}\r\n".encode(), ""
            return data
        return None

    def _call(self, fn: Any, *args: Any) -> None:
        if self._ws is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._write, fn, *args)

    def _write(self, fn: Any, *args: Any) -> None:
        from tornado.websocket import WebSocketClosedError

        try:
            result = fn(*args)
        except WebSocketClosedError:
            return
        if isinstance(result, asyncio.Future):  # a write that fails later (closed meanwhile): not an error to print
            result.add_done_callback(lambda f: f.cancelled() or f.exception())

    def send(self, data: bytes) -> None:
        self._call(lambda: self._ws.write_message(data, binary=True))

    def resize(self, rows: int, cols: int) -> None:
        self._call(lambda: self._ws.write_message(json.dumps({"resize": [rows, cols]})))

    def hang_up(self) -> None:
        """Close the websocket now: the broker ends the shell's session in the container."""
        self._call(lambda: self._ws.close(1000, "hang up"))

    def close(self) -> None:
        if self._ws is not None and not self._loop.is_closed():
            done = threading.Event()

            def shut() -> None:
                self._ws.close(1000)
                done.set()

            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(shut)
                done.wait(2)
                self._ended.wait(2)  # the close handshake, so the broker hears it from us
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        for s in (self._ours, self._theirs):
            with contextlib.suppress(OSError):
                s.close()

    def exit_code(self) -> int:
        """The shell's status; 1 when the terminal ended otherwise (the reason was shown by :meth:`read`)."""
        self._ended.wait(5)
        return int(self.code) if self.code is not None else 1
