"""A shell, or one command, inside a kernel's or job's container (``jupyter ptcuda shell|exec``, and the
process behind a JupyterLab "terminal in kernel container").

The exec is always built here, from the container itself: its configured user (the kernel's ``uid:gid``),
its working directory (the notebook's folder) and its environment (so ``NVIDIA_VISIBLE_DEVICES`` is the
kernel's). A caller chooses only *which* kernel or job; never the command of a shell, the user or the
container. The container is found with :meth:`ContainerService.find` and read with
:meth:`ContainerService.spec_of`; a command runs with :meth:`ContainerService.exec`.

The interactive shell needs a terminal. It is a Docker exec with ``Tty`` and stdin attached over the
engine's own socket (the SDK's hijacked ``exec_start(socket=True)``), bridged to this process's terminal
(raw mode, window size forwarded with ``exec_resize``), not the ``docker`` CLI: no docker binary is needed,
it talks to the engine the engine seam is configured for (``DOCKER_HOST``). Under JupyterHub the user's
server has no engine: :func:`open_tty` asks the broker instead (its ``/v1/tty`` websocket,
:mod:`jupyter_ptcuda.broker.tty`), which builds the same shell from the container it checked is the
user's, and ends its session when the websocket closes.

A Docker exec outlives its client (the engine keeps the process and its terminal when the attach
closes), so the shell first reports its pid (``PTCUDA-PID n``, read here and not shown) and, when this
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
import dataclasses
import os
import re
import select
import shlex
import signal
import socket
import sys
from typing import Any, Protocol

from .containers import labels as L
from .containers.service import ContainerService, ContainerState, get_service
from .errors import ConfigError, NotFound, PtcudaError

#: The container user's name when the image has none for its uid (a root server's 65533, a folder owner's
#: uid): bash would say "I have no name!" in its prompt, and getpass.getuser() would fail.
NAMELESS_USER = "ptcuda"
#: bash's hook for a command it cannot find: for nvidia-smi, why (no GPU in this container, or the runtime
#: did not mount the driver's tools) and what shows the GPUs instead.
NOT_FOUND_HANDLER = (
    '() { if [ "$1" = nvidia-smi ]; then '
    'case "${NVIDIA_VISIBLE_DEVICES:-void}" in void|none) false;; esac && '
    'echo "nvidia-smi: not in this container, which has GPUs ($NVIDIA_VISIBLE_DEVICES): the NVIDIA runtime mounts '
    'it only with NVIDIA_DRIVER_CAPABILITIES=utility (or all). From Python: torch.cuda.get_device_name(); the GPU '
    'panel shows every GPU." >&2 || '
    'echo "nvidia-smi: this container has no GPU (its kernel or job started without GPUs: gpus none, or on '
    'the CPU because the engine has no NVIDIA runtime). The GPU panel in JupyterLab shows the host'"'"'s GPUs." '
    '>&2; '
    'else echo "bash: $1: command not found" >&2; fi; return 127; }')
#: The shell: report our pid (the session id: Docker starts a tty exec in its own session), name a nameless
#: user (USER/LOGNAME and bash's prompt), then bash if the image has it (with the nvidia-smi hint), else sh.
SHELL_SCRIPT = ('printf "PTCUDA-PID %s\\n" "$$"; P=; '
                f'if ! id -un >/dev/null 2>&1; then export USER={NAMELESS_USER} LOGNAME={NAMELESS_USER}; '
                f"""P='PS1="{NAMELESS_USER}@\\h:\\w\\$ "'; fi; """
                'if command -v bash >/dev/null 2>&1; then exec env PROMPT_COMMAND="$P" '
                f'{shlex.quote("BASH_FUNC_command_not_found_handle%%=" + NOT_FOUND_HANDLER)} bash; fi; exec sh')
#: Ends every process of session $1 (SIGHUP, then SIGKILL): POSIX sh over /proc, no ps needed.
KILL_SCRIPT = r"""sid=$1; pids=
for d in /proc/[0-9]*; do
  { read -r line < "$d/stat"; } 2>/dev/null || continue
  set -- ${line##*) }
  [ "$4" = "$sid" ] && pids="$pids ${d#/proc/}"
done
[ -z "$pids" ] && exit 0
kill -HUP $pids 2>/dev/null; sleep 1; kill -KILL $pids 2>/dev/null; exit 0"""
PID_LINE = re.compile(rb"PTCUDA-PID (\d+)\r?\n")
#: Terminal types passed into the container (nothing else of this process's environment is).
TERM_DEFAULT = "xterm-256color"


@dataclasses.dataclass(frozen=True)
class ExecTarget:
    """The container a shell or command runs in, and as whom, where."""

    container: str  # full container id
    kind: str  # kernel | job
    id: str  # the kernel or job id
    user: str  # the container's configured user, "uid:gid"
    workdir: str  # its working directory
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # its init process's NVIDIA_*/CUDA_* variables


async def target_of(service: ContainerService, state: ContainerState) -> ExecTarget:
    """The exec target for a running container of ours: its configured user and working directory, and
    the GPU variables the engine's NVIDIA hook gave its processes (an exec does not inherit them: they are
    read from ``/proc/1/environ``, as the health check does)."""
    spec, _ = await service.spec_of(state.id)
    env: dict[str, str] = {}
    with contextlib.suppress(PtcudaError):
        code, raw = await service.exec(state.id, ["cat", "/proc/1/environ"], user=spec.user)
        if code == 0:
            pairs = (item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)
            env = {k: v for k, v in pairs if k.startswith(("NVIDIA_", "CUDA_"))}
    return ExecTarget(container=state.id, kind=state.tag.kind, id=state.tag.id, user=spec.user,
                      workdir=spec.workdir or "/", env=env)


async def resolve(service: ContainerService, ident: str, kind: str | None = None) -> ExecTarget:
    """The running container of kernel or job ``ident`` (a unique prefix will do from the CLI); NotFound
    saying how to list them. ``kind``: only look for that kind. Called by the CLI and the server."""
    if service.no_exec:
        raise ConfigError(service.no_exec)
    if not ident or not isinstance(ident, str):
        raise ConfigError("give the id of a running kernel or job (`jupyter ptcuda jobs list`, "
                          "`docker ps --filter label=io.jupyter-ptcuda.kind=kernel`)")
    errors: list[str] = []
    for k in (kind,) if kind else (L.KERNEL, L.JOB):
        try:
            state = await service.find(k, ident)
        except NotFound as exc:
            errors.append(exc.message)
            continue
        return await target_of(service, state)
    if kind:
        raise NotFound(errors[0])
    raise NotFound(f"no running kernel or job {ident!r}: {errors[0]}")


async def run_command(service: ContainerService, target: ExecTarget, argv: list[str]) -> tuple[int, bytes]:
    """Run ``argv`` in the target's container as its user, in its folder; ``(exit code, output)``."""
    if not argv:
        raise ConfigError("give the command after --, e.g. `jupyter ptcuda exec KERNEL_ID -- nvidia-smi`")
    return await service.exec(target.container, argv, user=target.user, workdir=target.workdir,
                              env=dict(target.env) or None)


# -- the interactive attach --------------------------------------------------------------------------
class PidLine:
    """Takes the shell's first line (``PTCUDA-PID n``, see :data:`SHELL_SCRIPT`) out of its output and
    keeps the pid: the session to end when the terminal is closed. Used here and by the broker."""

    def __init__(self) -> None:
        self.pid: int | None = None  # None: not seen yet; 0: never came (4 KiB without it)
        self._head = b""

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` is to be shown (b"" while the pid line is still awaited)."""
        if self.pid is not None:
            return data
        self._head += data
        m = PID_LINE.search(self._head)
        if m is None:
            if len(self._head) < 4096:
                return b""
            data, self._head, self.pid = self._head, b"", 0
            return data
        self.pid = int(m.group(1))
        data, self._head = self._head[: m.start()] + self._head[m.end():], b""
        return data

    def flush(self) -> bytes:
        data, self._head = self._head, b""
        return data


class TtySession(Protocol):
    """An interactive shell in a container, as :func:`interactive` drives it (blocking calls): a
    selectable byte stream plus window size, hangup and exit code. Made by :func:`open_tty`: over the
    engine's socket (:class:`EngineTty`) or, under JupyterHub, the broker's websocket
    (:mod:`jupyter_ptcuda.containers.remote_tty`)."""

    def fileno(self) -> int: ...

    def read(self) -> bytes | None:
        """The shell's output so far (b"": nothing to show yet), None once it has ended."""

    def send(self, data: bytes) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def hang_up(self) -> None:
        """The terminal was closed: end the shell's whole session in the container."""

    def close(self) -> None: ...

    def exit_code(self) -> int:
        """The shell's exit status, once :meth:`read` returned None."""


class EngineTty:
    """A Docker exec with ``Tty`` and stdin attached over the engine's socket (the SDK's hijacked
    ``exec_start(socket=True)``). The shell is always :data:`SHELL_SCRIPT`, as the target's user, in its
    folder, with its GPU variables and ``TERM``: nothing else. Blocking: the CLI's and a terminal's
    process call it directly; the broker from threads of its own."""

    def __init__(self, engine: Any, target: ExecTarget, exec_id: str, sock: Any) -> None:
        self.engine = engine
        self.target = target
        self.exec_id = exec_id
        self.sock = sock
        self.raw: socket.socket = getattr(sock, "_sock", sock)
        self.pids = PidLine()
        self.on_hang_up = end_session_soon  # the broker ends the session itself (see broker.tty)

    @classmethod
    def open(cls, engine: Any, target: ExecTarget, term: str = TERM_DEFAULT,
             size: tuple[int, int] | None = None) -> EngineTty:
        def start(api: Any) -> tuple[str, Any]:
            ex = api.exec_create(target.container, ["sh", "-c", SHELL_SCRIPT], stdin=True, tty=True,
                                 user=target.user, workdir=target.workdir,
                                 environment={**target.env, "TERM": term})
            return ex["Id"], api.exec_start(ex["Id"], tty=True, socket=True)

        exec_id, sock = engine.run_sync(start, what=f"a shell in {target.kind} {target.id}")
        session = cls(engine, target, exec_id, sock)
        if size:
            session.resize(*size)
        return session

    def fileno(self) -> int:
        return self.raw.fileno()

    def read(self) -> bytes | None:
        try:
            data = self.raw.recv(65536)
        except OSError:
            data = b""
        if not data:
            return self.pids.flush() or None
        return self.pids.feed(data)

    def send(self, data: bytes) -> None:
        self.raw.sendall(data)

    def resize(self, rows: int, cols: int) -> None:
        with contextlib.suppress(PtcudaError):
            self.engine.run_sync(lambda api: api.exec_resize(self.exec_id, height=rows, width=cols))

    def hang_up(self) -> None:
        if self.pids.pid:
            self.on_hang_up(self.target, self.pids.pid)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in read()
        with contextlib.suppress(OSError):
            self.sock.close()

    def exit_code(self) -> int:
        info = self.engine.run_sync(lambda api: api.exec_inspect(self.exec_id))
        code = info.get("ExitCode")
        return int(code) if code is not None else 0


def open_tty(service: ContainerService, target: ExecTarget, term: str = TERM_DEFAULT,
             size: tuple[int, int] | None = None) -> TtySession:
    """The target's shell with a terminal, as the service opens one (:meth:`ContainerService.open_tty`): over
    this process's engine (Docker), the JupyterHub broker's websocket
    (:class:`~jupyter_ptcuda.containers.remote.RemoteContainerService`), or a ConfigError saying what to use
    instead (Kubernetes). Blocking. ``term``/``size``: the client terminal's type and ``(rows, cols)``."""
    return service.open_tty(target, term=term, size=size)


async def end_session_async(service: ContainerService, container: str, user: str, pid: int) -> None:
    """End every process of the shell's session ``pid`` in the container (an exec outlives its attach)."""
    with contextlib.suppress(PtcudaError):
        await service.exec(container, ["sh", "-c", KILL_SCRIPT, "sh", str(pid)], user=user)


def end_session(service: ContainerService, container: str, user: str, pid: int) -> None:
    asyncio.run(end_session_async(service, container, user, pid))


def end_session_soon(target: ExecTarget, pid: int) -> None:
    """:func:`end_session` in a detached process: a terminal being closed gets SIGKILL a few tenths of a
    second after its hangup, sooner than an exec into the container takes."""
    import subprocess

    subprocess.Popen([sys.executable, "-m", "jupyter_ptcuda.shell", "end", target.container, target.user, str(pid)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, close_fds=True)


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
    ``... end CONTAINER_ID USER PID``: end a closed terminal's shell session (see :func:`end_session_soon`)."""
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
