"""Security issue 9, the files: a job's code (its container's uid) attacks the files a root server writes
and reads for it: ``job.log``, ``manifest.json``, ``train.py``, a saved export, and ``git`` in its folder.

Each test runs real attacker code in a real job (the CPU test image, as the container uid), then asserts
what the owner of a root-only file would notice: it is unchanged, no file appeared outside the notebook
folders, the server never handed the file's content out. Where the attack needs a race that a test cannot
win on purpose (a link planted between the server's path check and its use), the test code, as root,
puts the link there itself at the worst moment and calls the server's code.

A real attacker sprays links for every pid up to ``pid_max``; the sprays here cover a window around the
server's pid (the test process: the JobManager and the Jupyter server run in it) to stay fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.jobs import outputs as O
from jupyter_ptcuda.jobs.manager import JobManager
from jupyter_ptcuda.jobs.request import JobRequest
from tests.conftest import TEST_IMAGE
from tests.server.conftest import api  # noqa: F401 - the REST client fixture
from tests.server.helpers import wait_for

pytestmark = pytest.mark.integration

SECRET = b"root-only: the server's private key\n"
WINDOW = 300  # pids either side of the server's

#: The attacker: runs in the job's container, reports what it managed as one JSON line.
ATTACKER = r'''
import json, os, sys

mode, args = sys.argv[1], sys.argv[2:]
outputs = os.path.join(os.getcwd(), "outputs")
report = {}


def plant(path, target):
    """Put a link to target at path; True, or the error."""
    try:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
        return True
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"


def spray(folder, name, target, lo, hi):
    """Links for name and every name.tmp-<pid>: the temporary names the server used to write through."""
    first = plant(os.path.join(folder, name), target)
    count = sum(plant(os.path.join(folder, f"{name}.tmp-{pid}"), target) is True for pid in range(lo, hi))
    return {"file": first, "tmp_links": count}


if mode == "spray":  # the job's own outputs: log and manifest to the secret, train.py to a new file
    secret, fresh, lo, hi = args[0], args[1], int(args[2]), int(args[3])
    job_dir = os.path.join(outputs, os.environ["JUPYTER_PTCUDA_JOB_ID"])
    for folder in (job_dir, os.environ["JUPYTER_PTCUDA_OUTPUT_DIR"]):
        report[folder] = {name: spray(folder, name, target, lo, hi)
                          for name, target in (("job.log", secret), ("manifest.json", fresh), ("train.py", fresh))}
elif mode == "export":  # the notebook folder: the saved export and its temporary names
    stem, secret, lo, hi = args[0], args[1], int(args[2]), int(args[3])
    # only the temporary names: a link at the target itself fails the server's path check (403)
    report["tmp_links"] = sum(plant(f"{stem}.train.py.tmp-{pid}", secret) is True for pid in range(lo, hi))
elif mode == "swap":  # another job's log replaced with a link to the secret
    victim, secret = args
    folder = os.path.join(outputs, victim)
    report["replace_log"] = plant(os.path.join(folder, "job.log"), secret)
    try:  # owning outputs/, move the victim's folder away and put a folder of ours in its place
        os.rename(folder, folder + ".moved")
        os.mkdir(folder)
        os.symlink(secret, os.path.join(folder, "job.log"))
        report["swap_folder"] = True
    except OSError as exc:
        report["swap_folder"] = f"{type(exc).__name__}: {exc.strerror}"
elif mode == "gitfile":  # a log that is a git file: it points at a root-only repository
    print(f"gitdir: {args[0]}", flush=True)
    sys.exit(0)
elif mode == "git":  # the server's log of that job, a root-owned file, moved into the folder as .git
    victim = args[0]
    try:
        os.rename(os.path.join(outputs, victim, "job.log"), ".git")
        report["planted"] = True
    except OSError as exc:
        report["planted"] = f"{type(exc).__name__}: {exc.strerror}"
print("ATTACK " + json.dumps(report), flush=True)
'''


def attack_report(log: str) -> dict:
    line = next((ln for ln in log.splitlines() if ln.startswith("ATTACK ")), None)
    assert line is not None, f"the attacker did not run to the end:\n{log}"
    return json.loads(line[len("ATTACK "):])


@pytest.fixture(autouse=True)
def jobs_db(tmp_path, monkeypatch):
    """A private job store (CLI subprocesses inherit it)."""
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))


@pytest.fixture
def secret(tmp_path) -> Path:
    """A root-only (0600) file outside every notebook folder: what the attacker wants."""
    path = tmp_path / "private" / "server.key"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def untouched(secret: Path) -> None:
    assert secret.read_bytes() == SECRET, "the root-only file was overwritten"
    st = secret.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0), "the root-only file changed mode or owner"
    assert sorted(os.listdir(secret.parent)) == [secret.name], "a file appeared next to the root-only file"


def pid_window() -> tuple[str, str]:
    return str(max(1, os.getpid() - WINDOW)), str(os.getpid() + WINDOW)


async def run_job(engine, path: Path, *args: str) -> object:
    mgr = JobManager(service=DockerContainerService(engine), cancel_grace=2.0, poll_interval=0.3)
    try:
        job = await mgr.submit(JobRequest(path=str(path), image=TEST_IMAGE, gpus="none", args=list(args)))
        for _ in range(600):
            job = await mgr.get(job.id)
            if job.terminal:
                return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"job {job.id} did not finish")
    finally:
        await mgr.stop()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", *args], capture_output=True, text=True,
                          timeout=120)


async def test_symlink_spray_on_job_outputs_writes_nothing_outside(engine, test_image, notebook_dir, tmp_path,
                                                                   secret):
    """(1) The job plants links for job.log, manifest.json, train.py and every <file>.tmp-<pid> wherever
    it can write: the root-only file keeps its content and mode, no file appears outside, and the job
    cannot even write the server's job folder."""
    fresh = tmp_path / "private" / "created-by-root"
    attacker = notebook_dir / "attack.py"
    attacker.write_text(ATTACKER)
    job = await run_job(engine, attacker, "spray", str(secret), str(fresh), *pid_window())
    log = O.read_log(job)
    report = attack_report(log.decode())
    assert job.state == "completed", log
    untouched(secret)
    assert not fresh.exists(), "the root server created a file outside the notebook folder"

    job_dir, artifacts = Path(job.output_dir), O.artifacts_dir(job.output_dir)
    assert all(str(r["file"]).startswith("PermissionError") and r["tmp_links"] == 0
               for r in report[str(job_dir)].values()), report  # the server's folder: not writable by the job
    assert all(r["file"] is True for r in report[str(artifacts)].values()), report  # its own folder: writable
    for name in ("job.log", "manifest.json"):
        assert stat.S_ISREG((job_dir / name).lstat().st_mode)
    assert json.loads((job_dir / "manifest.json").read_text())["state"] == "completed"
    st = job_dir.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert str(artifacts.stat().st_uid) == job.meta["user"].partition(":")[0]  # the container's uid


async def test_log_of_another_job_cannot_be_swapped_for_a_root_file(engine, test_image, notebook_dir, secret):
    """(3) Job B replaces job A's job.log with a link to a root-only file (it cannot), and moves A's
    folder away for one of its own holding such a link (it can: it owns outputs/). Neither the server
    (read_log: REST, follow) nor the CLI (`jobs logs`) hands out the file."""
    victim = notebook_dir / "victim.py"
    victim.write_text("print('victim output')\n")
    a = await run_job(engine, victim)
    assert b"victim output" in O.read_log(a)
    attacker = notebook_dir / "attack.py"
    attacker.write_text(ATTACKER)
    b = await run_job(engine, attacker, "swap", a.id, str(secret))
    report = attack_report(O.read_log(b).decode())
    assert str(report["replace_log"]).startswith("PermissionError"), report
    assert report["swap_folder"] is True, report  # the folder it put there is its own, not the server's

    assert SECRET not in O.read_log(a)
    mgr = JobManager(service=DockerContainerService(engine))
    data, _ = await mgr.read_log(a.id)
    assert SECRET not in data
    assert [c async for c in mgr.follow(a.id)] == []
    shown = cli("jobs", "logs", a.id)
    assert SECRET.decode() not in shown.stdout
    untouched(secret)


def worst_case_log_link(job_dir: Path, secret: Path) -> None:
    """As if a job could replace the log in the server's folder: a link there, put by root."""
    (job_dir / "job.log").unlink()
    (job_dir / "job.log").symlink_to(secret)


@pytest.fixture
def jp_server_config(jp_root_dir, monkeypatch):
    """The extension with fast job checks; the test image as the jobs' default; nb/ the job user's."""
    monkeypatch.setenv("JUPYTER_PTCUDA_IMAGE", TEST_IMAGE)
    (jp_root_dir / "nb").mkdir()
    os.chown(jp_root_dir / "nb", 1000, 100)
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ptcuda": True}},
            "PtcudaExtension": {"nvml": "fake:2:model=H100+L4", "sample_interval": 0.2, "freeze_gc": False},
            "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.3}}


async def rest_job(api, rel: str, *args: str) -> dict:  # noqa: F811 - api is the fixture
    status, job, _ = await api("POST", "jobs", {"path": rel, "gpus": "none", "args": list(args)})
    assert status == 201, job
    return await wait_for(api, f"jobs/{job['id']}",
                          lambda s, b: s == 200 and b["state"] not in ("queued", "running"), timeout=90)


async def test_rest_log_never_returns_a_linked_root_file(api, engine, test_image, jp_root_dir, secret):  # noqa: F811
    """(3, worst case) job.log in a finished job's folder replaced by a link to a root-only file:
    ``GET jobs/<id>/log`` answers without its content."""
    (jp_root_dir / "nb" / "hello.py").write_text("print('hello from the job')\n")
    job = await rest_job(api, "nb/hello.py")
    status, text, _ = await api("GET", f"jobs/{job['id']}/log")
    assert status == 200 and "hello from the job" in text
    worst_case_log_link(jp_root_dir / job["output_path"], secret)
    status, text, _ = await api("GET", f"jobs/{job['id']}/log")
    assert status == 200 and SECRET.decode() not in text and text == ""
    untouched(secret)


def export_notebook_file(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print('exported')")]
    nbformat.write(nb, path)


async def test_export_save_spray_does_not_write_through_links(api, engine, test_image, jp_root_dir,  # noqa: F811
                                                              secret):
    """(2) A job plants links in the notebook folder for train.train.py.tmp-<pid> (and, at the worst
    moment, train.train.py itself): ``POST exports`` with ``save`` writes the script next to the
    notebook and nothing through a link."""
    nb_dir = jp_root_dir / "nb"
    export_notebook_file(nb_dir / "train.ipynb")
    (nb_dir / "attack.py").write_text(ATTACKER)
    lo, hi = pid_window()
    job = await rest_job(api, "nb/attack.py", "export", "train", str(secret), lo, hi)
    assert job["state"] == "completed", job
    planted = [p for p in os.listdir(nb_dir) if p.startswith("train.train.py.tmp-")]
    assert len(planted) >= 2 * WINDOW

    status, body, _ = await api("POST", "exports", {"path": "nb/train.ipynb", "save": True})
    assert status == 200, body
    untouched(secret)
    saved = nb_dir / "train.train.py"
    assert stat.S_ISREG(saved.lstat().st_mode) and saved.read_text() == body["script"]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644

    saved.unlink()  # worst case: a link at the target itself, planted after the server's path check
    saved.symlink_to(secret)
    O.write_atomic(saved, body["script"].encode())
    untouched(secret)
    assert stat.S_ISREG(saved.lstat().st_mode) and saved.read_text() == body["script"]


def test_export_reads_no_notebook_linked_after_the_path_check(tmp_path):
    """The notebook replaced by a link to a root-only notebook between the server's path check and the
    export: the export refuses it instead of handing the other notebook's code out."""
    from jupyter_ptcuda.errors import PtcudaError
    from jupyter_ptcuda.export import export_notebook

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    export_notebook_file(private / "secret.ipynb")
    (private / "secret.ipynb").chmod(0o600)
    folder = tmp_path / "nb"
    folder.mkdir()
    export_notebook_file(folder / "train.ipynb")
    checked = O.resolve_under_root(tmp_path, "nb/train.ipynb")
    (folder / "train.ipynb").unlink()
    (folder / "train.ipynb").symlink_to(private / "secret.ipynb")
    with pytest.raises(PtcudaError, match="symbolic link"):
        export_notebook(str(checked))
    with pytest.raises(PtcudaError, match="symbolic link"):
        O.sha256_file(checked)


async def test_git_in_the_notebook_folder_runs_nothing_as_root(engine, test_image, tmp_path, secret):
    """(4) git trusts a repository whose files are the running user's, and runs what its config says.
    In a shared folder (root's, writable by all) a job prints ``gitdir: <a root-only repository>``,
    and the next job moves the server's log of it (a root-owned file, then) into the folder as ``.git``.
    The job after that has ``git rev-parse`` run in the folder: it must not run as root, so its manifest
    does not learn the private repository's commit, and no hook or fsmonitor of that repository runs.
    If the move fails (it does now: the log is in the server's folder), the test puts a root-owned
    ``.git`` there itself: the worst case."""
    private = secret.parent / "repo"
    private.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "r", "GIT_AUTHOR_EMAIL": "r@e", "GIT_COMMITTER_NAME": "r",
           "GIT_COMMITTER_EMAIL": "r@e"}
    subprocess.run(["git", "-C", str(private), "init", "-q"], check=True, env=env)
    subprocess.run(["git", "-C", str(private), "commit", "-q", "--allow-empty", "-m", "private"], check=True, env=env)
    marker = secret.parent / "ran-as-root"
    (private / "hook.sh").write_text(f"#!/bin/sh\nid -u >> {marker}\n")
    (private / "hook.sh").chmod(0o755)
    for key, value in (("core.fsmonitor", str(private / "hook.sh")), ("core.hooksPath", str(private)),
                       ("core.pager", str(private / "hook.sh"))):
        subprocess.run(["git", "-C", str(private), "config", key, value], check=True)
    private_head = subprocess.run(["git", "-C", str(private), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "attack.py").write_text(ATTACKER)
    first = await run_job(engine, shared / "attack.py", "gitfile", str(private / ".git"))
    assert first.state == "completed"
    second = await run_job(engine, shared / "attack.py", "git", first.id)
    planted = attack_report(O.read_log(second).decode())["planted"]
    assert str(planted).startswith("PermissionError"), "the job moved the server's log out of its folder"
    if not (shared / ".git").exists():
        (shared / ".git").write_text(f"gitdir: {private / '.git'}\n")

    (shared / "train.py").write_text("print('training')\n")
    third = await run_job(engine, shared / "train.py")
    assert third.state == "completed"
    manifest = json.loads(Path(third.manifest_path).read_text())
    assert manifest["git_commit"] != private_head, "git ran as root: the manifest shows a root-only repository"
    assert not marker.exists(), "git ran the repository's hook as root"
    assert secret.read_bytes() == SECRET
