"""``GET /v1/tty?cid=CONTAINER`` (websocket): a shell in one of the caller's kernel or job containers.

What a user's server uses for JupyterLab's "terminal in kernel container" and ``jupyter ptcuda shell``
under JupyterHub (:mod:`jupyter_ptcuda.containers.remote.tty` is the client). Authenticated like every
other broker call (:class:`.handlers.AuthenticatedHandler`: the server's Hub token, the broker's access scope); before the
upgrade the container must be the Hub user's (``Broker._own``: else 404, without saying whose) and a
running kernel or job (what the local path offers too).

The client chooses the container and nothing else of the exec: the shell is
:data:`jupyter_ptcuda.shell.SHELL_SCRIPT` (bash, else sh), as the container's own configured user, in its
working directory, with its GPU variables (:func:`jupyter_ptcuda.shell.target_of`, read here from the
container). The query's ``term`` (a terminal type: letters, digits, ``.-_+``), ``rows`` and ``cols`` are
the only other inputs.

Frames: binary both ways are the terminal's bytes; a text frame from the client is JSON
``{"resize": [rows, cols]}``; the broker's last text frame is ``{"exit": CODE}`` (or ``{"exit": null,
"message": ...}``) before it closes. Closing the websocket, or losing it, ends the shell's whole session
in the container (:data:`~jupyter_ptcuda.shell.KILL_SCRIPT`): a Docker exec outlives its attach otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import re
import threading
from typing import Any

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ..containers import labels as L
from ..containers.tty import TERM_DEFAULT, EngineTty, ExecTarget, end_session_async, target_of
from ..errors import NotFound, PtcudaError
from .handlers import AuthenticatedHandler
from .ops import Broker

log = logging.getLogger("jupyter_ptcuda.broker")

TERM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
#: Keystrokes queued for a shell that does not read them, at most; past it the terminal is closed (saying
#: why) instead of the broker's memory growing.
MAX_PENDING_INPUT = 1024**2
_tasks: set[asyncio.Future[Any]] = set()  # background work, referenced until done


def _spawn(aw: Any) -> None:
    task = asyncio.ensure_future(aw)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _size(handler: WebSocketHandler) -> tuple[int, int] | None:
    try:
        rows, cols = int(handler.get_argument("rows", "0")), int(handler.get_argument("cols", "0"))
    except ValueError:
        return None
    return (min(rows, 1000), min(cols, 1000)) if rows > 0 and cols > 0 else None


class TtyHandler(AuthenticatedHandler, WebSocketHandler):
    """One shell per websocket; see the module docstring."""

    session: EngineTty | None = None
    target: ExecTarget | None = None
    counted = False
    max_message_size = 64 * 1024  # one websocket frame of keystrokes

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Before the upgrade (refusals are plain HTTP errors with the broker's sentence): the container
        is the caller's, a running kernel or job."""
        broker: Broker = self.settings["broker"]
        user = broker.user(self.hub_user)
        state = await broker._own(user, self.get_argument("cid", ""))
        if state.tag.kind not in (L.KERNEL, L.JOB) or not state.running:
            raise NotFound(f"container {state.id[:12]} is not a running kernel or job: a shell opens in those only.")
        broker.limits.reserve_tty(self.hub_user)  # counted now, before the upgrade: concurrent opens cannot all pass
        self.counted = True
        try:
            term = self.get_argument("term", TERM_DEFAULT)
            self.term = term if TERM_RE.fullmatch(term) else TERM_DEFAULT
            self.target = await target_of(broker.service, state)
            await super().get(*args, **kwargs)
        except BaseException:
            self._uncount()
            raise
        if self.ws_connection is None:  # the upgrade was refused: on_close will not come
            self._uncount()

    async def open(self, *args: Any, **kwargs: Any) -> None:
        target = self.target
        assert target is not None
        self.loop = asyncio.get_running_loop()
        broker: Broker = self.settings["broker"]
        engine, size = broker.service.engine, _size(self)
        try:
            session = await engine.call(lambda api: EngineTty.open(engine, target, self.term, size), long=True)
        except PtcudaError as exc:
            await self._finish(None, exc.message)
            return
        self.session = session
        session.on_hang_up = lambda target, pid: None  # ended in on_close, by this process
        self.keys: queue.Queue[bytes | None] = queue.Queue()
        self.pending = 0
        self.pending_lock = threading.Lock()
        threading.Thread(target=self._type, args=(session,), name=f"ptcuda-tty-in-{target.container[:12]}",
                         daemon=True).start()
        log.info("broker: terminal for %s in %s %s (container %s)", self.hub_user, target.kind, target.id,
                 target.container[:12])
        threading.Thread(target=self._pump, name=f"ptcuda-tty-{target.container[:12]}", daemon=True).start()

    def _pump(self) -> None:
        """The shell's output to the websocket (a thread: the engine's socket is a blocking one); each
        chunk waits until it is written, so a slow client slows the shell instead of filling memory."""
        session = self.session
        assert session is not None
        try:
            while (data := session.read()) is not None:
                if data:
                    asyncio.run_coroutine_threadsafe(self._send(data), self.loop).result()
            code: int | None = None
            message = ""
            try:
                code = session.exit_code()
            except PtcudaError as exc:
                message = f"the container is gone ({exc.message})"
            asyncio.run_coroutine_threadsafe(self._finish(code, message), self.loop).result()
        except (WebSocketClosedError, RuntimeError):
            return  # the client went away (on_close ends the session) or the loop stopped

    def _type(self, session: EngineTty) -> None:
        """The client's keystrokes to the shell, in order, on this terminal's own thread (a write may block
        while the shell reads nothing: it blocks only this terminal)."""
        while (data := self.keys.get()) is not None:
            with self.pending_lock:
                self.pending -= len(data)
            try:
                session.send(data)
            except OSError:
                return

    async def _send(self, data: bytes) -> None:
        await self.write_message(data, binary=True)

    async def _finish(self, code: int | None, message: str = "") -> None:
        with contextlib.suppress(WebSocketClosedError):
            await self.write_message(json.dumps({"exit": code, **({"message": message} if message else {})}))
        self.close(1000 if code is not None else 1011, message[:120] or None)

    def on_message(self, message: str | bytes) -> None:
        session = self.session
        if session is None:
            return
        if isinstance(message, bytes):
            with self.pending_lock:
                self.pending += len(message)
                over = self.pending > MAX_PENDING_INPUT
            if over:
                _spawn(self._finish(None, "the shell reads its input slower than it is typed (over 1 MiB waiting): "
                                          "the terminal was closed. Paste less at once."))
                return
            self.keys.put_nowait(message)
            return
        try:
            rows, cols = json.loads(message)["resize"]
            rows, cols = int(rows), int(cols)
        except (ValueError, KeyError, TypeError):
            return  # only resizes are understood
        if 0 < rows <= 1000 and 0 < cols <= 1000:
            _spawn(asyncio.to_thread(session.resize, rows, cols))

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.settings["broker"].limits.release_tty(self.hub_user)

    def on_close(self) -> None:
        self._uncount()
        session, self.session = self.session, None
        if session is not None:
            self.keys.put_nowait(None)
            _spawn(self._end(session))

    async def _end(self, session: EngineTty) -> None:
        """End the shell's session in the container, then the attach (which ends the pump thread)."""
        broker: Broker = self.settings["broker"]
        target = session.target
        for _ in range(20):  # the pid line comes first: an immediate close may not have it yet
            if session.pids.pid is not None:
                break
            await asyncio.sleep(0.1)
        if session.pids.pid:
            await end_session_async(broker.service, target.container, target.user, session.pids.pid)
        await asyncio.to_thread(session.close)
        log.info("broker: terminal for %s in %s %s closed", self.hub_user, target.kind, target.id)
