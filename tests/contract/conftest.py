"""The contract suite's backends: one :class:`Leg` per backend, one ``backend`` fixture parameter each.

A leg makes the backend's service for a test (``async with leg.session() as svc``), builds specs for the
suite's workloads (:class:`Workload`: lines printed, then an exit code or "runs until signalled"), says
which capabilities the backend declares (:meth:`Leg.missing`: None, or why not, the skip reason) and
removes every container it launched when the session ends.

- ``fake``: tests/fakes/backend.py (declares everything; time moves by its clock).
- ``docker``: :class:`jupyter_ptcuda.containers.docker.service.DockerContainerService` on the real engine, the test image.
- ``kubernetes``: :class:`~jupyter_ptcuda.containers.kube.backend.KubeContainerService` against the in-memory
  API server (tests/kube/fakeapi.py) whose node (tests/kube/kubelet.py) runs each pod on the local engine.

- ``broker``: :class:`~jupyter_ptcuda.containers.remote.service.RemoteContainerService` against a real broker
  under a real JupyterHub (tests/hub/harness.py), as Hub user ptcuda-alice.

Adding a backend = one more :class:`Leg` subclass and its name in :data:`LEGS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shlex
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.build import Policy, Request, build
from jupyter_ptcuda.containers.gpus import NONE, GpuRequest
from jupyter_ptcuda.containers.identity import this_server
from jupyter_ptcuda.containers.spec import ContainerSpec
from tests.fakes.backend import FakeBackend, FakeClock, Program
from tests.hub.conftest import hub_env_ready, hub_factory  # noqa: F401 - the broker leg's Hub


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a container of the suite does: print ``lines``, then exit with ``exit`` (None: run until
    signalled)."""

    lines: tuple[str, ...] = ()
    exit: int | None = None

    def command(self) -> tuple[str, ...]:
        script = "".join(f"echo {shlex.quote(line)}; " for line in self.lines)
        return ("sh", "-c", script + (f"exit {self.exit}" if self.exit is not None else "exec sleep 600"))


def exec_answer(argv: list[str]) -> tuple[int, bytes]:
    """What the fake's programs answer to the suite's one exec (``sh -c 'echo $((6*7))'``)."""
    if argv == ["sh", "-c", "echo $((6*7))"]:
        return 0, b"42\n"
    return 127, b"fake: unknown command\n"


class Leg:
    """One backend under the contract. Subclasses make the service and say what it declares."""

    name = ""
    #: Seconds a state may take to show (a real engine or a pod is slower than memory).
    within = 60.0

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.uid = 40000 + secrets.randbelow(20000)  # our containers' owner: nobody else's listing sees them
        self.identity = dataclasses.replace(this_server(), uid=self.uid, gid=100, name=f"contract-{self.uid}")
        self.launched: list[str] = []
        self.started_with: dict[str, ContainerSpec] = {}  # container -> the spec the backend says it started
        self.service: Any = None

    # what the backend declares ------------------------------------------------------------------------
    def missing(self, capability: str) -> str | None:
        """None when the backend declares ``capability``, else the sentence saying why not (the skip)."""
        svc = self.service
        if capability == "exec":
            return svc.no_exec
        if capability == "deadlines":
            return None if svc.enforces_deadlines else f"{self.name}: the backend does not end a job at its timeout " \
                                                       "(enforces_deadlines False: the job lifecycle's timer does)"
        if capability == "scheduler":
            return None if svc.waits_for_scheduler else f"{self.name}: containers start at once " \
                                                        "(waits_for_scheduler False)"
        if capability == "gpus":
            return None
        raise AssertionError(f"unknown capability {capability!r}")

    def require(self, capability: str) -> None:
        why = self.missing(capability)
        if why:
            pytest.skip(why)

    # specs ---------------------------------------------------------------------------------------------
    @property
    def image(self) -> str:
        return "contract:1"

    def spec(self, work: Workload, *, kind: str = L.JOB, id: str = "", gpus: GpuRequest = NONE) -> ContainerSpec:
        return build(Request(kind=kind, image=self.image, command=work.command(), run_as=f"{self.uid}:100",
                             workdir="/tmp", mount_workdir=False,
                             gpus=gpus, id=id or secrets.token_hex(6), shm_size=None),
                     Policy(images=(self.image,)), self.identity)

    async def launch(self, spec: ContainerSpec, **kw: Any) -> str:
        launched = await self.service.launch(spec, **kw)
        self.launched.append(launched.id)
        self.started_with[launched.id] = launched.spec
        return launched.id

    def launch_kw(self, *, timeout: float | None = None, wait: bool = True) -> dict[str, Any]:
        """Keywords of launch that only some backends take (a job's deadline, not waiting for the scheduler)."""
        return {"timeout": timeout, "wait": wait}

    # time and scheduling ---------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of the backend's time pass (the fake: its clock; real ones: they pass anyway)."""

    @contextlib.asynccontextmanager
    async def unschedulable(self) -> AsyncIterator[Callable[[ContainerSpec], ContainerSpec]]:
        """While open, a spec made with the yielded function waits for the scheduler, with a reason."""
        raise NotImplementedError
        yield  # pragma: no cover

    async def until(self, what: str, check: Callable[[], Any]) -> Any:
        """``await check()`` until it is truthy; AssertionError naming ``what`` after :attr:`within` seconds."""
        deadline = time.monotonic() + self.within
        while True:
            got = await check()
            if got:
                return got
            assert time.monotonic() < deadline, f"{self.name}: {what} within {self.within:.0f} s"
            await asyncio.sleep(0.05)

    # the service's life ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        async with self._made() as svc:
            self.service = svc
            try:
                yield svc
            finally:
                for cid in self.launched:
                    await svc.remove(cid)
                for left in await svc.list(owner_uid=self.uid):
                    await svc.remove(left.id)

    @contextlib.asynccontextmanager
    async def _made(self) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover


class FakeLeg(Leg):
    name = "fake"
    within = 5.0

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__(request)
        self.clock = FakeClock()
        self._programs: dict[tuple[str, ...], Workload] = {}

    def spec(self, work: Workload, **kw: Any) -> ContainerSpec:
        self._programs[work.command()] = work
        return super().spec(work, **kw)

    def _program(self, spec: ContainerSpec) -> Program:
        work = self._programs[spec.command]
        return Program(output="".join(f"{line}\n" for line in work.lines).encode(), exit_code=work.exit,
                       exec=exec_answer)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @contextlib.asynccontextmanager
    async def unschedulable(self) -> AsyncIterator[Callable[[ContainerSpec], ContainerSpec]]:
        self.service.hold = "FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        try:
            yield lambda spec: spec
        finally:
            self.service.hold = None

    @contextlib.asynccontextmanager
    async def _made(self) -> AsyncIterator[Any]:
        yield FakeBackend(self.clock, programs=self._program, enforces_deadlines=True, waits_for_scheduler=True)


class DockerLeg(Leg):
    name = "docker"

    @property
    def image(self) -> str:
        return self.request.getfixturevalue("test_image")

    def missing(self, capability: str) -> str | None:
        if capability == "gpus" and os.environ.get("PTCUDA_ENGINE_HOOK", "1") != "1":
            return "docker: this engine has no NVIDIA runtime (PTCUDA_ENGINE_HOOK=0)"
        return super().missing(capability)

    def launch_kw(self, *, timeout: float | None = None, wait: bool = True) -> dict[str, Any]:
        return {}

    @contextlib.asynccontextmanager
    async def _made(self) -> AsyncIterator[Any]:
        from jupyter_ptcuda.containers.docker.service import DockerContainerService

        self.request.getfixturevalue("engine")
        yield DockerContainerService()


class KubeLeg(Leg):
    name = "kubernetes"

    @property
    def image(self) -> str:
        return self.request.getfixturevalue("test_image")

    @contextlib.asynccontextmanager
    async def unschedulable(self) -> AsyncIterator[Callable[[ContainerSpec], ContainerSpec]]:
        # the node has one GPU: a pod asking for more waits for a node that has them
        yield lambda spec: spec.with_gpus(GpuRequest("count", 4))

    @contextlib.asynccontextmanager
    async def _made(self) -> AsyncIterator[Any]:
        from aiohttp.test_utils import TestServer
        from kubernetes_asyncio import client

        from jupyter_ptcuda.containers.kube.backend import KubeContainerService
        from jupyter_ptcuda.containers.kube.options import KubeOptions
        from tests.kube.fakeapi import FakeKube
        from tests.kube.kubelet import Node
        from tests.kube.test_kube_backend import ROLE

        self.image  # noqa: B018 - the engine and the test image, or the skip/failure that says why not
        fake = FakeKube()
        fake.use_role(ROLE)
        server = TestServer(fake.app())
        await server.start_server()
        conf = client.Configuration(host=str(server.make_url("")).rstrip("/"))
        home = tempfile.mkdtemp(prefix="ptcuda-contract-")
        svc = KubeContainerService(KubeOptions(namespace="hub", notebook_root=home), configuration=conf,
                                   identity=self.identity, poll=0.2)
        node = Node(fake, capacity={"nvidia.com/gpu": "1"}, claims={f"claim-{self.identity.name}": home})
        await node.start()
        try:
            yield svc
        finally:
            await node.stop()
            await svc.close()
            await fake.close()
            await server.close()


class RemoteLeg(Leg):
    """The broker client (:class:`~jupyter_ptcuda.containers.remote.service.RemoteContainerService`) against a
    real broker: a real JupyterHub with the broker as its managed service (examples/jupyterhub_config.py),
    one fake GPU there, the real engine behind it; the client holds a token of Hub user ptcuda-alice, so the
    containers are hers (the broker sets the owner: the leg's uid is hers)."""

    name = "broker"
    within = 60.0

    def __init__(self, request: pytest.FixtureRequest) -> None:
        super().__init__(request)
        import pwd

        from tests.hub.harness import USERS

        self.user = USERS[0]
        account = pwd.getpwnam(self.user)
        self.uid = account.pw_uid
        self.identity = dataclasses.replace(this_server(), uid=account.pw_uid, gid=account.pw_gid, name=self.user)

    @property
    def image(self) -> str:
        return self.request.getfixturevalue("test_image")

    def spec(self, work: Workload, *, kind: str = L.JOB, id: str = "", gpus: GpuRequest = NONE) -> ContainerSpec:
        return build(Request(kind=kind, image=self.image, command=work.command(), run_as=f"{self.uid}:{self.identity.gid}",
                             workdir="/tmp", mount_workdir=False, gpus=gpus, id=id or secrets.token_hex(6),
                             shm_size=None), Policy(images=(self.image,)), self.identity)

    def launch_kw(self, *, timeout: float | None = None, wait: bool = True) -> dict[str, Any]:
        return {}

    @contextlib.asynccontextmanager
    async def _made(self) -> AsyncIterator[Any]:
        from jupyter_ptcuda.containers.remote.service import RemoteContainerService

        hub = self.request.getfixturevalue("broker_hub")
        token = hub.token(self.user, scopes=["access:services!service=ptcuda-broker"])
        yield RemoteContainerService(hub.broker_url, token)


@pytest.fixture(scope="session")
def broker_hub(hub_factory, test_image):  # noqa: F811 - the fixture imported above
    """A Hub with the broker as its managed service, once per session (the contract's broker leg)."""
    from tests.hub import harness as H

    port = H.free_port()
    hub = hub_factory(extra_config=H.broker_config(port, test_image, 'c.PtcudaBroker.nvml = "fake:1"\n'))
    return H.attach_broker(hub, port, test_image)


#: The backends under contract, by fixture parameter.
LEGS: dict[str, type[Leg]] = {"fake": FakeLeg, "docker": DockerLeg, "kubernetes": KubeLeg, "broker": RemoteLeg}


@pytest.fixture(params=[pytest.param(name, marks=() if name == "fake" else pytest.mark.integration) for name in LEGS])
def backend(request: pytest.FixtureRequest) -> Leg:
    return LEGS[request.param](request)
