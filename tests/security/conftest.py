"""The attack suite: each test performs an attack found against the server and asserts it fails.

Runs on the real engine (like tests/integration, whose fixtures it shares) as root, the setting where
the server holds privileges a kernel or job must not get. Other Unix users are real accounts made and
removed by :func:`unix_user`; :func:`as_user` runs attacker code in a forked child that has dropped to
such a user (modules the attack needs are imported before the fork: the venv lives under /root).
"""

from __future__ import annotations

import json
import os
import subprocess
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures and the failure dump hook
    kernelspec,
    no_leftovers,
    notebook_dir,
    pytest_runtest_makereport,
)

pytestmark = pytest.mark.integration


def server_job_root(jp_root_dir, tmp_path, monkeypatch, scripts: dict[str, str]):
    """For REST-job tests on a real server: a private job store, the test image as the jobs' image,
    ``nb/`` with ``scripts`` owned by the job uid; yields ``nb``; every job container of this root is
    removed afterwards. Used as ``yield from`` by the test files' autouse fixtures."""
    from tests.conftest import TEST_IMAGE

    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    monkeypatch.setenv("JUPYTER_PTCUDA_IMAGE", TEST_IMAGE)
    nb = jp_root_dir / "nb"
    nb.mkdir()
    for name, text in scripts.items():
        (nb / name).write_text(text)
    if os.geteuid() == 0:
        os.chown(jp_root_dir, 1000, 100)
        os.chown(nb, 1000, 100)
    yield nb
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.jupyter-ptcuda.kind=job"], capture_output=True,
                         text=True).stdout.split()
    for cid in ids:
        notebook = subprocess.run(["docker", "inspect", "-f", '{{index .Config.Labels "io.jupyter-ptcuda.notebook"}}',
                                   cid], capture_output=True, text=True).stdout
        if str(jp_root_dir) in notebook:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int


@pytest.fixture
def unix_user() -> Iterator[Callable[[], UnixUser]]:
    """make() -> a new system account (no home), deleted after the test. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("the attack suite makes Unix users: run it as root (CI does)")
    made: list[str] = []

    def make() -> UnixUser:
        name = "ptsec" + uuid.uuid4().hex[:8]
        subprocess.run(["useradd", "-M", "-N", "-g", "users", "-s", "/usr/sbin/nologin", name], check=True)
        made.append(name)
        out = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout
        return UnixUser(name, int(out), 100)

    yield make
    for name in made:
        subprocess.run(["userdel", "-f", name], capture_output=True)


def as_user(user: UnixUser, attack: Callable[[], Any], timeout: float = 60) -> Any:
    """Run ``attack()`` in a child process as ``user`` (no supplementary groups); its JSON result.

    An exception in the child comes back as ``{"error": "<type>: <message>"}``.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            try:
                result = attack()
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
            os.write(w, json.dumps(result, default=str).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    import select

    while True:
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise TimeoutError("the attacker process did not finish")
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"attacker process failed (status {status})"
    return json.loads(b"".join(chunks) or b"null")
