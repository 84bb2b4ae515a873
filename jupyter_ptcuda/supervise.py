"""The kernel container's supervisor: runs the kernel, forwards signals to it, and restarts it in place.

Placed in the container (``/run/ptcuda/supervise.py``, never in a job) and run as its command under the
init process: ``python -I -S supervise.py CONTROL_DIR -- KERNEL ARGV...``. ``CONTROL_DIR`` is the
kernel's private ipc folder (bind-mounted at the same path), shared with the server:

- the server creates ``restart`` there just after asking the kernel to shut down for a restart;
- when the kernel process ends, the supervisor writes ``ended-<n>`` (n = 0, 1, ... per kernel process;
  it holds the exit code),
  then, if ``restart`` is there, removes it, writes ``restarting-<n>`` and starts the kernel again at
  once, in the same container — a restart costs a kernel start, not a container's teardown and start;
- otherwise it exits with the kernel's exit code (128 + N for a signal), and the container ends.

SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to the kernel (interrupt, terminate).
Standard library only, no annotations: it runs on whatever Python the image has.
"""

import os
import signal
import sys

FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def _touch(path, text=""):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _run(argv, state):
    """Start the kernel (fork + exec: no subprocess import, the supervisor starts in milliseconds) and wait
    for it; its exit code, 128 + N for signal N."""
    pid = os.fork()
    if pid == 0:
        for name in FORWARDED:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    state["pid"] = pid
    _, status = os.waitpid(pid, 0)  # retried by Python when a forwarded signal interrupts it
    state["pid"] = None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(argv):
    control, argv = argv[0], argv[2:]
    state = {"pid": None}

    def forward(signum, _frame):
        if state["pid"] is not None:
            try:
                os.kill(state["pid"], signum)
            except ProcessLookupError:
                pass

    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    n = 0
    while True:
        code = _run(argv, state)
        code = code if code >= 0 else 128 - code
        _touch(os.path.join(control, f"ended-{n}"), str(code))
        try:
            os.unlink(os.path.join(control, "restart"))
        except FileNotFoundError:
            return code
        _touch(os.path.join(control, f"restarting-{n}"))
        n += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
