"""A shell in the kernel's container under a real JupyterHub, where the users' servers have no Docker
socket: JupyterLab's terminal (jupyter_server_terminals' websocket, through the Hub's proxy) and
``jupyter ptcuda shell|exec`` go through the broker's ``/v1/tty`` (LocalProcessSpawner, two Unix users,
the broker as a managed service from examples/jupyterhub_config.py, the real engine)."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import time

import pytest
import requests

from tests.hub import harness as H

pytestmark = [pytest.mark.integration, pytest.mark.hub]

ALICE, BOB = H.USERS
KERNEL = "ptcuda-hubshell"
SCOPE = "access:services!service=ptcuda-broker"


@pytest.fixture(scope="module")
def hub(hub_factory, engine, test_image):
    subprocess.run([str(H.VENV / "bin" / "jupyter-ptcuda"), "kernelspec", "install", "--sys-prefix", "--name", KERNEL,
                    "--image", test_image, "--gpus", "none", "--no-check"], check=True, capture_output=True)
    port = H.free_port()
    hub = H.attach_broker(hub_factory(extra_config=H.broker_config(port, test_image, 'c.PtcudaBroker.nvml = "fake:1"\n')),
                          port, test_image)
    for user in H.USERS:
        hub.start_server(user)
    return hub


@pytest.fixture
def alice_kernel(hub):
    """A kernel of alice's, started from her server's REST API: (kernel id, its container's id)."""
    r = hub.user_api(ALICE, "POST", "api/kernels", name=KERNEL, timeout=120)
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    try:
        rows = broker(hub, ALICE, "list", kind="kernel").json()["result"]
        [cid] = [c["id"] for c in rows if c["labels"].get("io.jupyter-ptcuda.kernel-id") == kid]
        yield kid, cid
    finally:
        hub.user_api(ALICE, "DELETE", f"api/kernels/{kid}")


def broker(hub, user: str, op: str, **body):
    token = hub.token(user, scopes=[SCOPE])
    return requests.post(f"{hub.broker_url}/v1/{op}", json=body, headers={"Authorization": f"token {token}"}, timeout=120)


def top(cid: str) -> str:
    return subprocess.run(["docker", "top", cid, "-eo", "pid,args"], capture_output=True, text=True).stdout


def running_execs(engine, cid: str) -> list[str]:
    """The container's exec processes that still run (the engine's own record, not a process listing)."""
    ids = engine.run_sync(lambda api: api.inspect_container(cid)).get("ExecIDs") or []
    return [e for e in ids if engine.run_sync(lambda api, e=e: api.exec_inspect(e))["Running"]]


def wait_until(cond, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.3)
    return cond()


async def read_until(ws, needle: str, timeout: float = 30) -> str:
    out, deadline = "", time.monotonic() + timeout
    while needle not in out:
        msg = await asyncio.wait_for(ws.read_message(), max(0.1, deadline - time.monotonic()))
        if msg is None:
            break
        kind, *rest = json.loads(msg)
        if kind == "stdout":
            out += rest[0]
    return out


def test_alice_s_terminal_runs_in_her_kernel_s_container_and_ends_when_closed(hub, alice_kernel, engine):
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    kid, cid = alice_kernel
    # a client-chosen command, folder and environment are ignored here too
    r = hub.user_api(ALICE, "POST", "jupyter-ptcuda/terminals", kernel_id=kid, shell_command=["sh", "-c", "echo PWNED"],
                     cwd="/", extra_env={"X_EVIL": "1"}, timeout=60)
    assert r.status_code == 201, r.text
    term = r.json()
    assert term["container_id"] == cid[:12]
    uid = hub.account(ALICE).pw_uid

    async def session() -> str:
        req = HTTPRequest(f"ws://127.0.0.1:{hub.port}/user/{ALICE}/terminals/websocket/{term['name']}",
                          headers={"Authorization": f"token {hub.token(ALICE)}"}, request_timeout=30)
        ws = await websocket_connect(req)
        ws.write_message(json.dumps(["set_size", 33, 117, 600, 800]))
        ws.write_message(json.dumps(["stdin", "echo uid=$(id -u) host=$(hostname) dir=$PWD dev=$NVIDIA_VISIBLE_DEVICES "
                                              "cols=$(tput cols) evil=${X_EVIL:-none}; echo END-$((1+1))\r"]))
        out = await read_until(ws, "END-2")
        ws.write_message(json.dumps(["set_size", 40, 99, 600, 800]))  # a resize reaches the exec, via the broker
        await asyncio.sleep(1)
        ws.write_message(json.dumps(["stdin", "echo size=$(tput lines)x$(tput cols)\r"]))
        out += await read_until(ws, "size=40x99", timeout=15)
        ws.write_message(json.dumps(["stdin", "sleep 4321\r"]))
        assert await asyncio.to_thread(wait_until, lambda: "sleep 4321" in top(cid)), top(cid)
        assert running_execs(engine, cid)  # the shell, exec'd by the broker
        ws.close()
        return out

    out = asyncio.run(session())
    assert f"uid={uid} host={cid[:12]} dir={term['workdir']} dev=void cols=117 evil=none" in out, out
    assert "PWNED" not in out.replace("echo PWNED", "") and "PTCUDA-PID" not in out
    assert "size=40x99" in out, out
    r = hub.user_api(ALICE, "DELETE", f"api/terminals/{term['name']}")
    assert r.status_code == 204
    # closing the terminal ended the shell's session in the container: no process, no running exec
    assert wait_until(lambda: "sleep 4321" not in top(cid) and "bash" not in top(cid)), top(cid)
    assert wait_until(lambda: not running_execs(engine, cid)), running_execs(engine, cid)

    # shutting the kernel down (its container goes) ends its terminal too
    r = hub.user_api(ALICE, "POST", "jupyter-ptcuda/terminals", kernel_id=kid, timeout=60)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    listed = lambda: name in [t["name"] for t in hub.user_api(ALICE, "GET", "api/terminals").json()]  # noqa: E731
    assert listed()
    assert hub.user_api(ALICE, "DELETE", f"api/kernels/{kid}", timeout=60).status_code == 204
    assert wait_until(lambda: not listed(), 30), "the terminal outlived its kernel"


def test_bob_cannot_open_a_shell_in_alice_s_container(hub, alice_kernel):
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    kid, cid = alice_kernel

    async def tty(token: str | None) -> HTTPClientError:
        headers = {"Authorization": f"token {token}"} if token else {}
        url = hub.broker_url.replace("http", "ws", 1) + f"/v1/tty?cid={cid}"
        with pytest.raises(HTTPClientError) as info:
            ws = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=30))
            ws.close()
        return info.value

    refused = asyncio.run(tty(hub.token(BOB, scopes=[SCOPE])))
    assert refused.code == 404 and "of yours" in json.loads(refused.response.body)["message"]
    assert asyncio.run(tty(None)).code == 403
    assert asyncio.run(tty(hub.token(ALICE, scopes=["read:users:name!user"], fresh=True))).code == 403
    # nor through bob's own server (alice's kernel is not one of his), nor through alice's with bob's token
    r = hub.user_api(BOB, "POST", "jupyter-ptcuda/terminals", kernel_id=kid)
    assert r.status_code == 404, r.text
    r = hub.user_api(BOB, "POST", "jupyter-ptcuda/terminals", server=ALICE, kernel_id=kid)
    assert r.status_code in (302, 403, 404), r.text
    assert "bash" not in top(cid)


def test_shell_and_exec_cli_as_alice_go_through_the_broker(hub, alice_kernel):
    from ptyprocess import PtyProcess

    kid, cid = alice_kernel
    acct = hub.account(ALICE)
    env = {"JUPYTER_PTCUDA_BROKER_URL": hub.broker_url, "JUPYTERHUB_API_TOKEN": hub.token(ALICE, scopes=[SCOPE]),
           "TERM": "xterm"}
    cli = str(H.VENV / "bin" / "jupyter-ptcuda")
    r = hub.run_as(ALICE, [cli, "exec", kid[:8], "--", "sh", "-c", "id -u; hostname; exit 7"], env=env)
    assert r.returncode == 7, r.stderr
    assert r.stdout.split()[:2] == [str(acct.pw_uid), cid[:12]]

    full = {"HOME": acct.pw_dir, "USER": ALICE, "PATH": f"{H.VENV}/bin:{H.USER_PATH}", **env}
    proc = PtyProcess.spawn(["setpriv", f"--reuid={acct.pw_uid}", f"--regid={acct.pw_gid}", "--clear-groups", "env", "-i",
                             *[f"{k}={v}" for k, v in full.items()], cli, "shell", kid], cwd=acct.pw_dir,
                            dimensions=(30, 101))
    try:
        proc.write(b"echo uid=$(id -u) host=$(hostname) cols=$(tput cols); exit 3\r")
        out, deadline = "", time.monotonic() + 30
        while "exit\r\n" not in out and time.monotonic() < deadline:
            if not select.select([proc.fd], [], [], 0.5)[0]:
                continue
            try:
                out += proc.read(4096).decode(errors="replace")
            except EOFError:
                break
        assert wait_until(lambda: not proc.isalive(), 15), out
    finally:
        if proc.isalive():
            proc.kill(signal.SIGKILL)
    assert f"uid={acct.pw_uid} host={cid[:12]} cols=101" in out, out
    assert proc.exitstatus == 3
