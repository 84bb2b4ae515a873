"""What a job leaves behind (manifest, log), how its end is named, and paths outside the server root."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile

import pytest

from jupyter_ptcuda.containers.types import ContainerState, docker_time
from jupyter_ptcuda.errors import ConfigError, Forbidden, NotFound
from jupyter_ptcuda.jobs import outputs as O
from jupyter_ptcuda.jobs.lifecycle import outcome
from jupyter_ptcuda.jobs.store import Job
from jupyter_ptcuda.nofollow import UnsafePath
from jupyter_ptcuda.server.job_handlers import JOB_FIELDS, check_fields


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "nb").mkdir(parents=True)
    (r / "nb" / "train.ipynb").write_text("{}")
    (tmp_path / "secret.ipynb").write_text("{}")
    return r


def test_paths_inside_the_root_resolve(root):
    assert O.resolve_under_root(root, "nb/train.ipynb") == (root / "nb" / "train.ipynb").resolve()
    assert O.resolve_under_root(root, "nb/../nb/train.ipynb").name == "train.ipynb"
    assert O.resolve_under_root(root, str(root / "nb" / "train.ipynb")).name == "train.ipynb"


@pytest.mark.parametrize("path", ["../secret.ipynb", "nb/../../secret.ipynb", "/etc/passwd", "link/secret.ipynb",
                                  "escape.ipynb"])
def test_paths_outside_the_root_are_refused(root, path):
    os.symlink(root.parent, root / "link")
    os.symlink(root.parent / "secret.ipynb", root / "escape.ipynb")
    with pytest.raises(Forbidden, match="outside the server's root"):
        O.resolve_under_root(root, path)


def test_missing_and_malformed_paths(root):
    with pytest.raises(NotFound):
        O.resolve_under_root(root, "nb/missing.ipynb")
    assert O.resolve_under_root(root, "nb/new.train.py", must_exist=False).name == "new.train.py"
    for bad in ("", "   ", "a\x00b"):
        with pytest.raises(ConfigError):
            O.resolve_under_root(root, bad)


def test_relative_to_root(root):
    assert O.relative_to_root(root, str(root / "nb" / "x.py")) == "nb/x.py"
    assert O.relative_to_root(root, "/elsewhere/x.py") == "/elsewhere/x.py"
    assert O.relative_to_root(None, "/a") == "/a"


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@e"})


def test_manifest_says_what_ran_on_what_with_which_result(tmp_path):
    nb = tmp_path / "project"
    nb.mkdir()
    _git(nb, "init", "-q")
    (nb / "train.py").write_text("print('hi')\n")
    _git(nb, "add", "train.py")
    _git(nb, "commit", "-q", "-m", "x")
    head = subprocess.run(["git", "-C", str(nb), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if os.geteuid() == 0:  # as root git runs only as the job's container user, never as root
        assert O.git_commit(str(nb)) is None and O.git_commit(str(nb), "0:0") is None
    else:
        assert O.git_commit(str(nb)) == head
    assert O.git_commit(str(tmp_path), "1000:100") is None  # not a repository: no commit, no error

    out = O.make_output_dir(str(nb), "j1", "")
    job = Job(id="j1", owner="ann", name="train", notebook=str(nb / "train.ipynb"), notebook_sha256="a" * 64,
              script=str(out / "train.py"), script_sha256="b" * 64, workdir=str(nb), output_dir=str(out),
              parameters={"lr": 0.5}, args=["--lr", "0.5"], image="img:tag", image_digest="sha256:" + "c" * 64,
              gpus="0,1", state="completed", reason="completed", exit_code=0, created=100.0, started=101.0,
              finished=111.5, timeout=60.0, requirements=["tqdm"],
              meta={"torch": "2.13.0+cu124", "cuda": "12.4", "git_commit": head, "command": ["python", "-u", "t.py"],
                    "mem_limit": 1024, "nproc_per_node": 2})
    O.write_manifest(job)
    m = json.loads((out / "manifest.json").read_text())
    assert m["notebook_sha256"] == "a" * 64 and m["script_sha256"] == "b" * 64
    assert m["parameters"] == {"lr": 0.5} and m["args"] == ["--lr", "0.5"]
    assert (m["image"], m["image_digest"]) == ("img:tag", "sha256:" + "c" * 64)
    assert m["gpu_ids"] == ["0", "1"] and (m["torch"], m["cuda"]) == ("2.13.0+cu124", "12.4")
    assert m["git_commit"] == head
    assert m["timings"] == {"created": "1970-01-01T00:01:40Z", "started": "1970-01-01T00:01:41Z",
                            "finished": "1970-01-01T00:01:51.500000Z", "duration_s": 10.5}
    assert (m["state"], m["exit_code"], m["reason"]) == ("completed", 0, "completed")
    assert m["limits"] == {"mem_limit": 1024, "timeout_s": 60.0, "nproc_per_node": 2}
    assert m["requirements"] == ["tqdm"]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs git as another user: needs root")
def test_as_root_git_runs_as_the_container_user():
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # /tmp/pytest-of-root is 0700: uid 1000 cannot enter
        os.chmod(d, 0o755)
        nb = os.path.join(d, "project")
        os.mkdir(nb)
        _git(nb, "init", "-q")
        _git(nb, "commit", "-q", "--allow-empty", "-m", "x")
        head = subprocess.run(["git", "-C", nb, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        subprocess.run(["chown", "-R", "1000:100", nb], check=True)
        assert O.git_commit(nb, "1000:100") == head
        os.chmod(os.path.join(nb, ".git"), 0o700)
        subprocess.run(["chown", "0:0", os.path.join(nb, ".git")], check=True)
        assert O.git_commit(nb, "1000:100") is None  # uid 1000 cannot read it: neither can git then


def test_log_is_saved_whole_and_read_from_an_offset(tmp_path):
    job = Job(id="j", output_dir=str(tmp_path))
    assert O.read_log(job) == b""
    O.save_log(job, b"epoch 1\nepoch 2\n")
    assert O.read_log(job, 8) == b"epoch 2\n"
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    assert stat.S_IMODE((tmp_path / "job.log").stat().st_mode) == 0o644


def test_output_dir_is_the_servers_and_artifacts_the_container_users(tmp_path):
    out = O.make_output_dir(str(tmp_path), "j2", "1000:100")
    assert out == tmp_path / "outputs" / "j2" and O.artifacts_dir(out) == out / "artifacts"
    assert out.stat().st_uid == os.geteuid() and stat.S_IMODE(out.stat().st_mode) == 0o755
    assert (out / "artifacts").is_dir()
    if os.geteuid() == 0:
        assert ((out / "artifacts").stat().st_uid, (out / "artifacts").stat().st_gid) == (1000, 100)
        assert (out.parent.stat().st_uid, out.parent.stat().st_gid) == (1000, 100)


def test_job_files_are_never_written_or_read_through_a_link(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    (tmp_path / "nb").mkdir()
    out = O.make_output_dir(str(tmp_path / "nb"), "j4", "1000:100")
    job = Job(id="j4", output_dir=str(out))
    (out / "job.log").symlink_to(secret)
    assert O.read_log(job) == b""  # a link in place of the log: not followed
    O.save_log(job, b"the job's output\n")  # replaces the link
    assert not (out / "job.log").is_symlink() and O.read_log(job) == b"the job's output\n"
    assert secret.read_text() == "root only" and stat.S_IMODE(secret.stat().st_mode) == 0o600

    foreign = tmp_path / "nb" / "outputs" / "j5"  # a job folder that is not the server's: never used
    foreign.mkdir()
    foreign.chmod(0o777)
    (foreign / "job.log").write_text("planted")
    job5 = Job(id="j5", output_dir=str(foreign))
    assert O.read_log(job5) == b""
    O.write_manifest(job5)
    assert not (foreign / "manifest.json").exists()
    with pytest.raises(UnsafePath, match="written by others"):
        O.write_atomic(foreign / "train.py", b"x", server_folder=True)

    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path / "nb")
    if os.geteuid() == 0:  # as root no link in the path is followed; as a user, the user's own links are
        with pytest.raises(UnsafePath, match="symbolic link.*realpath"):
            O.sha256_file(linked / "outputs" / "j4" / "job.log")


def test_a_saved_export_replaces_a_planted_link(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    (tmp_path / "nb").mkdir()
    target = tmp_path / "nb" / "train.train.py"
    target.symlink_to(secret)
    O.write_atomic(target, b"print('exported')\n")
    assert not target.is_symlink() and target.read_text() == "print('exported')\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert secret.read_text() == "root only" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "nb")) == ["train.train.py"]


def test_over_long_paths_are_a_400_before_the_file_system(root):
    for bad in ("a" * 300 + ".ipynb", "nb/" + "x/" * 2100 + "t.ipynb", "nb/\ud800.ipynb"):
        with pytest.raises(ConfigError, match="too long|not a valid file name"):
            O.resolve_under_root(root, bad)


@pytest.mark.parametrize("state, cancel_reason, expected", [
    ({"ExitCode": 0}, None, ("completed", "completed", 0)),
    ({"ExitCode": 3}, None, ("failed", "failed", 3)),
    ({"ExitCode": 137, "OOMKilled": True}, None, ("failed", "OOMKilled", 137)),
    ({"ExitCode": 143}, "cancelled", ("cancelled", "cancelled", 143)),
    ({"ExitCode": 137}, "timed_out", ("timed_out", "timed out", 137)),
])
def test_outcome(state, cancel_reason, expected):
    container = ContainerState.from_inspect({"Id": "c" * 64, "State": state, "Config": {}})
    assert outcome(Job(id="j", cancel_reason=cancel_reason), container) == expected
    assert outcome(Job(id="j"), None) == ("failed", "container lost", None)


def test_docker_time():
    assert docker_time("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456)
    assert docker_time("2024-05-01T10:00:00Z") == 1714557600.0
    assert docker_time("2024-05-01T12:00:00.5+02:00") == 1714557600.5
    assert docker_time("0001-01-01T00:00:00Z") is None and docker_time(None) is None and docker_time("junk") is None


def test_rest_fields_are_checked():
    check_fields({"path": "a.ipynb", "gpus": ["1"], "timeout": 5, "params": {}}, JOB_FIELDS)
    for body, words in [({"path": "a", "colour": 1}, "unknown field"), ({"lenient": True}, "'path' is required"),
                        ({"path": 3}, "'path'"), ({"path": "a", "timeout": True}, "boolean"),
                        ({"path": "a", "params": []}, "'params'")]:
        with pytest.raises(ConfigError, match=words):
            check_fields(body, JOB_FIELDS)


def test_unwritable_notebook_folder_is_a_clear_error(tmp_path):
    (tmp_path / "outputs").write_text("a file where the folder should be")
    with pytest.raises(Forbidden, match="must be writable"):
        O.make_output_dir(str(tmp_path), "j3", "")
