"""What the reaper calls an orphaned model server (pure: from a container's labels and state)."""

from __future__ import annotations

import socket
import time

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.reaper import orphan_reason
from jupyter_ptcuda.containers.types import ContainerState


def _serve(running: bool, status: str, age: float = 120.0) -> ContainerState:
    labels = L.make(L.SERVE, owner_uid=1000, server_id=f"{socket.gethostname()}:999999999:1", server_pid=999999999,
                    id="0123456789ab", notebook="models:/linear/1")
    return ContainerState(id="c" * 64, name="ptcuda-serve-0123456789ab", image="sha256:x", image_id="sha256:x",
                          running=running, status=status, tag=L.Tag.read(labels), labels=labels,
                          created=time.time() - age)


def test_a_model_server_outlives_the_command_that_started_it_and_is_reaped_once_its_server_exits():
    assert orphan_reason(_serve(True, "running")) is None  # its starting command (pid 999999999) is long gone
    assert orphan_reason(_serve(False, "exited")) == "its model server has exited (exited)"
    assert orphan_reason(_serve(False, "exited", age=5)) is None  # within the grace period
    assert orphan_reason(_serve(False, "created")) is None  # still starting
    assert L.SERVE in L.GPU_KINDS and L.Tag.read(_serve(True, "running").labels).id == "0123456789ab"


class _Service:
    """What reap_orphans asks of a backend: its containers, remove, and the backend's own reaping."""

    def __init__(self, containers: list[ContainerState]) -> None:
        self.containers, self.removed = containers, []

    async def list(self) -> list[ContainerState]:
        return self.containers

    async def remove(self, cid: str) -> None:
        self.removed.append(cid)

    async def reap(self, **kw) -> list:
        return []


async def test_a_reaped_model_server_takes_its_socket_folder_with_it_and_only_its_own(tmp_path, monkeypatch):
    import dataclasses

    from jupyter_ptcuda.containers.reaper import reap_orphans

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_PTCUDA_RUNTIME_DIR", str(private))
    mine = private / "0123456789ab"
    mine.mkdir()
    (mine / "scoring.sock").write_text("")
    elsewhere = tmp_path / "elsewhere" / "0123456789ab"  # a label naming a folder that is not this server's
    elsewhere.mkdir(parents=True)
    exited = _serve(False, "exited")
    own = dataclasses.replace(exited, tag=dataclasses.replace(exited.tag, kernel_dir=str(mine)))
    other = dataclasses.replace(exited, id="d" * 64, tag=dataclasses.replace(exited.tag, kernel_dir=str(elsewhere)))
    service = _Service([own, other])
    gone = await reap_orphans(service, grace=0)  # type: ignore[arg-type]
    assert [g["why"] for g in gone] == ["its model server has exited (exited)"] * 2
    assert service.removed == ["c" * 64, "d" * 64]
    assert not mine.exists() and elsewhere.exists()
