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
