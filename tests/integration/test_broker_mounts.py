"""The broker's mount checks on the real engine: a folder swapped for a symlink between the broker's check
and Docker's mount is caught after the start (device and inode inside the container), the container removed."""

from __future__ import annotations

import asyncio
import os

import pytest

from jupyter_ptcuda.broker.app import PtcudaBroker
from jupyter_ptcuda.broker.ops import Broker
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers import wire
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.containers.service import ContainerService
from jupyter_ptcuda.containers.spec import ContainerSpec, Mount
from jupyter_ptcuda.errors import Forbidden

pytestmark = pytest.mark.integration


def make_broker(engine, home, swap=None):
    config = PtcudaBroker(images=["jupyter-ptcuda-test:*"], mount_roots=[str(home)], user_map={"alice": "1000:100"})
    service = ContainerService(engine)
    if swap is not None:
        real_launch = service.launch

        async def launch(spec, **kw):
            swap()  # the user's move, after the broker's check, before Docker's mount
            return await real_launch(spec, **kw)

        service.launch = launch  # type: ignore[method-assign]
    return Broker(config, service, GpuLedger(service, lambda: {})), service


def job_spec(image, data):
    return ContainerSpec(image=image, command=("sleep", "30"), user="1000:100", workdir="/tmp",
                         labels=L.make(L.JOB, owner_uid=1000, server_id="t", server_pid=1, id="swapjob"),
                         mounts=(Mount(str(data), "/data", True),))


def test_a_folder_swapped_for_a_link_after_the_check_is_caught_and_the_container_removed(engine, test_image, tmp_path):
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("mine")

    def swap():
        os.rename(data, home / "data.orig")
        os.symlink("/etc", data)

    async def go():
        broker, service = make_broker(engine, home, swap)
        with pytest.raises(Forbidden, match="changed between the broker's check and the mount"):
            await broker.call("alice", "launch", {"spec": wire.spec_to_json(job_spec(test_image, data))})
        return await service.list(L.JOB, id="swapjob")

    assert asyncio.run(go()) == []  # removed, not left running with /etc mounted


def test_an_unswapped_folder_mounts_and_a_link_is_refused_before_start(engine, test_image, tmp_path):
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("mine")
    (home / "link").symlink_to("/etc")

    async def go():
        broker, service = make_broker(engine, home)
        with pytest.raises(Forbidden, match="symbolic link"):
            await broker.call("alice", "launch", {"spec": wire.spec_to_json(job_spec(test_image, home / "link"))})
        r = await broker.call("alice", "launch", {"spec": wire.spec_to_json(job_spec(test_image, data))})
        try:
            code, out = await service.exec(r["id"], ["cat", "/data/mine.txt"])
            state = await service.inspect(r["id"])
        finally:
            await service.remove(r["id"])
        return code, out, state

    code, out, state = asyncio.run(go())
    assert (code, out.strip()) == (0, b"mine")
    assert state is not None and state.tag.owner == "alice" and state.tag.owner_uid == 1000
