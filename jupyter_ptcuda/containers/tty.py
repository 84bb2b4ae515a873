"""Commands and shells in a container, at the interface level: which container and as whom
(:class:`ExecTarget`, :func:`resolve`, :func:`target_of`), one command (:func:`run_command`), and an
interactive shell (:class:`TtySession`, what a backend's ``open_tty`` returns).

The exec is always built here, from the container itself: its configured user (the kernel's ``uid:gid``),
its working directory (the notebook's folder) and its environment (so ``NVIDIA_VISIBLE_DEVICES`` is the
kernel's). A caller chooses only *which* kernel or job; never the command of a shell, the user or the
container.

:class:`EngineTty` is the Docker backend's shell: an exec with ``Tty`` and stdin attached over the
engine's own socket (the SDK's hijacked ``exec_start(socket=True)``), window size forwarded with
``exec_resize``. A Docker exec outlives its client, so the shell first reports its pid (``PTCUDA-PID n``,
:class:`PidLine`) and a hangup ends that shell's whole session in the container with a second exec
(:data:`KILL_SCRIPT`). The raw-mode terminal loop that drives a session is the CLI's
(:func:`jupyter_ptcuda.shell.interactive`).

Callers: the CLI (:mod:`jupyter_ptcuda.shell`), the server's terminals, the broker's ``/v1/tty`` and every
backend's ``open_tty``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import ConfigError, NotFound, PtcudaError
from . import labels as L
from .spec import ContainerSpec
from .types import ContainerState, ImageInfo


class ExecBackend(Protocol):
    """What the helpers here ask of a container backend (every backend has it): whether it can run commands
    in its containers (``no_exec``: None, or why not), finding a kernel's or job's container, its spec, exec."""

    no_exec: str | None

    async def find(self, kind: str, id: str) -> ContainerState: ...

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]: ...

    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]: ...


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


async def target_of(service: ExecBackend, state: ContainerState) -> ExecTarget:
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


async def resolve(service: ExecBackend, ident: str, kind: str | None = None) -> ExecTarget:
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


async def run_command(service: ExecBackend, target: ExecTarget, argv: list[str]) -> tuple[int, bytes]:
    """Run ``argv`` in the target's container as its user, in its folder; ``(exit code, output)``."""
    if not argv:
        raise ConfigError("give the command after --, e.g. `jupyter ptcuda exec KERNEL_ID -- nvidia-smi`")
    return await service.exec(target.container, argv, user=target.user, workdir=target.workdir,
                              env=dict(target.env) or None)


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
    """An interactive shell in a container, as :func:`jupyter_ptcuda.shell.interactive` drives it (blocking calls): a
    selectable byte stream plus window size, hangup and exit code. Made by a backend's ``open_tty``: over the
    engine's socket (:class:`EngineTty`) or, under JupyterHub, the broker's websocket
    (:mod:`jupyter_ptcuda.containers.remote.tty`)."""

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


async def end_session_async(service: ExecBackend, container: str, user: str, pid: int) -> None:
    """End every process of the shell's session ``pid`` in the container (an exec outlives its attach)."""
    with contextlib.suppress(PtcudaError):
        await service.exec(container, ["sh", "-c", KILL_SCRIPT, "sh", str(pid)], user=user)


def end_session_soon(target: ExecTarget, pid: int) -> None:
    """:func:`end_session` in a detached process: a terminal being closed gets SIGKILL a few tenths of a
    second after its hangup, sooner than an exec into the container takes."""
    import subprocess

    subprocess.Popen([sys.executable, "-m", "jupyter_ptcuda.shell", "end", target.container, target.user, str(pid)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, close_fds=True)
