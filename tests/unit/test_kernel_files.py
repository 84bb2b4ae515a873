"""Where a kernel's secrets go: the container's copy, the container user, and what a sweep removes."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import time

import pytest

from jupyter_ptcuda import kernel_files
from jupyter_ptcuda.containers import spec as S
from jupyter_ptcuda.containers.options import ISOLATED_UID, ContainerOptions
from jupyter_ptcuda.errors import Conflict


def test_connection_file_is_placed_in_the_container_owned_by_its_user():
    spec = S.ContainerSpec(image="i", command=("python",), user="1234:100", workdir="/w",
                           files=(S.SpecFile("/run/ptcuda/kernel.json", b'{"key": "s3cr3t"}'),))
    with tarfile.open(fileobj=io.BytesIO(S.files_archive(spec))) as tar:
        entries = {m.name: (m.type, oct(m.mode), m.uid, m.gid) for m in tar.getmembers()}
        data = tar.extractfile("run/ptcuda/kernel.json").read()
    assert entries == {"run/ptcuda": (tarfile.DIRTYPE, "0o700", 1234, 100),
                       "run/ptcuda/kernel.json": (tarfile.REGTYPE, "0o400", 1234, 100)}
    assert data == b'{"key": "s3cr3t"}'
    assert "s3cr3t" not in repr(spec.files)  # specs are logged; keys never are
    assert S.files_archive(S.ContainerSpec(image="i", command=(), user="1:1", workdir="/")) is None
    with pytest.raises(Exception, match="absolute"):
        S.files_archive(S.ContainerSpec(image="i", command=(), user="1:1", workdir="/",
                                        files=(S.SpecFile("../etc/passwd", b""),)))


@pytest.mark.skipif(os.geteuid() != 0, reason="the rules for a root server")
def test_a_root_server_runs_containers_as_the_folders_owner_else_an_isolated_uid(tmp_path):
    owned = tmp_path / "alice"
    owned.mkdir()
    os.chown(owned, 4321, 100)
    rootdir = tmp_path / "root-owned"
    rootdir.mkdir()
    opts = ContainerOptions()
    assert opts.container_user(str(owned)) == "4321:100"
    assert opts.container_user(str(rootdir)) == f"{ISOLATED_UID}:{ISOLATED_UID}"
    assert opts.container_user(None) == f"{ISOLATED_UID}:{ISOLATED_UID}"
    assert ContainerOptions(unprivileged_uid=2000).container_user(str(owned)) == "2000:100"
    assert ContainerOptions(allow_root=True).container_user(str(owned)) == "0:0"


def test_private_base_refuses_a_folder_somebody_else_can_write(tmp_path, monkeypatch):
    squatted = tmp_path / "squat"
    squatted.mkdir(mode=0o777)
    os.chmod(squatted, 0o777)
    monkeypatch.setenv("JUPYTER_PTCUDA_RUNTIME_DIR", str(squatted))
    with pytest.raises(Conflict, match="not a private folder") as refused:
        kernel_files.private_base()
    assert refused.value.status == 409 and "Remove it" in refused.value.message  # the user's to fix: a 4xx
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    monkeypatch.setenv("JUPYTER_PTCUDA_RUNTIME_DIR", str(link))
    with pytest.raises(Conflict, match="not a private folder"):
        kernel_files.private_base()


def test_without_xdg_runtime_dir_the_private_folder_is_in_the_home_not_a_guessable_tmp_name(tmp_path, monkeypatch):
    """Under JupyterHub a user's server has no XDG_RUNTIME_DIR: its folder must not be /tmp/<guessable>, which
    another local user could make first (every kernel start of its owner was refused)."""
    if os.geteuid() == 0:
        pytest.skip("as root the folder is /run/jupyter-ptcuda")
    monkeypatch.delenv("JUPYTER_PTCUDA_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "home" / "runtime"))
    base = kernel_files.private_base()
    assert base == tmp_path / "home" / "runtime" / "jupyter-ptcuda" and not str(base).startswith("/tmp/jupyter-ptcuda-")


def test_record_and_remove(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PTCUDA_RUNTIME_DIR", str(tmp_path / "private"))
    conn = tmp_path / "kernel-k1.json"
    conn.write_text("{}")
    ipc = kernel_files.ipc_dir("k1", f"{os.geteuid()}:{os.getegid()}")
    assert oct(os.stat(ipc).st_mode & 0o777) == "0o700"
    kernel_files.write_record("k1", "host:1:2", str(conn), ipc)
    assert [r["kernel_id"] for r in kernel_files.read_records()] == ["k1"]
    kernel_files.remove("k1")
    assert not conn.exists() and not ipc.exists() and kernel_files.read_records() == []
    kernel_files.remove("k1")  # idempotent


HOST = socket.gethostname()


@pytest.mark.parametrize("record, alive, expected", [
    ({"kernel_id": "k", "server_id": f"{HOST}:111:5", "created": 0}, False, "the server that started it (pid 111) is gone"),
    ({"kernel_id": "k", "server_id": f"{HOST}:111:5", "created": 0}, True, None),
    ({"kernel_id": "k", "server_id": "otherhost:111:5", "created": 0}, False, None),  # not ours to judge
    ({"kernel_id": "k", "server_id": "OWN", "created": 0}, True, "its kernel is no longer managed by this server"),
    ({"kernel_id": "known", "server_id": "OWN", "created": 0}, True, None),
    ({"kernel_id": "k", "server_id": "OWN", "created": "NOW"}, True, None),  # starting right now
])
def test_stale_reason(record, alive, expected):
    """A dead server's kernels, and kernels this server forgot (restart limit), are stale."""
    if record["created"] == "NOW":
        record = {**record, "created": time.time()}
    got = kernel_files.stale_reason(record, own_server_id="OWN", known_kernels={"known"}, pid_alive=lambda pid: alive)
    assert got == expected


def test_sweep_removes_only_stale_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PTCUDA_RUNTIME_DIR", str(tmp_path / "private"))
    for kid, sid in (("dead", f"{HOST}:111:1"), ("live", f"{HOST}:222:1")):
        conn = tmp_path / f"kernel-{kid}.json"
        conn.write_text(json.dumps({"key": kid}))
        kernel_files.write_record(kid, sid, str(conn), None)
    removed = kernel_files.sweep(own_server_id=None, known_kernels=None, pid_alive=lambda pid: pid == 222)
    assert removed == [{"kernel_id": "dead", "why": "the server that started it (pid 111) is gone"}]
    assert not (tmp_path / "kernel-dead.json").exists() and (tmp_path / "kernel-live.json").exists()
