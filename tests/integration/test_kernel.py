"""Kernels in containers, driven by jupyter_client against the real engine."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.errors import ImageNotFound, ImageNotReady, LaunchError, NoNvidiaRuntime, RegistryError
from tests.conftest import DEBIAN_BASE, ours
from tests.integration.conftest import hook_engine, started

pytestmark = pytest.mark.integration


async def run(kc, code: str, timeout: float = 60) -> tuple[str, str]:
    """Execute code; (status, stdout text)."""
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(msg["content"]["ename"])

    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"]["status"], "".join(out)


async def test_kernel_lifecycle(kernelspec, notebook_dir, engine):
    """Start, torch, files owned by the user, interrupt, restart, shutdown — nothing left behind."""
    (notebook_dir / "input.txt").write_text("from the host\n")
    km, kc = await started(kernelspec(), notebook_dir)
    try:
        status, out = await run(kc, "import torch, os; print(torch.__version__); print(os.getcwd())")
        assert status == "ok"
        assert "2.13.0" in out and str(notebook_dir) in out

        status, out = await run(kc, "print(open('input.txt').read().strip()); open('written.txt','w').write('ok')")
        assert out.strip() == "from the host"
        written = notebook_dir / "written.txt"
        assert written.read_text() == "ok"
        assert (written.stat().st_uid, written.stat().st_gid) == ((1000, 100) if os.geteuid() == 0 else (os.getuid(), os.getgid()))

        # interrupt a long sleep (signal mode, through the init process)
        msg_id = kc.execute("import time; time.sleep(600)")
        await asyncio.sleep(1.5)
        t0 = time.monotonic()
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=20)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - t0 < 10

        # restart: state is gone, same ports, still works; a kernel that ends cleanly restarts in its
        # container (a new kernel process, the same container); one that is killed gets a new container
        ports = (km.shell_port, km.iopub_port, km.hb_port)
        cid = km.provisioner.container_id
        _, pid = await run(kc, "import os; marker = 42; print(os.getpid())")
        await km.restart_kernel()
        await kc.wait_for_ready(timeout=90)
        assert (km.shell_port, km.iopub_port, km.hb_port) == ports
        assert km.provisioner.container_id == cid
        status, out = await run(kc, "import os; print('marker' in globals(), os.getpid() != " + pid.strip() + ")")
        assert out.strip() == "False True"
        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=90)
        assert km.provisioner.container_id != cid
        status, out = await run(kc, "print('marker' in globals())")
        assert status == "ok" and out.strip() == "False"
        info = await km.provisioner.get_provisioner_info()
        assert info["container_id"] == km.provisioner.container_id
        from jupyter_ptcuda.provisioner import DockerProvisioner

        adopted = DockerProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)
        await adopted.load_provisioner_info(info)  # e.g. another process re-adopting the kernel
        assert adopted.container_id == km.provisioner.container_id and await adopted.poll() is None
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    assert not await km.is_alive()
    from jupyter_ptcuda.provisioner import drain_removals

    await drain_removals()  # the container is removed just after the shutdown returns
    assert ours(engine, kind="kernel", kernel_id=km.kernel_id) == []


async def test_message_interrupt_and_kill(kernelspec, notebook_dir, engine):
    km, kc = await started(kernelspec(interrupt_mode="message"), notebook_dir)
    try:
        kc.execute("import time; time.sleep(600)")
        await asyncio.sleep(1.5)
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=20)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)  # kill path
    assert ours(engine, kernel_id=km.kernel_id) == []


async def test_hardening(kernelspec, notebook_dir, engine, monkeypatch, caplog):
    """tcp: loopback-only ports; always: non-root, no caps, no-new-privileges, no socket, env allowlist, the
    key not logged and not in any host file the kernel's uid may read (it is placed in the container)."""
    monkeypatch.setenv("JUPYTER_TOKEN_SECRET_TEST", "s3cr3t-token")
    monkeypatch.setenv("LANG", "C.UTF-8")
    caplog.set_level(logging.DEBUG)
    km, kc = await started(kernelspec(mem_limit="2g", cpus=1, transport="tcp"), notebook_dir)
    try:
        info = await engine.inspect(km.provisioner.container_id)
        hc = info["HostConfig"]
        bindings = [b for v in hc["PortBindings"].values() for b in v]
        assert len(bindings) == 5 and {b["HostIp"] for b in bindings} == {"127.0.0.1"}
        published = [b for v in (info["NetworkSettings"]["Ports"] or {}).values() for b in (v or [])]
        assert published and {b["HostIp"] for b in published} == {"127.0.0.1"}
        assert info["Config"]["User"] not in ("", "0", "root", "0:0")
        assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
        assert "no-new-privileges:true" in hc["SecurityOpt"]
        assert not hc["Privileged"] and hc["Init"] is True
        assert hc["Memory"] == 2 * 1024**3 and hc["NanoCpus"] == 10**9
        assert hc["ShmSize"] >= 1024**3
        mounts = [m["Source"] for m in info["Mounts"]]
        assert not any("docker.sock" in m for m in mounts)
        assert mounts == [str(notebook_dir)]  # the connection file is not mounted from the host
        status, out = await run(kc, "import os, stat; s = os.stat('/run/ptcuda/kernel.json');"
                                    "print(s.st_uid == os.getuid(), oct(s.st_mode & 0o777))")
        assert out.split() == ["True", "0o400"]
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])
        assert "JUPYTER_TOKEN_SECRET_TEST" not in env and env["LANG"] == "C.UTF-8"
        status, out = await run(kc, "import os; print(os.getuid(), os.environ.get('JUPYTER_TOKEN_SECRET_TEST'));"
                                    "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
        uid, secret, capeff = out.split()
        assert uid != "0" and secret == "None" and int(capeff, 16) == 0
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()
    key = km.session.key.decode()
    assert key and key not in caplog.text


@pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")
@pytest.mark.parametrize("gpus, visible", [("all", "all"), (["1"], "1"), (["0", "1"], "0,1")])
async def test_gpu_request_reaches_container(kernelspec, notebook_dir, gpus, visible):
    km, kc = await started(kernelspec(gpus=gpus), notebook_dir)
    try:
        status, out = await run(kc, "import os; print(os.environ.get('NVIDIA_VISIBLE_DEVICES'))")
        assert out.strip() == visible
        info = await km.provisioner.service.engine.inspect(km.provisioner.container_id)
        assert info["Config"]["Labels"]["io.jupyter-ptcuda.gpus"] == (visible if gpus != "all" else "all")
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.no_nvidia_runtime
async def test_no_nvidia_runtime_is_a_clear_error(kernelspec, notebook_dir, engine):
    km = AsyncKernelManager(kernel_name=kernelspec(gpus="all"))
    with pytest.raises(NoNvidiaRuntime) as err:
        await km.start_kernel(cwd=str(notebook_dir))
    assert "NVIDIA Container Toolkit" in str(err.value) and "gpu_fallback" in str(err.value)
    assert ours(engine, kernel_id=km.kernel_id) == []  # the refused (Created) container is gone


@pytest.mark.no_nvidia_runtime
async def test_no_nvidia_runtime_cpu_fallback(kernelspec, notebook_dir, engine, caplog, notices_board):
    caplog.set_level(logging.WARNING)
    km, kc = await started(kernelspec(gpus="all", gpu_fallback="cpu"), notebook_dir)
    try:
        status, out = await run(kc, "import os, torch; print(os.environ.get('NVIDIA_VISIBLE_DEVICES'), torch.cuda.is_available())")
        assert out.split() == ["None", "False"]
        assert "WITHOUT GPUs" in caplog.text
        # JupyterLab tells the user once, with why and what to install
        told = [n for n in notices_board.since(0) if n["kind"] == "gpu_fallback"]
        assert len(told) == 1 and told[0]["kernel_id"] == km.kernel_id
        assert "runs on the CPU" in told[0]["message"] and "NVIDIA Container Toolkit" in told[0]["message"]
        assert km.provisioner.fell_back
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def test_unknown_image(kernelspec, notebook_dir, engine, notices_board):
    km = AsyncKernelManager(kernel_name=kernelspec(image="jupyter-ptcuda/does-not-exist:1", pull_policy="missing"))
    with pytest.raises((ImageNotFound, RegistryError)) as err:  # RegistryError: no registry reachable here
        await km.start_kernel(cwd=str(notebook_dir))
    assert "jupyter ptcuda image build" in str(err.value) or "registry" in str(err.value)
    # the kernel-start notice said it was being pulled, then (the same notice) why it did not start: the fix that
    # needs no registry first, then the pull's own reason
    told = [n for n in notices_board.since(0) if n["kind"] == "kernel_image"]
    assert [n["state"] for n in told] == ["failed"], told
    assert told[0]["message"].startswith(f"Kernel {km.kernel_id[:8]} did not start: `jupyter ptcuda image build --tag "
                                         "jupyter-ptcuda/does-not-exist:1` builds its image")
    assert "could not be pulled" in told[0]["message"] and err.value.message.splitlines()[0][:60] in told[0]["message"]
    assert told[0]["kernel_id"] == km.kernel_id


async def test_image_without_ipykernel(kernelspec, notebook_dir, engine, test_image):
    km = AsyncKernelManager(kernel_name=kernelspec(image=DEBIAN_BASE, pull_policy="never"))
    with pytest.raises(ImageNotReady) as err:
        await km.start_kernel(cwd=str(notebook_dir))
    assert "no ipykernel" in str(err.value) and f"--base {DEBIAN_BASE}" in str(err.value)


async def test_oom_during_start_reports_oomkilled(kernelspec, notebook_dir, engine):
    """A kernel killed during start-up: the error carries OOMKilled/exit code and the container is gone."""
    km = AsyncKernelManager(kernel_name=kernelspec(mem_limit="12m"))
    with pytest.raises(LaunchError) as err:
        await km.start_kernel(cwd=str(notebook_dir))
    assert err.value.details["oom_killed"] is True or err.value.details["exit_code"] == 137
    assert "OOMKilled" in str(err.value) or "137" in str(err.value)


async def test_container_exit_during_start_shows_logs(kernelspec, notebook_dir, engine, tmp_path):
    name = kernelspec()
    from jupyter_client.kernelspec import KernelSpecManager

    spec_file = __import__("pathlib").Path(KernelSpecManager().get_kernel_spec(name).resource_dir) / "kernel.json"
    spec_file.write_text(spec_file.read_text().replace("ipykernel_launcher", "no_such_module_ptcuda"))
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(LaunchError) as err:
        await km.start_kernel(cwd=str(notebook_dir))
    assert err.value.details["exit_code"] == 1
    assert "No module named no_such_module_ptcuda" in str(err.value)


@pytest.mark.parametrize("option, value, words", [
    ("gpus", "banana", "not a GPU index"),
    ("gpus", -2, "cannot be negative"),
    ("mem_limit", "-1g", "cannot be negative"),
    ("shm_size", "lots", "not a size"),
    ("gpu_fallback", "maybe", "gpu_fallback"),
])
async def test_bad_kernelspec_option(kernelspec, notebook_dir, engine, option, value, words):
    km = AsyncKernelManager(kernel_name=kernelspec(**{option: value}))
    with pytest.raises(Exception) as err:
        await km.start_kernel(cwd=str(notebook_dir))
    assert words in str(err.value)


async def test_dead_daemon(kernelspec, notebook_dir, tmp_path):
    from jupyter_ptcuda.containers.engine import Engine, get_engine, set_engine
    from jupyter_ptcuda.errors import EngineUnavailable

    real = get_engine()
    set_engine(Engine(base_url=f"unix://{tmp_path}/no-daemon.sock"))
    try:
        km = AsyncKernelManager(kernel_name=kernelspec())
        with pytest.raises(EngineUnavailable) as err:
            await km.start_kernel(cwd=str(notebook_dir))
        assert "does not answer" in str(err.value) and "dockerd" in str(err.value)
    finally:
        set_engine(real)


@pytest.mark.parametrize("network", ["bridge", "host"])
async def test_ipc_transport_publishes_no_port(kernelspec, notebook_dir, engine, network):
    """transport=ipc: Unix sockets in the kernel's private folder; nothing listens on the network."""
    km, kc = await started(kernelspec(transport="ipc", network_mode=network), notebook_dir)
    try:
        assert km.transport == "ipc"
        sockdir = os.path.dirname(km.ip)
        assert oct(os.stat(sockdir).st_mode & 0o777) == "0o700"
        info = await engine.inspect(km.provisioner.container_id)
        assert not info["HostConfig"]["PortBindings"]
        status, out = await run(kc, "print(6 * 7)")
        assert out.strip() == "42"
        kc.execute("import time; time.sleep(600)")
        await asyncio.sleep(1.5)
        await km.interrupt_kernel()
        reply = await kc.get_shell_msg(timeout=20)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        await km.restart_kernel()
        await kc.wait_for_ready(timeout=90)
        status, out = await run(kc, "print('again')")
        assert out.strip() == "again"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()
    assert not os.path.exists(sockdir)


async def test_shared_network_namespace(kernelspec, notebook_dir, engine):
    """network_mode=shared: kernels of one server join one holder's namespace; nothing is published."""
    from jupyter_ptcuda.containers.docker.netns import holder_name, remove_holder
    from jupyter_ptcuda.containers.identity import server_id
    from jupyter_ptcuda.containers.reaper import orphan_reason
    from jupyter_ptcuda.containers.types import ContainerState

    name = kernelspec(network_mode="shared")
    (km1, kc1), (km2, kc2) = [await started(name, notebook_dir) for _ in range(2)]
    try:
        holder = await engine.inspect(holder_name())
        assert holder["Config"]["Labels"]["io.jupyter-ptcuda.kind"] == "netns"
        for km in (km1, km2):
            assert km.transport == "ipc"
            info = await engine.inspect(km.provisioner.container_id)
            assert info["HostConfig"]["NetworkMode"] == f"container:{holder['Id']}"
            assert not info["HostConfig"]["PortBindings"]
        status, out = await run(kc1, "import socket; print(socket.gethostname())")
        assert status == "ok" and out.strip()
        # the server's own sweep keeps its holder; a dead server's holder is an orphan
        assert orphan_reason(ContainerState.from_inspect(holder), own_server_id=server_id(),
                             known_kernels=set()) is None
    finally:
        for km, kc in ((km1, kc1), (km2, kc2)):
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        await remove_holder(DockerContainerService(engine))
    assert await engine.inspect(holder_name()) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="a root server's kernel in a root-owned folder (CI runs as root)")
async def test_a_kernel_that_cannot_write_its_folder_says_so(kernelspec, tmp_path, caplog):
    """A root server, a root-owned notebook folder: the kernel runs as a uid no account holds, so it cannot
    write there; the server log and the notebook's first cell say so, and what to do."""
    folder = tmp_path / "root-owned"
    folder.mkdir(mode=0o755)
    km, kc = await started(kernelspec(), folder)
    try:
        stderr: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
                stderr.append(msg["content"]["text"])

        reply = await kc.execute_interactive("open('x.txt', 'w')", timeout=60, output_hook=hook)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "PermissionError"
        said = "".join(stderr)
        assert f"cannot write to {folder}" in said and "chown -R USER" in said and "unprivileged_uid" in said
        again: list[str] = []
        await kc.execute_interactive("1", timeout=60, output_hook=lambda m: again.append(m["msg_type"]))
        assert "stream" not in again  # said once, at the first cell
        assert any(f"cannot write to {folder}" in r.getMessage() for r in caplog.records)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, 1000, 100)
    km, kc = await started(kernelspec(), owned)
    try:
        stderr = []
        reply = await kc.execute_interactive("open('x.txt', 'w').write('ok')", timeout=60,
                                             output_hook=lambda m: stderr.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and "jupyter-ptcuda" not in "".join(stderr)
        assert (owned / "x.txt").stat().st_uid == 1000  # the folder's owner wrote it
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("sudo_uid", [None, "1000"])
async def test_the_quickstart_folder_is_one_the_kernel_can_write(kernelspec, tmp_path, sudo_uid):
    """scripts/quickstart serves the folder scripts/notebook-folder makes: as root it is the sudo user's, or
    65533's (no host account), and a notebook's kernel writes there without a notice."""
    import subprocess
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    if sudo_uid:
        env.update(SUDO_UID=sudo_uid, SUDO_GID="100")
    script = Path(__file__).parents[2] / "scripts" / "notebook-folder"
    out = subprocess.run([str(script), str(tmp_path / "notebooks")], env=env, capture_output=True, text=True, check=True)
    folder = Path(out.stdout.strip())
    assert folder == tmp_path / "notebooks"
    owner = int(sudo_uid or 65533)
    assert folder.stat().st_uid == owner
    km, kc = await started(kernelspec(), folder)
    try:
        said: list[str] = []
        reply = await kc.execute_interactive("open('saved.txt', 'w').write('ok')", timeout=60,
                                             output_hook=lambda m: said.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and "cannot write" not in "".join(said)
        assert (folder / "saved.txt").stat().st_uid == owner
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
