"""Attacks on kernels by other local users, on the real engine with a root server.

The attackers are real Unix accounts: a new user, and the account holding uid 1000 (the first human
user on most hosts, and the uid kernels of a root server used to run as). The notebook folder belongs
to a third account, whose kernel it is. An attacker gets every address of the kernel (the worst case:
it guessed them), searches the places a key could be, and listens on iopub while the kernel prints a
secret. With the default transport and with ``network_mode = "shared"`` nothing may reach it.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from tests.conftest import ours
from tests.integration.test_kernel import run, started
from tests.security.conftest import UnixUser, as_user

pytestmark = pytest.mark.integration


@pytest.fixture
def first_human(unix_user) -> UnixUser:
    """The account holding uid 1000 (made for the test when no account holds it)."""
    import pwd

    try:
        pw = pwd.getpwuid(1000)
    except KeyError:
        subprocess.run(["useradd", "-M", "-u", "1000", "-g", "users", "ptsec1000"], check=True)
        pw = pwd.getpwnam("ptsec1000")
        yield UnixUser(pw.pw_name, 1000, 100)
        subprocess.run(["userdel", "-f", "ptsec1000"], capture_output=True)
        return
    yield UnixUser(pw.pw_name, 1000, pw.pw_gid)


def kernel_pids(container_id: str) -> list[int]:
    pids = []
    for cg in glob.glob("/proc/[0-9]*/cgroup"):
        try:
            if container_id in Path(cg).read_text():
                pids.append(int(cg.split("/")[2]))
        except OSError:
            continue
    return pids


def search_for_key(places: list[str], key: str, pids: list[int], kernel_id: str) -> list[str]:
    """Attacker: every readable file that holds the key (connection files, /proc of the kernel). It
    knows the kernel's id, so folders it may traverse but not list are tried by name too."""
    found = []
    candidates = []
    for top in places:
        candidates += [f"{top}/{kernel_id}/kernel.json", f"{top}/ptcuda/{kernel_id}/kernel.json",
                       f"{top}/kernel-{kernel_id}.json"]
        for root, _dirs, files in os.walk(top, onerror=lambda e: None):
            candidates += [os.path.join(root, f) for f in files]
    for pid in pids:
        candidates += [f"/proc/{pid}/environ", f"/proc/{pid}/cmdline", f"/proc/{pid}/root/run/ptcuda/kernel.json"]
    for path in candidates:
        try:
            if not path.startswith("/proc/") and not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, "rb") as f:
                if key.encode() in f.read(1 << 20):
                    found.append(path)
        except OSError:
            continue
    return found


def listen_iopub(url: str, seconds: float) -> list[str]:
    """Attacker: subscribe to the kernel's iopub (needs no key) and collect what it publishes."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            got.append(b"".join(sock.recv_multipart()).decode("utf-8", "replace"))
    sock.close()
    ctx.term()
    return got


def iopub_url(km: AsyncKernelManager) -> str:
    if km.transport == "ipc":
        return f"ipc://{km.ip}-{km.iopub_port}"
    return f"tcp://127.0.0.1:{km.iopub_port}"


@pytest.mark.parametrize("config", [{}, {"network_mode": "shared"}], ids=["default", "shared"])
async def test_other_users_cannot_reach_a_kernel(kernelspec, notebook_dir, engine, unix_user, first_human, config):
    alice = unix_user()
    os.chown(notebook_dir, alice.uid, alice.gid)
    mallory = unix_user()
    km, kc = await started(kernelspec(**config), notebook_dir)
    try:
        key = km.session.key.decode()
        secret = "TOPSECRET-" + uuid.uuid4().hex
        status, kernel_uid = await run(kc, "import os; print(os.getuid())")
        pids = kernel_pids(km.provisioner.container_id)
        assert pids
        # where kernel files are, and were: the runtime dir, the private folder, old ipc folders in /tmp
        places = [os.environ.get("JUPYTER_RUNTIME_DIR", "/nonexistent"), "/run/jupyter-ptcuda",
                  *glob.glob("/tmp/jupyter-ptcuda-*")]
        url = iopub_url(km)
        for attacker in (mallory, first_human):
            assert search_for_key(places, key, pids, km.kernel_id), "the server's own view finds the key (the search works)"
            assert as_user(attacker, lambda: search_for_key(places, key, pids, km.kernel_id)) == [], \
                f"{attacker.name} (uid {attacker.uid}) read the kernel's key"
            listening = asyncio.ensure_future(asyncio.to_thread(as_user, attacker, lambda: listen_iopub(url, 4.0)))
            await asyncio.sleep(1.0)
            status, out = await run(kc, f"print({secret!r})")
            assert out.strip() == secret
            heard = await listening
            assert not any(secret in m for m in heard), f"{attacker.name} read the kernel's output on iopub"
        assert kernel_uid.strip() == str(alice.uid), "the kernel runs as the notebook folder's owner"
        # and nothing is published: no docker-proxy command line shows a kernel port
        proxies = subprocess.run(["pgrep", "-a", "docker-proxy"], capture_output=True, text=True).stdout
        assert not any(str(getattr(km, p)) in proxies for p in ("shell_port", "iopub_port", "hb_port")
                       if km.transport == "tcp")
        info = await engine.inspect(km.provisioner.container_id)
        assert not info["HostConfig"]["PortBindings"]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        if config.get("network_mode") == "shared":
            from jupyter_ptcuda.containers.docker.netns import remove_holder

            await remove_holder(DockerContainerService(engine))


async def test_a_kernel_without_a_path_mounts_no_host_folder(kernelspec, engine, tmp_path, monkeypatch):
    """No cwd given (an API client starting a kernel): the server's cwd is not mounted, read or written."""
    server_cwd = tmp_path / "server-cwd"
    server_cwd.mkdir()
    (server_cwd / "other-kernel.json").write_text('{"key": "not-for-you"}')
    monkeypatch.chdir(server_cwd)
    km = AsyncKernelManager(kernel_name=kernelspec())
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=90)
        info = await engine.inspect(km.provisioner.container_id)
        sources = [m["Source"] for m in info["Mounts"] if m["Type"] == "bind"]
        assert not any(s == str(server_cwd) or str(server_cwd).startswith(s.rstrip("/") + "/") for s in sources)
        status, out = await run(kc, f"import os; print(os.path.exists({str(server_cwd / 'other-kernel.json')!r}))")
        assert out.strip() == "False"
        status, out = await run(kc, "import os; print(os.getcwd(), os.access(os.getcwd(), os.W_OK))")
        assert out.split()[1] == "True"  # it works in its private HOME
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


SIGKILLED_SERVER = r"""
import asyncio, json, os, sys
from jupyter_client.manager import AsyncKernelManager

async def main():
    km = AsyncKernelManager(kernel_name=sys.argv[1])
    await km.start_kernel(cwd=sys.argv[2])
    print(json.dumps({"kernel_id": km.kernel_id, "connection_file": km.connection_file,
                      "ip": km.ip, "transport": km.transport}), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_connection_files_of_a_sigkilled_server_are_removed_at_the_next_start(kernelspec, notebook_dir,
                                                                                    engine):
    """A server SIGKILLed with a kernel running leaves its key on disk; the next sweep removes it."""
    name = kernelspec()
    proc = subprocess.Popen([sys.executable, "-c", SIGKILLED_SERVER, name, str(notebook_dir)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        started_kernel = json.loads(line)
    finally:
        proc.kill()
        proc.wait()
    conn = Path(started_kernel["connection_file"])
    assert conn.exists(), "the dead server's connection file (with its key) is still there"
    left = [Path(started_kernel["ip"]).parent] if started_kernel["transport"] == "ipc" else []
    assert all(p.exists() for p in left)
    # what a server runs when it starts (and `jupyter ptcuda reap`)
    out = subprocess.run(["jupyter-ptcuda", "reap"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert started_kernel["kernel_id"] in out.stdout
    assert not conn.exists(), "the key of a dead server's kernel is still on disk"
    assert not any(p.exists() for p in left)
    assert [c for c in ours(engine, kernel_id=started_kernel["kernel_id"])] == []
