"""A real JupyterHub for tests: loopback, random ports, two real Unix users, LocalProcessSpawner.

:func:`start_hub` writes a config into a private folder, starts ``jupyterhub`` (as root, from the Hub
venv that ``scripts/hub-env`` makes) and waits for ``GET /hub/api``; :meth:`Hub.stop` stops the users'
servers, the Hub, its proxy and its managed services, and kills by pid whatever of them is left.
The fixtures in ``tests/hub/conftest.py`` wrap it (``hub``, ``hub_factory``).

Extra config is Python appended to the generated file, where ``c``, ``VENV`` (the Hub venv), ``ROOT``
(the repository), ``STATE`` (the private folder) and ``HUB_API_URL`` are defined, e.g. a broker::

    c.JupyterHub.services.append({"name": "ptcuda-broker", "url": "http://127.0.0.1:PORT",
                                  "command": [f"{VENV}/bin/jupyter", "ptcuda", "broker"]})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "jupyterhub_config.py"
VENV = ROOT / ".ci-cache" / "hubvenv"
CHP = ROOT / ".ci-cache" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = ("ptcuda-alice", "ptcuda-bob")
SERVICE = "ptcuda-test"
SERVICE_SCOPES = ["admin:users", "admin:servers", "admin:server_state", "read:servers", "tokens",
                  "read:services", "shutdown"]
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Marks every process of one Hub (the Hub, its proxy, the users' servers and kernels) in its environment.
TAG = "PTCUDA_HUB_TEST_RUN"


class HubError(RuntimeError):
    """The Hub did not start or answer as expected; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/pid/stat): with the pid, a process's identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids = _children()
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _tagged(run_id: str) -> list[int]:
    """Processes whose environment carries this Hub's run tag."""
    needle = f"{TAG}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _kill_all(procs: Mapping[int, str | None], grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s, each (pid, start time) that is still the same process."""
    alive = {p: st for p, st in procs.items() if st and _proc_start(p) == st}
    for pid in alive:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = {p: st for p, st in alive.items() if _proc_start(p) == st and not _zombie(p)}
        time.sleep(0.1)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class Hub:
    """A running Hub. ``url`` is the public (proxy) URL; ``api`` the Hub API through the proxy."""

    def __init__(self, state: Path, port: int, hub_port: int, proxy_api_port: int, run_id: str,
                 service_token: str, users: Sequence[str]) -> None:
        self.state = state
        self.port = port
        self.hub_port = hub_port
        self.proxy_api_port = proxy_api_port
        self.run_id = run_id
        self.service_token = service_token
        self.users = tuple(users)
        self.url = f"http://127.0.0.1:{port}"
        self.api = f"{self.url}/hub/api"
        self.log_path = state / "jupyterhub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._tokens: dict[str, str] = {}
        self._session = requests.Session()

    # --- the Hub API (as the test service) -----------------------------------------------------
    def hub_api(self, method: str, path: str, *, token: str | None = None, timeout: float = 30,
                **body: Any) -> requests.Response:
        """``METHOD /hub/api/<path>`` with the test service's token (or ``token``); keyword
        arguments are the JSON body."""
        return self._session.request(method, f"{self.api}/{path.lstrip('/')}", timeout=timeout,
                                     headers={"Authorization": f"token {token or self.service_token}"},
                                     json=body or None)

    def _ok(self, resp: requests.Response, *codes: int) -> requests.Response:
        if resp.status_code not in codes:
            raise HubError(f"{resp.request.method} {resp.url} answered {resp.status_code} {resp.text[:500]}"
                           f"\n{self.log_tail()}")
        return resp

    def token(self, user: str, *, scopes: Iterable[str] | None = None, fresh: bool = False) -> str:
        """An API token of ``user`` (made by the Hub API, cached per user unless ``scopes`` or ``fresh``).
        Without ``scopes`` it has the user's own permissions (role ``token``: ``inherit``)."""
        if scopes is None and not fresh and user in self._tokens:
            return self._tokens[user]
        body: dict[str, Any] = {"note": "tests/hub", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = list(scopes)
        tok = self._ok(self.hub_api("POST", f"users/{user}/tokens", **body), 200, 201).json()["token"]
        if scopes is None and not fresh:
            self._tokens[user] = tok
        return tok

    def user_model(self, user: str) -> dict[str, Any]:
        return self._ok(self.hub_api("GET", f"users/{user}"), 200).json()

    def start_server(self, user: str, timeout: float = 90) -> dict[str, Any]:
        """Start ``user``'s default server (POST, then poll until ready); its server model, with
        ``pid`` (from the spawner state). Already running is fine."""
        resp = self.hub_api("POST", f"users/{user}/server")
        if resp.status_code == 400 and "already running" in resp.text:
            pass
        else:
            self._ok(resp, 201, 202)
        deadline = time.monotonic() + timeout
        seen = False
        while True:
            server = self.user_model(user).get("servers", {}).get("")
            if server and server.get("ready"):
                server["pid"] = (server.get("state") or {}).get("pid")
                return server
            if server:
                seen = True
            elif seen:
                raise HubError(f"the server of {user} stopped while starting\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise HubError(f"the server of {user} was not ready after {timeout:.0f} s: {server}\n"
                               f"{self.log_tail()}")
            time.sleep(0.25)

    def stop_server(self, user: str, timeout: float = 60) -> None:
        """Stop ``user``'s default server and wait until the Hub has no server for them."""
        self._ok(self.hub_api("DELETE", f"users/{user}/server"), 202, 204, 400)
        deadline = time.monotonic() + timeout
        while "" in self.user_model(user).get("servers", {}):
            if time.monotonic() > deadline:
                raise HubError(f"the server of {user} did not stop in {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.25)

    # --- a user's server (as that user) ---------------------------------------------------------
    def user_api(self, user: str, method: str, path: str, *, token: str | None = None, server: str | None = None,
                 timeout: float = 30, **body: Any) -> requests.Response:
        """``METHOD /user/<server>/<path>`` with ``user``'s token (``token`` to use another one; ``server``
        to call another user's server with this user's token). Keyword arguments are the JSON body."""
        tok = token or self.token(user)
        return self._session.request(method, f"{self.url}/user/{server or user}/{path.lstrip('/')}",
                                     headers={"Authorization": f"token {tok}"}, json=body or None,
                                     timeout=timeout, allow_redirects=False)

    async def kernel_run_async(self, user: str, code: str, timeout: float = 60, kernel: str = "python3") -> str:
        """Start a ``kernel`` in ``user``'s server, execute ``code`` and return its stdout (the kernel is
        shut down after). An error in the code raises :class:`HubError` with the traceback."""
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        resp = self.user_api(user, "POST", "api/kernels", name=kernel)
        self._ok(resp, 201)
        kid = resp.json()["id"]
        try:
            req = HTTPRequest(f"ws://127.0.0.1:{self.port}/user/{user}/api/kernels/{kid}/channels",
                              headers={"Authorization": f"token {self.token(user)}"}, request_timeout=timeout)
            ws = await asyncio.wait_for(websocket_connect(req), timeout)
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user, "session": msg_id,
                           "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            out: list[str] = []
            error = None
            async def collect() -> None:
                nonlocal error
                while True:
                    raw = await ws.read_message()
                    if raw is None:
                        raise HubError("the kernel websocket closed")
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = msg["header"]["msg_type"]
                    if kind == "stream" and msg["content"]["name"] == "stdout":
                        out.append(msg["content"]["text"])
                    elif kind == "error":
                        error = "\n".join(msg["content"]["traceback"])
                    elif kind == "status" and msg["content"]["execution_state"] == "idle":
                        return
            await asyncio.wait_for(collect(), timeout)
            ws.close()
            if error is not None:
                raise HubError(f"the code failed in {user}'s kernel:\n{error}")
            return "".join(out)
        finally:
            self.user_api(user, "DELETE", f"api/kernels/{kid}")

    def kernel_run(self, user: str, code: str, timeout: float = 60, kernel: str = "python3") -> str:
        """:meth:`kernel_run_async` from synchronous code (in a thread with its own event loop)."""
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["out"] = asyncio.run(self.kernel_run_async(user, code, timeout, kernel))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                result["exc"] = exc

        t = threading.Thread(target=target)
        t.start()
        t.join(timeout + 30)
        if "exc" in result:
            raise result["exc"]
        if "out" not in result:
            raise HubError(f"kernel_run in {user}'s server did not finish")
        return result["out"]

    # --- processes as a user --------------------------------------------------------------------
    @staticmethod
    def account(user: str) -> pwd.struct_passwd:
        return pwd.getpwnam(user)

    def run_as(self, user: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
               input: str | None = None, timeout: float = 120, cwd: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as ``user`` (uid, primary gid, no other groups, cwd = home unless ``cwd``), with a
        clean environment: HOME, USER, LOGNAME, PATH (the Hub venv first: ``python`` is its python),
        plus ``env``. Never raises for the exit status; stdout/stderr are text."""
        pw = self.account(user)
        full = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
                "PATH": f"{VENV}/bin:{USER_PATH}", **(env or {})}
        return subprocess.run(list(argv), user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], env=full,
                              cwd=cwd or pw.pw_dir, input=input, capture_output=True, text=True, timeout=timeout)

    # --- services -------------------------------------------------------------------------------
    def service(self, name: str) -> dict[str, Any]:
        return self._ok(self.hub_api("GET", f"services/{name}"), 200).json()

    def restart_service(self, name: str, timeout: float = 60, sig: int = signal.SIGTERM) -> int:
        """Kill the managed service ``name`` (``sig``: SIGTERM, or SIGKILL for a crash) and wait until the Hub
        has restarted it (the Hub polls its services every 30 s, so this takes up to ~35 s) and, if it has a
        URL, until that URL accepts connections. Returns the new pid."""
        old = self.service(name).get("pid") or 0
        if not old:
            raise HubError(f"service {name} is not a managed service with a process: {self.service(name)}")
        os.kill(old, sig)
        deadline = time.monotonic() + timeout
        while True:
            model = self.service(name)
            pid = model.get("pid") or 0
            if pid and pid != old and _proc_start(pid):
                break
            if time.monotonic() > deadline:
                raise HubError(f"service {name} was not restarted in {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.5)
        if model.get("url"):
            self.wait_url(model["url"], deadline - time.monotonic())
        return pid

    def wait_url(self, url: str, timeout: float = 30) -> None:
        """Wait until ``url`` answers an HTTP request (any status)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(url, timeout=2)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise HubError(f"{url} did not answer in {timeout:.0f} s\n{self.log_tail()}") from None
                time.sleep(0.2)

    # --- life cycle -----------------------------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no Hub log)"
        return "--- last lines of the Hub log ---\n" + "\n".join(text[-lines:])

    def processes(self) -> dict[int, str | None]:
        """Every process of this Hub now: its descendants and whatever carries its run tag."""
        pids = set(_tagged(self.run_id))
        if self.proc and self.proc.poll() is None:
            pids.add(self.proc.pid)
            pids.update(_descendants(self.proc.pid))
        pidfile = self.state / "proxy.pid"
        if pidfile.exists():
            try:
                pids.add(int(pidfile.read_text().strip()))
            except ValueError:
                pass
        return {p: _proc_start(p) for p in pids}

    def stop(self) -> list[str]:
        """Stop everything this Hub started; returns what was left and had to be killed ("pid cmdline")."""
        procs = self.processes()
        if self.proc and self.proc.poll() is None:
            for user in self.users:
                try:
                    if "" in self.user_model(user).get("servers", {}):
                        self.stop_server(user, timeout=30)
                except (requests.RequestException, HubError):
                    pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        procs.update(self.processes())
        procs.pop(self.proc.pid if self.proc else -1, None)
        left = [f"{p} {_cmdline(p)}" for p, st in procs.items() if st and _proc_start(p) == st and not _zombie(p)]
        _kill_all(procs)
        self._session.close()
        return left


def _config(hub: Hub, password: str, environment: Mapping[str, str], extra_config: str) -> str:
    env = {"PATH": f"{VENV}/bin:{USER_PATH}", TAG: hub.run_id, **environment}
    q = json.dumps
    return f"""# generated by tests/hub/harness.py
c = get_config()  # noqa
VENV = {q(str(VENV))}
ROOT = {q(str(ROOT))}
STATE = {q(str(hub.state))}
HUB_API_URL = {q(f"http://127.0.0.1:{hub.hub_port}/hub/api")}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {hub.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{hub.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{q(str(CHP))}]
c.ConfigurableHTTPProxy.pid_file = STATE + "/proxy.pid"
c.JupyterHub.db_url = "sqlite:///" + STATE + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = STATE + "/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = STATE + "/jupyterhub.pid"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {q(password)}
c.Authenticator.allowed_users = set({q(list(hub.users))})
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [VENV + "/bin/jupyterhub-singleuser"]
c.Spawner.environment = {q(env)}
c.Spawner.disable_user_config = True
c.Spawner.poll_interval = 5
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": {q(SERVICE)}, "api_token": {q(hub.service_token)}}}]
c.JupyterHub.load_roles = [{{"name": {q(SERVICE)}, "scopes": {q(SERVICE_SCOPES)}, "services": [{q(SERVICE)}]}}]
# --- extra config ---
{extra_config}
"""


def start_hub(extra_config: str = "", environment: Mapping[str, str] | None = None,
              users: Sequence[str] = USERS, timeout: float = 60, hub_env: Mapping[str, str] | None = None,
              ports: Mapping[str, int] | None = None) -> Hub:
    """Start a Hub (needs root and ``scripts/hub-env``); call :meth:`Hub.stop` at the end.

    ``environment`` adds to ``Spawner.environment`` (the users' servers); ``hub_env`` to the Hub's own
    environment (its proxy and managed services see it); ``extra_config`` is appended to the config
    (see the module docstring); ``ports`` may fix ``port``/``hub_port``/``proxy_api_port``."""
    state = Path(tempfile.mkdtemp(prefix="ptcuda-hub-"))  # 0700, root's
    p = dict(ports or {})
    hub = Hub(state, p.get("port") or free_port(), p.get("hub_port") or free_port(),
              p.get("proxy_api_port") or free_port(), uuid.uuid4().hex, secrets.token_hex(32), users)
    cfg = state / "jupyterhub_config.py"
    cfg.write_text(_config(hub, secrets.token_urlsafe(12), environment or {}, extra_config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_", "PYTEST_"))}
    env.update({"PATH": f"{VENV}/bin:{CHP.parent}:{os.environ.get('PATH', USER_PATH)}", TAG: hub.run_id,
                **(hub_env or {})})
    env.pop("VIRTUAL_ENV", None)
    log = open(hub.log_path, "wb")  # noqa: SIM115 - the Hub writes it until stop
    hub.proc = subprocess.Popen([str(VENV / "bin" / "jupyterhub"), "-f", str(cfg)], cwd=state, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if hub.proc.poll() is not None:
                raise HubError(f"jupyterhub exited with {hub.proc.returncode}\n{hub.log_tail()}")
            try:
                if requests.get(f"{hub.api}/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise HubError(f"GET {hub.api} did not answer 200 in {timeout:.0f} s\n{hub.log_tail()}")
            time.sleep(0.2)
        for user in users:  # allowed_users exist from the start: 409 is fine
            hub._ok(hub.hub_api("POST", f"users/{user}"), 201, 409)
    except BaseException:
        hub.stop()
        raise
    return hub


def cleanup(hub: Hub, keep: bool = False) -> list[str]:
    """Stop ``hub`` and remove its state folder (unless ``keep``); what had to be killed."""
    left = hub.stop()
    if not keep:
        shutil.rmtree(hub.state, ignore_errors=True)
    return left


def broker_config(port: int, image: str, extra: str = "") -> str:
    """Hub config for tests with the broker: examples/jupyterhub_config.py with its broker on ``port`` and
    ``image``'s repository allowed, then ``extra`` (more ``c.PtcudaBroker.*``)."""
    example = EXAMPLE.read_text().replace("http://127.0.0.1:10101", f"http://127.0.0.1:{port}")
    return (example + f"\nc.PtcudaBroker.images = [{image.split(':')[0] + ':*'!r}]\n"
            # each test Hub's broker keeps its waiting jobs in its own folder (never another Hub's)
            + 'c.PtcudaBroker.queue_db = STATE + "/broker-queue.sqlite"\n' + extra)


def require_hub() -> None:
    """The Hub tests run as root after scripts/hub-env: in CI anything else fails, elsewhere it skips."""
    if os.geteuid() != 0 or not VENV.exists():
        if os.environ.get("CI"):
            pytest.fail("the Hub tests need root and scripts/hub-env (scripts/test runs it)")
        pytest.skip("needs root and scripts/hub-env")


#: The broker of the GPU-queue tests: two fake GPUs, no per-user quota, a quick queue.
QUEUE_BROKER = """
c.PtcudaBroker.nvml = "fake:2"
c.PtcudaBroker.max_gpus = None
c.GpuQueue.poll_interval = 0.5
"""


@contextlib.contextmanager
def hub_with_broker(image: str, extra: str = "") -> Iterator[Hub]:
    """A Hub whose broker (:func:`broker_config` + ``extra``) answers, cleaned up afterwards."""
    require_hub()
    port = free_port()
    hub = start_hub(extra_config=broker_config(port, image, extra))
    try:
        yield attach_broker(hub, port, image)
    finally:
        cleanup(hub)


def attach_broker(hub: Hub, port: int, image: str) -> Hub:
    """``hub`` with ``broker_url`` and ``test_image`` set, once its broker answers."""
    hub.broker_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    hub.test_image = image  # type: ignore[attr-defined]
    hub.wait_url(f"{hub.broker_url}/v1/whoami", timeout=30)  # type: ignore[attr-defined]
    return hub
