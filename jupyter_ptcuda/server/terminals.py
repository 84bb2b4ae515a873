"""Terminals inside a kernel's or job's container: ``POST {base_url}/jupyter-ptcuda/terminals``.

``{"kernel_id": ID}`` (a kernel of this server) or ``{"job_id": ID}`` (a running job) creates a
jupyter_server_terminals terminal whose process is :mod:`jupyter_ptcuda.shell`'s ``attach`` of that
container: the kernel's user, its folder, bash or sh. The reply names the terminal; the client talks to
it over the server's own authenticated terminal websocket (``{base_url}/terminals/websocket/NAME``) and
closes it with ``DELETE {base_url}/api/terminals/NAME``.

What the process runs is built here, from the container (see :mod:`jupyter_ptcuda.shell`). The body's
other fields are ignored: terminado merges whatever options it is given into its settings
(``shell_command``, ``cwd``, ``extra_env``), so only our own are passed to it. Closing the terminal
hangs up the attach, which ends the shell's session in the container; a kernel shut down removes its
container, which ends the attach and so the terminal.

Under JupyterHub the same attach runs here, as the server's user, and reaches the container through the
broker (:meth:`RemoteContainerService.open_tty <jupyter_ptcuda.containers.remote.service.RemoteContainerService.open_tty>`,
served by :mod:`jupyter_ptcuda.broker.tty`): the process inherits the server's
``$JUPYTER_PTCUDA_BROKER_URL`` and Hub token, and the broker builds the shell again from the container.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web

from ..containers import labels as L
from ..containers.tty import ExecTarget, resolve
from ..errors import ConfigError, NotFound
from .base import NAMESPACE, PtcudaHandler


class ContainerTerminals:
    """Our terminal manager: terminals of the server's terminal manager whose process is an attach to a
    kernel's or job's container, and nothing else (no client option reaches terminado)."""

    def __init__(self, term_manager: Any) -> None:
        self.term_manager = term_manager
        self.owned: dict[str, ExecTarget] = {}  # terminal name -> the container it runs in

    def argv(self, target: ExecTarget) -> list[str]:
        return [sys.executable, "-m", "jupyter_ptcuda.shell", "attach", target.container]

    def create(self, target: ExecTarget) -> dict[str, Any]:
        model = self.term_manager.create(shell_command=self.argv(target))
        self.owned[model["name"]] = target
        for name in [n for n in self.owned if n not in self.term_manager.terminals]:
            self.owned.pop(name)  # closed since
        return model


class TerminalsHandler(PtcudaHandler):
    def terminals(self) -> ContainerTerminals:
        tm = self.settings.get("terminal_manager")
        if tm is None:
            raise web.HTTPError(503, "terminals are disabled on this server (ServerApp.terminals_enabled is False, "
                                     "or jupyter_server_terminals is not installed); enable them to open a terminal "
                                     "in a kernel's container, or use `jupyter ptcuda shell KERNEL_ID`.")
        ours = self.state.cache.get("container_terminals")
        if ours is None or ours.term_manager is not tm:
            ours = self.state.cache["container_terminals"] = ContainerTerminals(tm)
        return ours

    @web.authenticated
    @authorized("execute")
    async def post(self) -> None:
        """A terminal in ``{"kernel_id"}``'s or ``{"job_id"}``'s container; 201 + its name."""
        body = self.json_body()
        kernel_id, job_id = body.get("kernel_id"), body.get("job_id")
        if (kernel_id is None) == (job_id is None):
            raise ConfigError("give exactly one of 'kernel_id' (a kernel of this server) or 'job_id' (a running job)")
        terminals = self.terminals()
        service = self.state.service
        if kernel_id is not None:
            if not isinstance(kernel_id, str) or kernel_id not in self.serverapp.kernel_manager:
                raise NotFound(f"no kernel {str(kernel_id)[:80]!r} on this server")
            target = await resolve(service, kernel_id, kind=L.KERNEL)
            if target.id != kernel_id:
                raise NotFound(f"kernel {kernel_id!r} does not run in a container")
        else:
            if not isinstance(job_id, str):
                raise ConfigError("'job_id' must be a string (a job id from GET jobs)")
            jobs = self.state.jobs
            if jobs is None:
                raise web.HTTPError(503, "batch jobs are not available in this server")
            job = await jobs.get(job_id)
            target = await resolve(service, job.id, kind=L.JOB)
            if target.id != job.id:
                raise NotFound(f"job {job.id} is not running")
        model = terminals.create(target)
        self.log.info("jupyter-ptcuda: terminal %s in %s %s (container %s)", model["name"], target.kind, target.id,
                      target.container[:12])
        self.set_header("Location", url_path_join(self.base_url, "api", "terminals", model["name"]))
        self.write_json({**model, "kind": target.kind, "id": target.id, "container_id": target.container[:12],
                         "user": target.user, "workdir": target.workdir}, status=201)


handlers = [
    (rf"/{NAMESPACE}/terminals", TerminalsHandler),
]
