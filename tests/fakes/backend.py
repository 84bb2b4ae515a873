"""An in-memory container backend: the container service's interface with no engine, no cluster, no sleep.

A container is a record; what it does is a :class:`Program` (its output, its exit code, or "runs until
signalled"), chosen per spec by the ``programs`` hook. The test moves it on with :meth:`FakeBackend.exit`,
:meth:`~FakeBackend.write`, :meth:`~FakeBackend.use_cpu`, :meth:`~FakeBackend.schedule`, and moves time with
:class:`FakeClock` (created/started/finished, deadlines and pending time read it). Every wait in here
(``wait``, ``follow``) wakes on a change, not on a timer.

Declared like the real backends: ``no_exec`` (None: exec works, through the program's ``exec``),
``enforces_deadlines`` and ``waits_for_scheduler`` (both off unless asked for). Used by the contract suite
(tests/contract) beside Docker and Kubernetes, and by unit tests of the idle watch and the job lifecycle.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import hashlib
import itertools
import signal as signal_module
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.containers.base import ContainerService
from jupyter_ptcuda.containers.spec import ContainerSpec
from jupyter_ptcuda.containers.types import DEADLINE_STATUS, ContainerState, ImageInfo, Launched
from jupyter_ptcuda.errors import ConfigError, Conflict, ImageNotFound, LaunchError, NotFound


class FakeClock:
    """Time that moves only when told: ``time()`` (epoch seconds) and ``monotonic()`` move together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Program:
    """What a fake container does. ``exit_code`` None: it runs until signalled or told to :meth:`exit`.
    ``ignores``: signals it survives (SIGTERM for a process that traps it). ``exec``: ``argv -> (code,
    output)`` for a command run in it (default: refused with 127)."""

    output: bytes = b""
    exit_code: int | None = None
    ignores: frozenset[str] = frozenset()
    exec: Callable[[list[str]], tuple[int, bytes]] | None = None


@dataclasses.dataclass
class _Box:
    id: str
    name: str
    spec: ContainerSpec
    program: Program
    created: float
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    oom: bool = False
    status: str = "running"
    pending: str | None = None  # why it waits for the scheduler (waits_for_scheduler only)
    output: bytearray = dataclasses.field(default_factory=bytearray)
    cpu: float = 0.0
    deadline: float | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"


class FakeBackend(ContainerService):
    """The container service's interface in memory (a subclass of the interface: what it does not override
    is the interface's default). See the module docstring."""

    no_exec: str | None = None

    def __init__(self, clock: FakeClock | None = None, *, programs: Callable[[ContainerSpec], Program] | None = None,
                 enforces_deadlines: bool = False, waits_for_scheduler: bool = False,
                 images: dict[str, dict[str, str]] | None = None, private_root: Path | None = None) -> None:
        self.clock = clock or FakeClock()
        self.programs = programs or (lambda spec: Program())
        self.enforces_deadlines = enforces_deadlines
        self.waits_for_scheduler = waits_for_scheduler
        self.images = images  # ref -> labels; None: every image exists (with no labels)
        self.private_root = private_root
        self.hold: str | None = None  # waits_for_scheduler: new containers stay pending with this reason
        self.boxes: dict[str, _Box] = {}
        self.released: list[str] = []  # GPU claims given back (release), in order
        self.pulled: list[str] = []
        self.signals: list[tuple[str, str]] = []  # (container, signal) as asked, in order
        self.looks = 0  # inspect calls so far: a test waits for a watcher's next looks
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None

    # -- the test's controls --------------------------------------------------------------------------
    def exit(self, cid: str, code: int = 0, *, oom: bool = False) -> None:
        """The container's process ends with ``code`` (``oom``: killed for its memory limit)."""
        box = self._box(cid)
        if box.status in ("running", "created"):
            box.status, box.exit_code, box.oom, box.finished = "exited", code, oom, self.clock.time()
            self._notify()

    def write(self, cid: str, data: bytes) -> None:
        """The container prints ``data``."""
        self._box(cid).output += data
        self._notify()

    def use_cpu(self, cid: str, seconds: float) -> None:
        """The container's processes use ``seconds`` more CPU time (what the idle watch measures)."""
        self._box(cid).cpu += seconds

    def schedule(self, cid: str) -> None:
        """A pending container gets its node and starts (waits_for_scheduler)."""
        box = self._box(cid)
        if box.status == "created":
            self._start(box)
            self._notify()

    # -- plumbing -------------------------------------------------------------------------------------
    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _changes(self) -> None:
        await self._event().wait()

    def _box(self, cid: str) -> _Box:
        box = self.boxes.get(cid) or next((b for b in self.boxes.values() if b.name == cid), None)
        if box is None:
            raise NotFound(f"container {cid} is gone.")
        self._tick(box)
        return box

    def _tick(self, box: _Box) -> None:
        """Deadlines read the clock when someone looks (the backend ends a job at its timeout)."""
        if box.deadline is not None and box.running and self.clock.time() >= box.deadline:
            box.status, box.exit_code, box.finished = DEADLINE_STATUS, 137, box.deadline
            self._notify()

    def _start(self, box: _Box) -> None:
        box.status, box.pending, box.started = "running", None, self.clock.time()
        box.output += box.program.output
        if box.program.exit_code is not None:
            box.status, box.exit_code, box.finished = "exited", box.program.exit_code, box.started

    def _state(self, box: _Box) -> ContainerState:
        labels = dict(box.spec.labels)
        return ContainerState(
            id=box.id, name=box.name, image=box.spec.image, image_id=self._image_id(box.spec.image),
            running=box.running, status=box.status, tag=L.Tag.read(labels), labels=labels, exit_code=box.exit_code,
            oom_killed=box.oom, created=box.created, started_at=box.started, finished_at=box.finished)

    @staticmethod
    def _image_id(ref: str) -> str:
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    # -- the interface --------------------------------------------------------------------------------
    async def ping(self) -> dict[str, str]:
        return {"version": "fake", "api_version": "1"}

    async def private_dir(self, kernel_id: str, user: str) -> Path:
        if self.private_root is None:
            raise ConfigError("this fake backend was made without private_root: it keeps no kernel folders.")
        path = self.private_root / kernel_id
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None, gpu_resource: str | None = None,
                     wait: bool = True, on_pending: Callable[[str], None] | None = None) -> Launched:
        """Start ``spec`` (pending while :attr:`hold` is set and the backend waits for a scheduler);
        ``timeout``: where :attr:`enforces_deadlines`, the backend ends it then (:data:`DEADLINE_STATUS`)."""
        if self.images is not None and spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image!r} is not present.")
        cid = f"{next(self._ids):012x}" + hashlib.sha256(spec.image.encode()).hexdigest()[:52]
        if spec.name and any(b.name == spec.name for b in self.boxes.values()):
            raise Conflict(f"a container named {spec.name} exists already.")
        box = _Box(id=cid, name=spec.name or f"fake-{cid[:12]}", spec=spec, program=self.programs(spec),
                   created=self.clock.time())
        self.boxes[cid] = box
        if self.waits_for_scheduler and self.hold is not None:
            box.status, box.pending = "created", self.hold
        else:
            self._start(box)
        if timeout and self.enforces_deadlines:
            box.deadline = box.created + timeout
        self._notify()
        return Launched(cid, spec)

    def release(self, claim: str) -> None:
        self.released.append(claim)

    async def run_once(self, spec: ContainerSpec, *, timeout: float = 300, claim: str | None = None,
                       gpu_fallback: str = "error") -> tuple[int, str, Launched]:
        launched = await self.launch(spec, claim=claim, gpu_fallback=gpu_fallback)
        return (*await self.finish_once(launched, timeout=timeout, claim=claim), launched)

    async def finish_once(self, launched: Launched, *, timeout: float = 300, claim: str | None = None
                          ) -> tuple[int, str]:
        try:
            try:
                code = await asyncio.wait_for(self.wait(launched.id), timeout)
            except TimeoutError:
                raise LaunchError(f"{launched.spec.image}: did not finish in {timeout:.0f} s; its container was "
                                  "removed.") from None
            return code, await self.logs(launched.id)
        finally:
            await self.remove(launched.id)
            if claim:
                self.release(claim)

    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        self.looks += 1
        try:
            return self._state(self._box(cid))
        except NotFound:
            return None

    async def pending(self, cid: str) -> str | None:
        box = self.boxes.get(cid)
        return box.pending if box is not None and box.status == "created" else None

    def image_digest(self, state: ContainerState) -> str:
        return state.image_id

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> builtins.list[ContainerState]:
        want = L.selector(kind, id=id, owner_uid=owner_uid, server_id=server_id)
        out = []
        for box in self.boxes.values():
            self._tick(box)
            if all(box.spec.labels.get(k) == v for k, v in want.items()) and (box.running or not running):
                out.append(self._state(box))
        return sorted(out, key=lambda s: (-s.created, s.id))

    def list_hint(self, kind: str) -> str:
        return f"FakeBackend.list({kind!r})"

    async def logs(self, cid: str, tail: int | str = "all") -> str:
        text = bytes(self._box(cid).output).decode(errors="replace")
        if tail == "all":
            return text
        return "".join(text.splitlines(keepends=True)[-int(tail):]) if int(tail) else ""

    async def log_bytes(self, cid: str) -> bytes:
        return bytes(self._box(cid).output)

    async def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        """Its output as it comes, until it has ended (or is removed)."""
        sent = 0
        while True:
            box = self.boxes.get(cid)
            if box is None:
                return
            self._tick(box)
            if len(box.output) > sent:
                chunk, sent = bytes(box.output[sent:]), len(box.output)
                if sink is not None:
                    sink(chunk)
                yield chunk
                continue
            if box.status not in ("running", "created"):
                return
            await self._changes()

    async def wait(self, cid: str) -> int:
        while True:
            box = self._box(cid)
            if box.exit_code is not None:
                return box.exit_code
            await self._changes()

    async def exec(self, cid: str, cmd: Sequence[str], *, stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        box = self._box(cid)
        if not box.running:
            raise Conflict(f"container {cid[:12]} is not running.")
        if box.program.exec is None:
            return 127, f"fake: {cmd[0] if cmd else ''}: not found\n".encode()
        return box.program.exec([*cmd])

    def open_tty(self, target: Any, *, term: str, size: tuple[int, int] | None = None) -> Any:
        raise ConfigError("the fake backend has no terminal: drive a shell with exec().")

    async def cpu_seconds(self, cid: str) -> float | None:
        box = self.boxes.get(cid)
        return box.cpu if box is not None and box.running else None

    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        """The process ends with 128 + the signal's number, unless its program ignores it (SIGKILL: never)."""
        box = self.boxes.get(cid)
        if box is None or box.status not in ("running", "created"):
            return
        name = signal if isinstance(signal, str) else signal_module.Signals(signal).name
        self.signals.append((cid, name))
        if name in box.program.ignores and name != "SIGKILL":
            return
        self.exit(cid, 128 + int(getattr(signal_module, name)))

    async def remove(self, cid: str) -> None:
        box = self.boxes.get(cid) or next((b for b in self.boxes.values() if b.name == cid), None)
        if box is not None:
            del self.boxes[box.id]
            self._notify()

    def remove_soon(self, cid: str) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.remove(cid))

    async def reap(self, *, own_server_id: str | None = None, dry_run: bool = False) -> builtins.list[dict[str, Any]]:
        return []

    async def image(self, ref: str) -> ImageInfo:
        if self.images is not None and ref not in self.images:
            raise ImageNotFound(f"image {ref!r} is not present: add it to the fake's images.")
        image_id = self._image_id(ref)
        return ImageInfo(id=image_id, digest=image_id, labels=dict((self.images or {}).get(ref, {})), env={})

    async def pull(self, ref: str, timeout: float, on_progress=None, progress_interval: float = 0.5) -> None:
        self.pulled.append(ref)

    async def kernel_record(self, cid: str) -> tuple[ContainerSpec, str]:
        return self._box(cid).spec, ""

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        spec = self._box(cid).spec
        return spec, await self.image(spec.image)

    async def close(self) -> None:
        """Nothing to close."""
