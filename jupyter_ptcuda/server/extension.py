"""The ``jupyter_ptcuda`` server extension: config, shared state, background tasks, handlers.

Enabled on install by ``etc/jupyter/jupyter_server_config.d/jupyter_ptcuda.json``. At start it sets
the GPU ledger used by the provisioner, starts the NVML sampler lazily (first ``GET gpus``), and
reaps orphaned kernel containers at start and every ``reap_interval`` seconds. As root, it gives what
JupyterLab creates in a kernel's folder to the kernel's user (:mod:`.ownership`). Two seconds after the
server has started it freezes the garbage collector's view of the objects alive then (``freeze_gc``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode

from ..containers.base import ContainerService
from ..containers.dispatch import GpuQueue
from ..containers.factory import get_service, install_ledger, uninstall_ledger
from ..containers.identity import server_id
from ..containers.ledger import GpuLedger
from ..containers.options import ContainerOptions
from ..containers.reaper import reap_kernel_files, reap_orphans
from ..errors import PtcudaError
from ..jobs.manager import JobManager
from ..notices import Notices, set_active_notices
from ..nvml import nvml_from_config
from ..nvml.sampler import GpuSampler
from ..provisioner import drain_removals
from .contents import adopt
from .ownership import OwnershipRule
from .sessions import RefusalLogFilter


def share_server_log(server_log: logging.Logger) -> Callable[[], None]:
    """Make our modules' loggers (``jupyter_ptcuda.*``: the container service, the engine, jobs) write
    through the server's own handlers, so their lines read ``[W 2026-… ServerApp] jupyter-ptcuda: …`` like
    every server line instead of Python's bare last-resort output. Returns what undoes it (the extension's
    stop: tests start many servers in one process). A server log without handlers of its own changes nothing."""
    ours = logging.getLogger("jupyter_ptcuda")
    saved = (list(ours.handlers), ours.propagate, ours.level)
    if server_log.handlers:
        ours.handlers = list(server_log.handlers)
        ours.propagate = False
        ours.setLevel(server_log.getEffectiveLevel())

    def undo() -> None:
        ours.handlers, ours.propagate = saved[0], saved[1]
        ours.setLevel(saved[2])

    return undo


@dataclass
class PtcudaState:
    """Everything handlers share (``settings["jupyter_ptcuda_state"]``)."""

    app: PtcudaExtension
    service: ContainerService
    sampler: GpuSampler
    ledger: GpuLedger
    jobs: JobManager
    queue: GpuQueue | None = None  # the GPU queue of the allocation layer (None: the backend allocates itself)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    cache: dict[str, Any] = field(default_factory=dict)  # short-lived response caches (handlers)
    notices: Notices = field(default_factory=Notices)  # the broker's (idle kernels), Kubernetes' (pending pods)
    notices_since: float = 0.0

    def spawn(self, coro: Any) -> asyncio.Task:
        """Run a background coroutine, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class PtcudaExtension(ExtensionApp):
    name = "jupyter_ptcuda"

    nvml = Unicode(config=True, help="""NVML backend: '' (default) loads nvidia-ml-py's pynvml; 'fake:SPEC'
        simulated GPUs from jupyter_ptcuda_testing (tests, demos; e.g. 'fake:2'; the log says so). Only this
        setting selects the fake, never an environment variable. Example: c.PtcudaExtension.nvml = "fake:2" """)
    sample_interval = Float(1.0, config=True, help="Seconds between GPU samples (default 1.0).")
    history_seconds = Float(3600.0, config=True, help="GPU history kept server-side (default 3600 s).")
    notice_interval = Float(5.0, config=True, help="""Under the JupyterHub broker: seconds between reads of
        its notices (idle GPU kernels to shut down; default 5).""")
    reap_interval = Float(300.0, config=True, help="""Seconds between orphan-container sweeps (default 300;
        0 = only at start).""")
    gpu_sharing = CaselessStrEnum(["exclusive", "shared"], "exclusive", config=True, help="""'exclusive'
        (default): a GPU given to a kernel or job by count/id is not given to another. 'shared': counts
        pick the least loaded GPUs regardless of holders.""")
    health_timeout = Float(600.0, config=True, help="""Seconds a health check may run (default 600); past it
        its container is killed and removed, and the check reports the timeout.""")
    health_concurrency = Int(2, config=True, help="""Health checks that may run at once (default 2). A check
        asked for beyond it is refused with 429 Too Many Requests, saying how many run and when to retry.
        Example: c.PtcudaExtension.health_concurrency = 4""")
    freeze_gc = Bool(True, config=True, help="""Once the server has started, move the objects that exist
        then (imported modules, every extension's own state) out of the cyclic garbage collector's
        scans (gc.freeze()). A full collection of a JupyterLab server visits ~200k such objects: 80-200 ms
        on a 2-core host, a stall for every request and kernel message in flight; after the freeze it
        visits only newer objects. False leaves the collector alone.""")

    def _make_nvml(self) -> Any:
        """None: the sampler imports pynvml on its own thread; the fake when the config names it."""
        return nvml_from_config(self.nvml, "c.PtcudaExtension.nvml", self.log)

    def initialize_settings(self) -> None:
        self._unshare_log = share_server_log(self.serverapp.log)  # type: ignore[union-attr]
        self._refusal_filter = RefusalLogFilter()  # a refused kernel start: [W], not [E]
        self.serverapp.log.addFilter(self._refusal_filter)  # type: ignore[union-attr]
        sampler: GpuSampler
        ledger: GpuLedger
        sampler, ledger = get_service().gpu_view(nvml=self._make_nvml(), interval=self.sample_interval,
                                                 history_seconds=self.history_seconds, sharing=self.gpu_sharing)
        queue = GpuQueue(ledger, parent=self)  # c.GpuQueue.*: requests that may wait join it (allocation layer)
        ledger.queue = queue
        service = install_ledger(ledger)  # GPU allocation around the backend, unless it assigns GPUs itself
        self.log.info("jupyter-ptcuda: container backend %s %s", type(service).__name__, service.capabilities())
        jobs = JobManager(service=service, parent=self, root_dir=self.serverapp.root_dir)  # type: ignore[union-attr]
        jobs.tracker.sampler = sampler  # the GPU telemetry of a job's GPUs goes into its MLflow run
        self.state = PtcudaState(app=self, service=service, sampler=sampler, ledger=ledger, jobs=jobs,
                                 queue=None if service.allocates_gpus else queue)
        set_active_notices(self.state.notices)
        self.ownership = OwnershipRule(self.serverapp.root_dir, ContainerOptions(parent=self), self.log)  # type: ignore[union-attr]
        self.ownership.install(self.serverapp.contents_manager, getattr(self.serverapp, "event_logger", None))  # type: ignore[union-attr]
        adopt(self.serverapp.contents_manager, self.ownership, self.log)  # type: ignore[union-attr]  # writes through no link
        self.settings.update({"jupyter_ptcuda_state": self.state})

    def initialize_handlers(self) -> None:
        from . import docs, handlers, job_handlers, serve_handlers, sessions, terminals

        self.handlers.extend(handlers.handlers)
        self.handlers.extend(job_handlers.handlers)
        self.handlers.extend(serve_handlers.handlers)
        self.handlers.extend(terminals.handlers)
        self.handlers.extend(docs.handlers)
        self.handlers.extend(sessions.handlers)  # a kernel start we refused stays a 4xx

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.state.spawn(self._reap_loop())
        if self.state.queue is not None and self.state.queue.enabled:
            self.state.sampler.ensure_started()  # the GPU queue refuses what this host can never give at submit
        if self.state.service.posts_notices:
            self.state.spawn(self._notice_loop(self.state.service))
        if self.freeze_gc:
            self.state.spawn(self._freeze_gc())
        await self.state.jobs.start()

    async def _freeze_gc(self, delay: float = 2.0) -> None:
        """After the other extensions have started: collect once, then freeze what survived."""
        await asyncio.sleep(delay)
        gc.collect()
        gc.freeze()
        self.log.debug("jupyter-ptcuda: %d objects moved out of the garbage collector's scans", gc.get_freeze_count())

    async def reap_once(self) -> list[dict[str, Any]]:
        """Remove our containers whose kernel this server (or a dead one) no longer has, and the checks,
        probes and namespace holders of dead servers."""
        km = self.serverapp.kernel_manager  # type: ignore[union-attr]
        known = set(km.list_kernel_ids())
        removed = await reap_orphans(self.state.service, own_server_id=server_id(), known_kernels=known)
        for c in removed:
            self.log.warning("jupyter-ptcuda: removed orphaned %s container %s%s: %s", c["kind"], c["id"][:12],
                             f" (kernel {c['kernel_id']})" if c["kernel_id"] else "", c["why"])
        for f in await reap_kernel_files(own_server_id=server_id(), known_kernels=known):
            self.log.info("jupyter-ptcuda: removed the connection files of kernel %s: %s", f["kernel_id"], f["why"])
        return removed

    async def _reap_loop(self) -> None:
        while True:
            try:
                await self.reap_once()
            except PtcudaError as exc:
                self.log.info("jupyter-ptcuda: orphan sweep skipped: %s", exc.message.splitlines()[0])
            if self.reap_interval <= 0:
                return
            await asyncio.sleep(self.reap_interval)

    async def notices_once(self, service: ContainerService) -> list[dict[str, Any]]:
        """Read the broker's new notices for this user; shut down the kernels it asks to (idle ones).

        The kernel is shut down here, through the server's kernel manager, so JupyterLab sees it shut down
        (no automatic restart); the notice is kept for ``GET jupyter-ptcuda/notices`` (JupyterLab shows it)."""
        state = self.state
        fresh = await service.notices(state.notices_since)
        km = self.serverapp.kernel_manager  # type: ignore[union-attr]
        for notice in fresh:
            state.notices_since = max(state.notices_since, float(notice.get("updated") or 0))
            kid = str(notice.get("kernel_id") or "")
            if notice.get("state") in ("requested", "enforced") and kid in km.list_kernel_ids():
                self.log.warning("jupyter-ptcuda: %s", notice.get("message"))
                try:
                    await km.shutdown_kernel(kid, now=notice.get("state") == "enforced")
                except Exception as exc:  # already going away
                    self.log.info("jupyter-ptcuda: shutting down kernel %s: %s", kid[:8], exc)
            state.notices.post(notice)
        return fresh

    async def _notice_loop(self, service: ContainerService) -> None:
        while True:
            try:
                await self.notices_once(service)
            except PtcudaError as exc:
                self.log.debug("jupyter-ptcuda: broker notices: %s", exc.message.splitlines()[0])
            await asyncio.sleep(self.notice_interval)

    async def stop_extension(self) -> None:
        for task in list(self.state.tasks):
            task.cancel()
        await self.state.jobs.stop()
        if self.state.queue is not None:
            await self.state.queue.close()
        await drain_removals()  # the containers of kernels shut down just now
        await asyncio.get_running_loop().run_in_executor(None, self.state.sampler.stop)
        await self.state.service.shutdown()
        uninstall_ledger()
        set_active_notices(None)
        unshare = getattr(self, "_unshare_log", None)
        if unshare is not None:
            unshare()
        if hasattr(self, "_refusal_filter"):
            self.serverapp.log.removeFilter(self._refusal_filter)  # type: ignore[union-attr]
