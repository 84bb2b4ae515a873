"""``jupyter ptcuda broker``: the JupyterHub service that alone holds the Docker socket.

The users' single-user servers (which get ``JUPYTER_PTCUDA_BROKER_URL`` from ``Spawner.environment``)
call it with their own ``JUPYTERHUB_API_TOKEN`` (:mod:`~jupyter_ptcuda.containers.remote`); the broker
asks the Hub who that is (``HubAuth.user_for_token``) and requires the token's
``access:services!service=<this service>`` scope. The identity is the Hub's, never the request's.

Every container is built here, again, from what the client asked (:mod:`.ops`): the broker's policy
(``c.PtcudaBroker.*``: images, mount roots per user, ceilings, per-user quotas) under the Hub user's
identity (their Unix account's uid:gid, never root), with the hardening of every container. A user sees
and acts on their own containers only (anything else: 404, "no container ... of yours").

Runs as a Hub-managed service (``c.JupyterHub.services``: the Hub sets ``JUPYTERHUB_SERVICE_URL``,
``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``) or as an external one (set those yourself). See
``examples/jupyterhub_config.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Any as AnyTrait
from traitlets import CaselessStrEnum, Dict, Float, Int, List, Unicode, default
from traitlets.config import Application

from ..containers.dispatch import GpuQueue
from ..containers.docker.service import DockerContainerService
from ..containers.idle import IdleWatch
from ..containers.ledger import GpuLedger
from .handlers import FollowHandler, OpHandler
from .idle import Reclaimer
from .ops import Broker
from .policy import BrokerPolicy
from .telemetry import Telemetry
from .tty import TtyHandler
from .waiting import WaitingStore

log = logging.getLogger("jupyter_ptcuda.broker")


class PtcudaBroker(Application):
    """The broker's policy and where it listens (``c.PtcudaBroker.*``)."""

    name = "jupyter-ptcuda-broker"
    description = "The jupyter-ptcuda container broker: a JupyterHub service that alone talks to the Docker engine."

    images = List(Unicode(), ["jupyter-ptcuda/*"], config=True, help="""Images users may run (fnmatch
        patterns on the name as asked, e.g. 'registry.example.org/ml/*'; default ['jupyter-ptcuda/*']).
        Anything else is refused with 403, naming this option. Example: c.PtcudaBroker.images = ["pytorch/pytorch:*"]""")
    mount_roots = List(Unicode(), ["{home}"], config=True, help="""Folders a user's containers may mount
        (their notebook folder and extra mounts must be inside one, with no symlink on the way). Templates:
        {username}, {uid}, {home} (the Unix account's home). Default ['{home}'].
        Example: c.PtcudaBroker.mount_roots = ["/home/{username}", "/data/shared"]""")
    user_map = Dict(config=True, help="""Hub user name -> 'uid:gid' for users without a Unix account of the
        same name (DockerSpawner-style hubs). Default: the Unix account. Root is always refused.""")
    user_resolver = AnyTrait(None, allow_none=True, config=True, help="""A callable name -> (uid, gid), used
        when a user is not in user_map (default None: the Unix account of that name).""")
    max_gpus = Int(None, allow_none=True, config=True, help="""GPUs one user may hold at once, over all their
        kernels, jobs and checks (default None: no quota). A request beyond it: 409, naming this option.""")
    max_kernels = Int(8, config=True, help="""Kernels one user may run at once (default 8).
        Example: c.PtcudaBroker.max_kernels = 4""")
    max_mem = AnyTrait(config=True, help="""Memory ceiling per container, e.g. '64g' (default: the host's
        memory). A container that asks for no limit gets this one; one asking for more is refused with 403.""")
    max_cpus = Float(config=True, help="""CPU ceiling per container (default: the host's CPUs). A container that
        asks for no limit gets this one; more is refused with 403.""")
    max_pids = Int(4096, config=True, help="""Process ceiling per container (default 4096, also its default):
        0 or -1 ('unlimited') is refused, so no user can fork-bomb the shared host.""")
    max_long_calls = Int(8, config=True, help="""Long calls (waits, execs, log follows, one-off runs, pulls) one
        user may have running at once (default 8); the next is refused with 429, never queued behind others.""")
    max_terminals = Int(16, config=True, help="Terminals one user may have open through the broker (default 16).")
    max_private_dirs = Int(32, config=True, help="""Kernel folders one user may have at the broker (default 32);
        folders of kernels whose container is gone are removed before a request is refused.""")
    max_body_bytes = Int(1024**2, config=True, help="""Largest request body (default 1 MiB); larger ones are refused
        with 413 before they are read, and nothing is read before the caller's token is checked.""")
    private_root = Unicode("/run/jupyter-ptcuda-broker", config=True, help="""Where the broker makes the
        kernels' private ipc folders (<root>/<uid>/<kernel id>, 0700, the user's; default
        /run/jupyter-ptcuda-broker).""")
    queue_db = Unicode("/var/lib/jupyter-ptcuda-broker/queue.sqlite", config=True, help="""Where the broker keeps
        the jobs waiting in its GPU queue (SQLite, root's: folder 0700, file 0600), so that a restart of the broker
        (even SIGKILL) or of the host loses none and each starts once (default
        /var/lib/jupyter-ptcuda-broker/queue.sqlite). Example: c.PtcudaBroker.queue_db = "/srv/ptcuda/queue.sqlite" """)
    max_queued_jobs = Int(100, config=True, help="""Jobs one user may have waiting for GPUs at the broker (default
        100); the next is refused with 429. Example: c.PtcudaBroker.max_queued_jobs = 20""")
    gpu_sharing = CaselessStrEnum(["exclusive", "shared"], "exclusive", config=True, help="""'exclusive'
        (default): a GPU given to one user's kernel or job is not given to another.""")
    nvml = Unicode(config=True, help="""'' (default): the host's NVML; 'fake:SPEC' simulated GPUs from
        jupyter_ptcuda_testing (tests, demos; logged; never taken from an environment variable).
        Example: c.PtcudaBroker.nvml = "fake:2" """)
    idle_gpu_timeout = Float(0.0, config=True, help="""Seconds a kernel may hold GPUs while idle (no CPU use
        by its processes and its GPUs at ~0 % utilisation) before it is shut down and its user told in JupyterLab
        (default 0: never). Example: c.PtcudaBroker.idle_gpu_timeout = 3600""")
    idle_grace = Float(60.0, config=True, help="""Seconds the user's server has to shut an idle kernel down
        itself after the notice; past it the broker removes the container (default 60).""")
    idle_check_interval = Float(60.0, config=True, help="""Seconds between idle checks (default 60).""")
    idle_cpu_threshold = Float(0.02, config=True, help="""A kernel using more than this share of one core
        between two checks is busy (default 0.02).""")
    idle_util_threshold = Float(5.0, config=True, help="""A kernel whose GPU is busier than this many percent
        is busy (default 5).""")
    url = Unicode(config=True, help="""Where to listen, e.g. 'http://127.0.0.1:10101' (default:
        $JUPYTERHUB_SERVICE_URL, which the Hub sets for a managed service).""")
    service_name = Unicode(config=True, help="The Hub service name (default $JUPYTERHUB_SERVICE_NAME or 'ptcuda-broker').")
    auth_cache_seconds = Float(5.0, config=True, help="""How long a token's user is cached (default 5 s: a token
        the Hub revoked is refused within that).""")

    config_file = Unicode("", config=True, help="A Python config file (c.PtcudaBroker.* = ...).")
    aliases = {"config": "PtcudaBroker.config_file", "url": "PtcudaBroker.url"}

    @default("max_mem")
    def _default_max_mem(self) -> int:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    @default("max_cpus")
    def _default_max_cpus(self) -> float:
        return float(os.cpu_count() or 1)

    @default("url")
    def _default_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", "ptcuda-broker")

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)

    def make_app(self, service: DockerContainerService | None = None) -> web.Application:
        from jupyterhub.services.auth import HubAuth

        from ..nvml import nvml_from_config
        from ..nvml.sampler import GpuSampler

        service = service or DockerContainerService()
        self.sampler = GpuSampler(nvml_from_config(self.nvml, "c.PtcudaBroker.nvml", self.log))
        self.ledger = GpuLedger(service, self.sampler.snapshot, sharing=self.gpu_sharing, sampler=self.sampler)
        self.ledger.hide_others = True
        auth = HubAuth(cache_max_age=max(1, int(self.auth_cache_seconds)))
        if not auth.access_scopes:
            auth.access_scopes = {f"access:services!service={self.service_name}"}
        broker = Broker(BrokerPolicy.of(self), service, self.ledger)
        broker.telemetry = Telemetry(self.sampler, self.ledger)
        broker.queue = GpuQueue(self.ledger, max_gpus=self.max_gpus, parent=self)  # c.GpuQueue.* from this config
        self.ledger.queue = broker.queue
        broker.keep_waiting_jobs(WaitingStore(self.queue_db), int(self.max_queued_jobs))  # put back in line by _serve (JobLine.reload)
        if self.idle_gpu_timeout > 0:
            watch = IdleWatch(service, self.sampler.snapshot, cpu_threshold=self.idle_cpu_threshold,
                              util_threshold=self.idle_util_threshold)
            broker.reclaimer = Reclaimer(broker.remove_container, watch, self.idle_gpu_timeout, self.idle_grace)
        broker.staging.prepare()
        self.broker = broker
        return web.Application([(r"/v1/follow", FollowHandler), (r"/v1/tty", TtyHandler), (r"/v1/([a-z_]+)", OpHandler)],
                               broker=broker, hub_auth=auth, config=self)

    def start(self) -> None:
        logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s broker] %(message)s")
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        where = urlparse(self.url)
        server = HTTPServer(self.make_app(), max_body_size=int(self.max_body_bytes), idle_connection_timeout=60,
                            body_timeout=30)
        server.listen(where.port or 80, where.hostname or "127.0.0.1")
        log.info("jupyter-ptcuda broker for Hub service %r listening on %s (images %s, mount roots %s)",
                 self.service_name, self.url, self.images, self.mount_roots)
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.broker.jobs.reload())]  # the jobs that waited when it last stopped
        if self.broker.reclaimer is not None:
            self.sampler.ensure_started()
            tasks.append(asyncio.ensure_future(self.broker.reclaimer.run(self.idle_check_interval)))
            log.info("idle GPU kernels are shut down after %.0f s (checked every %.0f s)", self.idle_gpu_timeout,
                     self.idle_check_interval)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()
        await self.broker.jobs.close()  # they stay saved: the next start puts them back in line
        self.broker.staging.close()
        for task in tasks:
            task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self.sampler.stop)
        log.info("jupyter-ptcuda broker stopped")


def main(argv: list[str] | None = None) -> int:
    app = PtcudaBroker.instance()
    app.initialize(argv)
    app.start()
    return 0
