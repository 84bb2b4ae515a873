"""A shell, or one command, inside a kernel's or job's container (``jupyter ptcuda shell|exec``, and the
process behind a JupyterLab "terminal in kernel container").

The exec is always built here, from the container itself: its configured user (the kernel's ``uid:gid``),
its working directory (the notebook's folder) and its environment (so ``NVIDIA_VISIBLE_DEVICES`` is the
kernel's). A caller chooses only *which* kernel or job; never the command of a shell, the user or the
container. Which container and as whom, and the shell session types, are the container layer's
(:mod:`jupyter_ptcuda.containers.tty`); this module is the CLI over them and the raw-mode terminal loop.

The interactive shell needs a terminal. It is a Docker exec with ``Tty`` and stdin attached over the
engine's own socket (the SDK's hijacked ``exec_start(socket=True)``), bridged to this process's terminal
(raw mode, window size forwarded with ``exec_resize``), not the ``docker`` CLI: no docker binary is needed,
it talks to the engine the engine seam is configured for (``DOCKER_HOST``). Under JupyterHub the user's
server has no engine: :func:`open_tty` asks the broker instead (its ``/v1/tty`` websocket,
:mod:`jupyter_ptcuda.broker.tty`), which builds the same shell from the container it checked is the
user's, and ends its session when the websocket closes.

A Docker exec outlives its client (the engine keeps the process and its terminal when the attach
closes), so the shell first reports its pid (``PTCUDA-PID n``, read and not shown) and, when this
process is told to hang up (SIGHUP/SIGTERM: the terminal was closed) it ends that shell's whole session
in the container with a second exec (SIGHUP, then SIGKILL). When the container goes (kernel shut down),
the attach ends, and so does this process.

Usage as a module (what the server's terminal runs; arguments built by the server, never by a client)::

    python -m jupyter_ptcuda.shell attach CONTAINER_ID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import sys
from typing import Any

from .containers import labels as L
from .containers.base import ContainerService
from .containers.factory import get_service
from .containers.tty import (  # re-exported: the broker's tty imports some of these from here
    KILL_SCRIPT,
    PID_LINE,
    SHELL_SCRIPT,
    TERM_DEFAULT,
    EngineTty,
    ExecTarget,
    PidLine,
    TtySession,
    end_session_async,
    end_session_soon,
    resolve,
    run_command,
    target_of,
)
from .errors import ConfigError, NotFound, PtcudaError

__all__ = ["KILL_SCRIPT", "PID_LINE", "SHELL_SCRIPT", "TERM_DEFAULT", "EngineTty", "ExecTarget", "PidLine",
           "TtySession", "end_session", "end_session_async", "end_session_soon", "interactive", "open_tty",
           "register", "resolve", "run_command", "target_of"]


# -- the interactive attach --------------------------------------------------------------------------
def open_tty(service: ContainerService, target: ExecTarget, term: str = TERM_DEFAULT,
             size: tuple[int, int] | None = None) -> TtySession:
    """The target's shell with a terminal, as the service opens one (:meth:`ContainerService.open_tty`): over
    this process's engine (Docker), the JupyterHub broker's websocket
    (:class:`~jupyter_ptcuda.containers.remote.service.RemoteContainerService`), or a ConfigError saying what to use
    instead (Kubernetes). Blocking. ``term``/``size``: the client terminal's type and ``(rows, cols)``."""
    return service.open_tty(target, term=term, size=size)


def end_session(service: ContainerService, container: str, user: str, pid: int) -> None:
    asyncio.run(end_session_async(service, container, user, pid))


def _winsize(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def interactive(service: ContainerService, target: ExecTarget, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """A shell in the target's container on this process's terminal; its exit status (129 after a hangup)."""
    if not os.isatty(stdin_fd):
        raise ConfigError("`jupyter ptcuda shell` needs a terminal; for a command without one use "
                          "`jupyter ptcuda exec ID -- CMD ...`")
    term = os.environ.get("TERM") or TERM_DEFAULT
    session = open_tty(service, target, term, _winsize(stdin_fd))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    events: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        events.append("winch" if signum == signal.SIGWINCH else "hangup")
        with contextlib.suppress(OSError):
            os.write(wake_w, b"x")

    # SIGINT too: in raw mode a typed ^C is a byte for the shell, so a SIGINT comes from whoever closes us
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    import termios
    import tty

    saved = termios.tcgetattr(stdin_fd)
    hung_up = False
    try:
        tty.setraw(stdin_fd, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
        stdin_open = True
        while True:
            fds: list[Any] = [session, wake_r] + ([stdin_fd] if stdin_open else [])
            try:
                ready, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                os.read(wake_r, 1024)
                if "hangup" in events:
                    hung_up = True
                    break
                events.clear()
                if size := _winsize(stdin_fd):
                    session.resize(*size)
            if session in ready:
                data = session.read()
                if data is None:
                    break
                if data:
                    os.write(stdout_fd, data)
            if stdin_open and stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    stdin_open = False
                    continue
                session.send(data)
    finally:
        if hung_up:
            session.hang_up()
        with contextlib.suppress(termios.error):
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
        session.close()
    return 129 if hung_up else session.exit_code()


# -- CLI ---------------------------------------------------------------------------------------------
def cmd_shell(args: argparse.Namespace) -> int:
    service = get_service()
    target = asyncio.run(resolve(service, args.id))
    return interactive(service, target)


def cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    service = get_service()
    target = asyncio.run(resolve(service, args.id))
    code, out = asyncio.run(run_command(service, target, argv))
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shell`` and ``exec`` to the ``jupyter ptcuda`` sub-commands (called by ``jupyter_ptcuda.cli``)."""
    s = sub.add_parser("shell", help="an interactive shell in a running kernel's or job's container",
                       description="bash (or sh) in the container, as the kernel's user, in its folder")
    s.add_argument("id", metavar="KERNEL_ID|JOB_ID", help="a running kernel or job (a unique prefix will do)")
    s.set_defaults(func=cmd_shell)
    e = sub.add_parser("exec", help="run one command in a running kernel's or job's container; its exit code",
                       usage="jupyter ptcuda exec KERNEL_ID|JOB_ID -- CMD [ARG ...]",
                       description="Runs CMD in the container as the kernel's user, in its folder, without a "
                                   "terminal; prints its output (stdout and stderr) and exits with its code.")
    e.add_argument("id", metavar="KERNEL_ID|JOB_ID", help="a running kernel or job (a unique prefix will do)")
    e.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_exec)


def _attach_main(argv: list[str]) -> int:
    """``python -m jupyter_ptcuda.shell attach CONTAINER_ID``: the process of a server terminal;
    ``... end CONTAINER_ID USER PID``: end a closed terminal's shell session (see :func:`.containers.tty.end_session_soon`)."""
    if argv[:1] == ["end"] and len(argv) == 4:
        end_session(get_service(), argv[1], argv[2], int(argv[3]))
        return 0
    p = argparse.ArgumentParser(prog="python -m jupyter_ptcuda.shell")
    p.add_argument("action", choices=["attach"])
    p.add_argument("container")
    args = p.parse_args(argv)
    service = get_service()
    try:
        state = asyncio.run(service.inspect(args.container))
        if state is None or not state.running or state.tag.kind not in (L.KERNEL, L.JOB):
            raise NotFound(f"container {args.container[:12]} is not a running kernel or job any more.")
        return interactive(service, asyncio.run(target_of(service, state)))
    except PtcudaError as exc:
        print(f"jupyter ptcuda: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_attach_main(sys.argv[1:]))
