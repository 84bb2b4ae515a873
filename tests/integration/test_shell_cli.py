"""``jupyter ptcuda exec|shell`` into a real kernel container (started by jupyter_client, real engine)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import pytest_asyncio

from tests.integration.conftest import started

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "jupyter_ptcuda.cli"]
KERNEL_UID = "1000" if os.geteuid() == 0 else str(os.getuid())


async def cli(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [*CLI, *args], capture_output=True, text=True, timeout=60)


def top(cid: str) -> str:
    """The container's processes, as the engine lists them (``docker top``)."""
    return subprocess.run(["docker", "top", cid, "-eo", "pid,args"], capture_output=True, text=True).stdout


def read_until(proc, needle: str, timeout: float = 30) -> str:
    import select

    out, deadline = "", time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        if not select.select([proc.fd], [], [], 0.5)[0]:
            continue
        try:
            out += proc.read(4096).decode(errors="replace")
        except EOFError:
            break
    return out


@pytest_asyncio.fixture
async def kernel(kernelspec, notebook_dir):
    km, kc = await started(kernelspec(), notebook_dir)
    try:
        yield km
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        from jupyter_ptcuda.provisioner import drain_removals

        await drain_removals()


async def test_exec_passes_the_exit_code_and_runs_as_the_kernel_in_its_folder(kernel, notebook_dir):
    kid = kernel.kernel_id
    r = await cli("exec", kid, "--", "sh", "-c", "id -u; pwd; cat /etc/hostname; echo oops >&2; exit 7")
    assert r.returncode == 7, r.stderr
    # the engine copies the command's stdout and stderr in two streams: "oops" may come before the rest
    uid, cwd, host = [word for word in r.stdout.split() if word != "oops"][:3]
    assert uid == KERNEL_UID and cwd == str(notebook_dir)
    assert host == kernel.provisioner.container_id[:12]  # the container's hostname, not this machine's
    assert "oops" in r.stdout  # stderr is passed on too

    ok = await cli("exec", kid[:8], "--", "true")  # a unique prefix of the id will do
    assert ok.returncode == 0, ok.stderr

    missing = await cli("exec", kid, "--", "no-such-command-xyz")
    assert missing.returncode != 0

    unknown = await cli("exec", "f" * 32, "--", "true")
    assert unknown.returncode == 1
    assert "no running kernel or job" in unknown.stderr and "Traceback" not in unknown.stderr

    empty = await cli("exec", kid)
    assert empty.returncode == 1 and "give the command after --" in empty.stderr


async def test_shell_is_interactive_and_returns_the_shells_status(kernel, notebook_dir):
    from ptyprocess import PtyProcess

    proc = await asyncio.to_thread(PtyProcess.spawn, [*CLI, "shell", kernel.kernel_id], dimensions=(30, 123))
    try:
        proc.write(b"echo uid=$(id -u) cols=$(tput cols) dir=$PWD; exit 3\r")
        out = await asyncio.to_thread(read_until, proc, "exit\r\n", 30)
        await asyncio.to_thread(proc.wait)
    finally:
        if proc.isalive():
            proc.kill(signal.SIGKILL)
    assert f"uid={KERNEL_UID}" in out and f"dir={notebook_dir}" in out, out
    assert "123" in out  # this terminal's size reached the container's
    assert "PTCUDA-PID" not in out  # the shell's pid line is ours, not shown
    assert proc.exitstatus == 3


async def test_shell_hangup_ends_the_exec_in_the_container(kernel):
    from ptyprocess import PtyProcess

    cid = kernel.provisioner.container_id
    proc = await asyncio.to_thread(PtyProcess.spawn, [*CLI, "shell", kernel.kernel_id])
    try:
        proc.write(b"sleep 4321\r")
        deadline = time.monotonic() + 30
        while "sleep 4321" not in top(cid) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert "sleep 4321" in top(cid)
        proc.kill(signal.SIGHUP)  # the terminal is closed
        await asyncio.to_thread(proc.wait)
    finally:
        if proc.isalive():
            proc.kill(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while ("sleep 4321" in top(cid) or "bash" in top(cid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert "sleep 4321" not in top(cid) and "bash" not in top(cid), top(cid)
    assert kernel.provisioner.container_id == cid and await kernel.is_alive()  # the kernel is untouched


async def test_shell_needs_a_terminal(kernel):
    r = await cli("shell", kernel.kernel_id)
    assert r.returncode == 1 and "needs a terminal" in r.stderr and "jupyter ptcuda exec" in r.stderr
