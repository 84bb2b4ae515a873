"""The broker's mounts on the real engine: Docker binds the very folder the broker checked (a descriptor,
staged at a path of the broker's own), so a folder swapped for a symlink after the check mounts what was
checked, never what the link points to; a link in the request is refused before anything starts; a
container that exits at once keeps its output; reading the container back gives the user's paths."""

from __future__ import annotations

import asyncio
import os

import pytest

from jupyter_ptcuda.broker.app import PtcudaBroker
from jupyter_ptcuda.broker.ops import Broker
from jupyter_ptcuda.broker.policy import BrokerPolicy
from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Request
from jupyter_ptcuda.containers.docker.service import DockerContainerService
from jupyter_ptcuda.containers.ledger import GpuLedger
from jupyter_ptcuda.containers.remote.service import request_of
from jupyter_ptcuda.containers.spec import ContainerSpec, Mount
from jupyter_ptcuda.containers.wire import request_to_json
from jupyter_ptcuda.errors import Forbidden

pytestmark = pytest.mark.integration


def make_broker(engine, home, private_root, swap=None):
    config = PtcudaBroker(images=["jupyter-ptcuda-test:*"], mount_roots=[str(home)], user_map={"alice": "1000:100"},
                          private_root=str(private_root))
    service = DockerContainerService(engine)
    if swap is not None:
        real_launch = service.launch

        async def launch(spec, **kw):
            swap()  # the user's move, after the broker's check, before Docker's mount
            return await real_launch(spec, **kw)

        service.launch = launch  # type: ignore[method-assign]
    return Broker(BrokerPolicy.of(config), service, GpuLedger(service, lambda: {})), service


def job(image, data, command=("sleep", "30")):
    return {"request": request_to_json(Request(kind=L.JOB, image=image, command=tuple(command), id="swapjob",
                                               mounts=(Mount(str(data), "/data", True),)))}


def test_a_folder_swapped_for_a_link_after_the_check_mounts_what_was_checked(engine, test_image, tmp_path):
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("mine")
    secret = tmp_path / "other-user"
    secret.mkdir()
    (secret / "mine.txt").write_text("someone else's")

    def swap():
        os.rename(data, home / "data.orig")
        os.symlink(secret, data)

    async def go():
        broker, service = make_broker(engine, home, tmp_path / "private", swap)
        r = await broker.call("alice", "launch", job(test_image, data, ("cat", "/data/mine.txt")))
        try:
            code = await service.wait(r["id"])
            return code, await service.logs(r["id"]), r
        finally:
            await service.remove(r["id"])
            broker.staging.close()

    code, out, r = asyncio.run(go())
    assert (code, out.strip()) == (0, "mine")  # the checked folder, not the link's target
    assert [m["source"] for m in r["spec"]["mounts"]] == [str(data)]  # the user's path, not the staging one
    assert os.listdir(tmp_path / "private" / "staging") == []  # nothing staged is left behind (its folder neither)


def test_a_link_is_refused_before_start_and_a_quick_container_keeps_its_output(engine, test_image, tmp_path):
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    (data / "mine.txt").write_text("mine")
    (home / "link").symlink_to("/etc")

    async def go():
        broker, service = make_broker(engine, home, tmp_path / "private")
        with pytest.raises(Forbidden, match="symbolic link"):
            await broker.call("alice", "launch", job(test_image, home / "link"))
        assert await service.list(L.JOB, id="swapjob") == []  # nothing started for the refused request
        r = await broker.call("alice", "launch", job(test_image, data, ("cat", "/data/mine.txt")))
        try:  # it may have exited before the broker answered: it is the user's, output and all
            code = await service.wait(r["id"])
            spec = (await broker.call("alice", "spec_of", {"cid": r["id"]}))["spec"]
            return code, await service.logs(r["id"]), await service.inspect(r["id"]), spec
        finally:
            await service.remove(r["id"])
            broker.staging.close()

    code, out, state, spec = asyncio.run(go())
    assert (code, out.strip()) == (0, "mine")
    assert state is not None and state.tag.owner == "alice" and state.tag.owner_uid == 1000
    assert [(m["source"], m["target"]) for m in spec["mounts"]] == [(str(data), "/data")]


def test_what_a_server_sends_is_a_request_never_its_spec(test_image):
    """The user's server sends a request: no user, labels, ports or private folder of its choosing travel."""
    spec = ContainerSpec(image=test_image, command=("python",), user="0:0", workdir="/home/a/nb",
                         labels={**L.make(L.KERNEL, owner_uid=0, server_id="s", server_pid=7, id="k1",
                                          kernel_dir="/tmp/evil"), "x": "y"},
                         mounts=(Mount("/home/a/nb", "/home/a/nb"), Mount("/tmp/evil", "/tmp/evil")),
                         ports={8888: 8888}, env={"NVIDIA_VISIBLE_DEVICES": "all", "A": "1"})
    sent = request_of(spec)
    assert sent["kind"] == "kernel" and sent["id"] == "k1" and sent["workdir"] == "/home/a/nb" and sent["mount_workdir"]
    assert sent["mounts"] == [] and sent["env"] == {"A": "1"}
    assert not {"user", "labels", "ports", "private_dir", "run_as", "network"} & set(sent)
