"""The GPU queue is durable: a real `jupyter server` (subprocess, the extension, fake two-GPU NVML, the real
engine with the stand-in NVIDIA hook) is SIGKILLed while three jobs wait for GPUs; after the restart each of
them runs exactly once, in the order they were submitted, as the GPUs free up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE
from tests.integration.conftest import hook_engine

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not hook_engine(), reason="needs the engine with the (stand-in) NVIDIA hook")]

TOKEN = "queue-durability-test"
#: Records each run (the folder's runs.txt: order and count), then holds its GPU until released.
HOLD = ("import pathlib, sys, time\nname = sys.argv[1]\n"
        "with open('runs.txt', 'a') as f:\n    f.write(name + '\\n')\n"
        "while not pathlib.Path(f'release-{name}').exists():\n    time.sleep(0.1)\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(root: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """A `jupyter server` with the extension on a free port; its URL once it answers. Killed (SIGKILL) at the
    end if still running."""
    port = free_port()
    args = [sys.executable, "-m", "jupyter_server", f"--ServerApp.root_dir={root}", f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
            "--JobManager.poll_interval=0.5", "--PtcudaExtension.freeze_gc=False", "--GpuQueue.poll_interval=0.5",
            "--PtcudaExtension.nvml=fake:2"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/jupyter-ptcuda"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            with contextlib.suppress(OSError, ValueError):
                if call("GET", url + "/gpus").json()["snapshot"]["state"] == "ok":
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class Reply:
    def __init__(self, status_code: int, text: str) -> None:
        self.status_code, self.text = status_code, text

    def json(self) -> dict:
        return json.loads(self.text)


def call(method: str, url: str, body: dict | None = None) -> Reply:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read().decode())


def until(what: str, check, within: float = 60):
    deadline = time.monotonic() + within
    while not (got := check()):
        assert time.monotonic() < deadline, f"not {what} within {within:.0f} s"
        time.sleep(0.2)
    return got


def state(url: str, job_id: str) -> dict:
    return call("GET", f"{url}/jobs/{job_id}").json()


def job_containers() -> list[str]:
    return subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=job"], capture_output=True,
                          text=True).stdout.split()


def test_queued_jobs_survive_sigkill_and_each_runs_once_in_order(tmp_path):
    root = tmp_path / "root"
    nb = root / "nb"
    nb.mkdir(parents=True)
    (nb / "hold.py").write_text(HOLD)
    if os.geteuid() == 0:
        os.chown(nb, 1000, 100)
    env = {**os.environ, "JUPYTER_PTCUDA_JOBS_DB": str(tmp_path / "jobs.sqlite"),
           "JUPYTER_PTCUDA_IMAGE": TEST_IMAGE, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "server.log"
    before = set(job_containers())
    names = ["hold0", "hold1", "q0", "q1", "q2"]
    try:
        with server(root, env, log) as url:
            jobs = {}
            for name in names:
                r = call("POST", f"{url}/jobs", {"path": "nb/hold.py", "gpus": 1, "name": name, "args": [name],
                                                 "import_check": False})
                assert r.status_code == 201, r.text
                jobs[name] = r.json()
            assert [jobs[n]["state"] for n in ("q0", "q1", "q2")] == ["queued"] * 3
            assert [jobs[n]["place"] for n in ("q0", "q1", "q2")] == [1, 2, 3]
            until("both holders running", lambda: (nb / "runs.txt").exists() and
                  (nb / "runs.txt").read_text().split() == ["hold0", "hold1"])

            def listed() -> str:
                done = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "jobs", "list"], env=env,
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
                row = next(line for line in done.stdout.splitlines() if line.startswith(jobs["q2"]["id"]))
                return row if "2 requests ahead" in row else ""

            row = until("`jobs list` shows the place", listed)
            assert "queued (waiting for 1 GPU: 2 requests ahead of you; GPUs held by your job hold" in row
        # killed with SIGKILL (the context's end): no stop hook ran. A new server:
        with server(root, env, log) as url:
            until("the line rebuilt", lambda: [state(url, jobs[n]["id"])["place"] for n in ("q0", "q1", "q2")] == [1, 2, 3])
            for i, name in enumerate(names):
                (nb / f"release-{name}").write_text("")
                if i + 2 < len(names):  # the job two behind starts on the GPU this one gave back
                    nxt = names[i + 2]
                    until(f"{nxt} running", lambda n=nxt: state(url, jobs[n]["id"])["state"] == "running")
            for name in names:
                done = until(f"{name} done", lambda n=name: (s := state(url, jobs[n]["id"]))["state"] == "completed" and s)
                assert done["exit_code"] == 0
            assert (nb / "runs.txt").read_text().split() == names  # each once, in order
    finally:
        for name in names:
            (nb / f"release-{name}").write_text("")
        until("no job container left", lambda: not (set(job_containers()) - before), within=30)
