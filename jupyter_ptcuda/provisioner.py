"""DockerProvisioner: a jupyter_client kernel provisioner that runs the kernel in a Docker container.

Registered as the ``ptcuda-docker-provisioner`` entry point. A kernelspec selects it with::

    "metadata": {"kernel_provisioner": {"provisioner_name": "ptcuda-docker-provisioner",
                                        "config": {"image": "...", "gpus": "all", "mem_limit": "32g"}}}

Configuration: every trait below is ``config=True``. Values in ``kernel.json``'s ``config`` arrive as
constructor keyword arguments (jupyter_client's provisioner factory) and therefore **win over** the
same trait set in a Jupyter config file (``c.DockerProvisioner.gpus = 1``), which acts as the default.

Lifecycle (called by ``KernelManager``): ``pre_launch`` (ports, connection files, the ContainerSpec)
→ ``launch_kernel`` (image check/pull, GPU request, start, wait for the heartbeat) → ``poll``/``wait``/
``send_signal``/``kill``/``terminate`` → ``cleanup`` (container removed; ports kept on restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal as signal_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo, LocalPortCache
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import CaselessStrEnum, Float, Unicode, default

from . import kernel_files
from .builds import building
from .containers import labels as L
from .containers.base import ContainerService
from .containers.factory import get_service
from .containers.gpus import parse_gpus
from .containers.identity import server_id
from .containers.options import ContainerOptions
from .containers.progress import PullState
from .containers.spec import SpecFile, filter_env
from .containers.types import ImageInfo
from .errors import ImageNotFound, LaunchError, PtcudaError, RegistryError
from .images import DEFAULT_TAG, check_kernel_image
from .notices import post as post_notice
from .placement import HostPlacement, placement_for

#: The container's copy of the connection file (placed in the container before start, never mounted).
CONTAINER_CONN_FILE = "/run/ptcuda/kernel.json"
#: The supervisor (``jupyter_ptcuda/supervise.py``), placed beside it: ipc kernels restart in place.
CONTAINER_SUPERVISOR = "/run/ptcuda/supervise.py"
_SUPERVISOR_SOURCE = (Path(__file__).parent / "supervise.py").read_bytes()
#: Container removals still running after their kernel's shutdown returned (see ``cleanup``).
_removals: set[asyncio.Future] = set()


async def drain_removals(timeout: float = 30) -> None:
    """Wait for the container removals that kernel shutdowns left running (the server's stop)."""
    if _removals:
        await asyncio.wait(set(_removals), timeout=timeout)


def read_only_notice(workdir: str, user: str) -> str | None:
    """What to tell a user whose kernel cannot write its notebook folder (a root server, root's folder),
    or None when it can. Said in the server log and, at the first cell, in the notebook."""
    try:
        st = os.stat(workdir)
    except OSError:
        return None
    uid, _, gid = user.partition(":")
    if int(uid) == 0 or int(uid) == st.st_uid and st.st_mode & 0o200:
        return None
    if int(gid or uid) == st.st_gid and st.st_mode & 0o020 or st.st_mode & 0o002:
        return None
    owner = "root" if st.st_uid == 0 else f"uid {st.st_uid}"
    return (f"this kernel runs as uid {uid} and cannot write to {workdir} (it belongs to {owner}): files "
            "the notebook saves there fail with PermissionError. Give the folder to the user who works in "
            f"it (`chown -R USER {workdir}`: the kernel then runs as that user), or set "
            "c.ContainerOptions.unprivileged_uid to a uid that may write it.")


def notice_argv(notice: str) -> list[str]:
    """IPython arguments that print ``notice`` to stderr when the notebook runs its first cell (a kernel's
    start-up output reaches no notebook: nobody is listening yet)."""
    code = ("import sys as _s\n"
            f"_ptcuda_notice = [{('jupyter-ptcuda: ' + notice)!r}]\n"
            "def _ptcuda_say(*_a):\n"
            "    while _ptcuda_notice: print(_ptcuda_notice.pop(), file=_s.stderr, flush=True)\n"
            "get_ipython().events.register('pre_run_cell', _ptcuda_say)")
    return [f"--IPKernelApp.exec_lines={json.dumps([code])}"]


class DockerProvisioner(ContainerOptions, KernelProvisionerBase):  # type: ignore[misc,metaclass]
    """Runs an IPython kernel in a (PyTorch-CUDA) container. See the module docstring."""

    pull_policy = CaselessStrEnum(["missing", "always", "never"], "missing", config=True, help="""When to
        pull the image: 'missing' (default), 'always', or 'never'.""")
    pull_timeout = Float(900, config=True, help="Seconds allowed for an image pull (default 900).")
    pull_progress_interval = Float(0.5, config=True, help="""While a kernel's missing image is pulled, its
        kernel-start notice says how far ("pulling IMAGE: 43% (1.2 of 2.8 GB)"), updated at most once per this
        many seconds (default 0.5). Example: c.DockerProvisioner.pull_progress_interval = 2""")
    launch_timeout = Float(120, config=True, help="""Seconds from container start until the kernel answers
        its heartbeat (default 120); past it the container is removed and the start fails.""")
    gpu_resource = Unicode("", config=True, help="""Kubernetes backend only: the extended resource the GPUs
        are asked for as, e.g. a MIG profile "nvidia.com/mig-1g.18gb" (one the operator allows in
        c.KubeBackend.gpu_resources). Default "": c.KubeBackend.gpu_resource. Ignored by Docker.
        Example (kernel.json config): "gpu_resource": "nvidia.com/mig-1g.18gb" """)

    container_id = Unicode(None, allow_none=True)
    ports_cached = False
    _exit_code: int | None = None
    _control: Path | None = None  # the ipc folder the supervisor shares (None: no supervisor, tcp)
    _generation = 0  # which kernel process of the container runs now (the supervisor's n)
    _restart_asked = False
    _inspected = 0.0  # when poll last asked the engine
    _shutting_down = False  # between shutdown_requested and the next launch
    _kernel_ip: str | None = None  # where the kernel listens when it is not this host (a pod's IP)
    #: Why this kernel runs without the GPUs it asked for (gpu_fallback='cpu', no NVIDIA runtime), or None.
    fell_back: str | None = None
    _told: dict[str, float]  # when each kind of notice was first posted for this kernel (its key)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._told = {}

    @default("image")
    def _default_image(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_IMAGE", DEFAULT_TAG)

    @property
    def service(self) -> ContainerService:
        return get_service()

    @property
    def placement(self) -> HostPlacement:
        """How this kernel is reached, from the backend's declared ``kernel_placement`` (:mod:`.placement`)."""
        return placement_for(self.service)

    @property
    def has_process(self) -> bool:
        return self.container_id is not None

    # -- launch -----------------------------------------------------------------------------------
    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Choose the transport's addresses (tcp ports are kept across restarts), write the server's
        connection file and a record of the kernel's files, build the spec (with the container's copy of
        the connection file placed inside the container, not mounted).

        ``cwd`` (jupyter_server passes the notebook's folder) is mounted at its own path; a kernel
        started without one mounts no folder and works in its private HOME."""
        km = self.parent
        if km is None:
            raise LaunchError("DockerProvisioner needs a KernelManager parent.")
        parse_gpus(self.gpus)  # fail early on config errors
        cwd = kwargs.pop("cwd", None)
        workdir = os.path.abspath(cwd) if cwd else None
        user = self.container_user(workdir)
        kid = str(self.kernel_id)
        placement = self.placement
        ipc_dir = await self.service.private_dir(kid, user) if self._ipc else None
        placement.connect(km, ipc_dir)
        if ipc_dir is None and not self.ports_cached and placement.local_ports:
            lpc = LocalPortCache.instance()
            for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                setattr(km, name, lpc.find_available_port(km.ip))
            self.ports_cached = True
        env_in = kwargs.pop("env", None) or dict(os.environ)
        km.write_connection_file(jupyter_session=env_in.get("JPY_SESSION_NAME", ""))
        self.connection_info = km.get_connection_info()
        kernel_files.write_record(kid, server_id(), str(km.connection_file), ipc_dir)

        cmd = [a.replace("{connection_file}", CONTAINER_CONN_FILE) for a in self.kernel_spec.argv]
        cmd = [a.replace("{resource_dir}", "/tmp") for a in cmd] + list(kwargs.pop("extra_arguments", []))
        notice = read_only_notice(workdir, user) if workdir else None
        if notice:
            self.log.warning("jupyter-ptcuda: kernel %s: %s", kid, notice)
            cmd += notice_argv(notice)

        env = filter_env(env_in, self.env_allowlist)
        env.update({k: os.path.expandvars(v) for k, v in (self.kernel_spec.env or {}).items()})
        env["JUPYTER_PTCUDA_KERNEL_ID"] = kid
        env.pop("PYTHONEXECUTABLE", None)
        ports = placement.ports(self.connection_info)
        files: tuple[SpecFile, ...] = (SpecFile(CONTAINER_CONN_FILE, self._container_connection()),)
        self._control = ipc_dir
        if ipc_dir is not None:  # restarts happen in the container: see jupyter_ptcuda/supervise.py
            files += (SpecFile(CONTAINER_SUPERVISOR, _SUPERVISOR_SOURCE, mode=0o500),)
            cmd = [cmd[0], "-I", "-S", CONTAINER_SUPERVISOR, str(ipc_dir), "--", *cmd]
        self._spec = self.base_spec(
            kind=L.KERNEL, id=kid, command=cmd, workdir=workdir, env=env, user=user,
            notebook=env_in.get("JPY_SESSION_NAME", "") or workdir or "",
            ports=ports if self.network_mode == "bridge" and ipc_dir is None else {},
            private_dir=str(ipc_dir) if ipc_dir is not None else "",
            files=files,
        )
        return {"cmd": cmd, **kwargs}

    @property
    def _ipc(self) -> bool:
        return (self.transport == "ipc" or self.network_mode == "shared") and self.placement.ipc

    def _container_connection(self) -> bytes:
        """The container's copy of the connection file: with tcp it binds all interfaces *inside* the
        container (bridge). Placed in the container, mode 0400, owned by the container user; never logged."""
        info = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in dict(self.connection_info).items()}
        if info.get("transport") == "tcp":
            info["ip"] = self.placement.bind_ip(self.network_mode)
        return json.dumps(info).encode()

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start the container (GPUs from the ledger, the namespace holder for 'shared', the CPU fallback:
        all in the container service) and wait until the kernel answers its heartbeat.

        A restart of a supervised kernel keeps its container: the supervisor has started the kernel again
        already, so this only waits for its heartbeat."""
        if self.container_id and self._restarted_in_place():
            self._generation += 1
            self._restart_asked, self._exit_code, self._shutting_down = False, None, False
            await self._wait_ready()
            return self.connection_info
        self.container_id, spec, self.fell_back = await self.placement.launch(self)
        if self.fell_back:
            self._tell("gpu_fallback", "done", self.fell_back_message())
        self._exit_code = None
        self._generation, self._restart_asked, self._shutting_down = 0, False, False
        self.log.info("jupyter-ptcuda: kernel %s in container %s (image %s, gpus %s, user %s)",
                      self.kernel_id, self.container_id[:12], spec.image, spec.gpus.label(), spec.user)
        await self._wait_ready()
        return self.connection_info

    def _what(self, short: bool = False) -> str:
        """Which kernel, for a notice ("The kernel for train.ipynb"; ``short``: "train.ipynb's kernel")."""
        notebook = self._spec.labels.get(L.NOTEBOOK, "") if getattr(self, "_spec", None) else ""
        if not notebook.endswith(".ipynb"):
            return f"Kernel {str(self.kernel_id)[:8]}"
        name = os.path.basename(notebook)
        return f"{name}'s kernel" if short else f"The kernel for {name}"

    def fell_back_message(self) -> str:
        """What the user hears once when this kernel started on the CPU instead of the GPUs it asked for."""
        return (f"{self._what()} runs on the CPU: it asked for GPUs (gpus: {self.gpus}) but the Docker engine has "
                "no NVIDIA runtime, so it started without them (gpu_fallback='cpu'). To use the GPUs, install the "
                "NVIDIA Container Toolkit on the host and restart Docker, then restart the kernel.")

    def _tell(self, kind: str, state: str, message: str, **extra: Any) -> None:
        """A notice JupyterLab shows once (see :mod:`.notices`), keyed by this kernel and ``kind``."""
        notebook = self._spec.labels.get(L.NOTEBOOK) if getattr(self, "_spec", None) else None
        post_notice({"kind": kind, "state": state, "message": message, "kernel_id": str(self.kernel_id),
                     "notebook": notebook if notebook and notebook.endswith(".ipynb") else None,
                     "at": self._told.setdefault(kind, time.time()), **extra})

    def _pull_told(self, image: str) -> Callable[[PullState], None]:
        """What the kernel-start notice hears of a pull under way: "pulling IMAGE: 43% (1.2 of 2.8 GB)"."""
        def told(state: PullState) -> None:
            self._tell("kernel_image", "waiting", f"{self._what()} waits for its image: pulling {image}: "
                       f"{state.describe()}. It is given up after {self.pull_timeout:.0f} s.", progress=state.to_json())
        return told

    async def _refuse_while_built(self, image: str) -> None:
        """A missing image that `jupyter ptcuda image build` is still making (:mod:`.builds`): say so, and which
        step it is at, instead of trying a registry that never had it."""
        build = await asyncio.to_thread(building, image)
        if build is None:
            return
        step = (f"step {build['step']} of {build['steps']}: {build['step_name']}" if build.get("step")
                else "starting")
        self._tell("kernel_image", "failed", f"{self._what(short=True)} did not start: its image {image} is being "
                   f"built right now ({step}). Start the kernel again when the build has finished.")
        raise ImageNotFound(f"image {image!r} is being built right now by `jupyter ptcuda image build` ({step}): "
                            "start the kernel again when the build has finished.", build=build.get("id"))

    async def _ensure_image(self, image: str) -> None:
        info: ImageInfo | None = None
        try:
            info = await self.service.image(image)
        except ImageNotFound:
            pass
        present = info is not None
        if not present:
            await self._refuse_while_built(image)
        if self.pull_policy == "always" or (not present and self.pull_policy == "missing"):
            info = None  # what the pull brings is another image: inspected again below
            started = time.monotonic()
            if not present:
                self._tell("kernel_image", "waiting", f"{self._what()} waits for its image {image}: it is not on this "
                           f"host and is being pulled (this can take minutes; given up after {self.pull_timeout:.0f} s).")
            try:
                await self.service.pull(image, self.pull_timeout, None if present else self._pull_told(image),
                                        self.pull_progress_interval)
                if not present:
                    self._tell("kernel_image", "started", f"{self._what()}: image {image} pulled in "
                               f"{time.monotonic() - started:.0f} s; the kernel is starting.")
            except PtcudaError as exc:
                if not present:
                    # what to do first (building it here needs no registry; the registry's own sentence follows):
                    # JupyterLab's pop-up shows a message's first ~140 characters
                    self._tell("kernel_image", "failed", f"{self._what(short=True)} did not start: `jupyter ptcuda image "
                               f"build --tag {image}` builds its image (add --base debian without a registry). It is "
                               f"not on this host and could not be pulled: {exc.message.splitlines()[0]}")
                if present:
                    self.log.warning("jupyter-ptcuda: pull of %s failed, using the local copy: %s", image, exc)
                elif isinstance(exc, LaunchError | RegistryError):  # already one sentence with the fix
                    raise
                else:
                    raise ImageNotFound(
                        f"image {image!r} is not present and could not be pulled ({exc.message.splitlines()[0]}). "
                        f"Build it: `jupyter ptcuda image build --tag {image}` (add --base debian without a registry)."
                    ) from exc
        elif not present:
            self._tell("kernel_image", "failed", f"{self._what(short=True)} did not start: `jupyter ptcuda image build "
                       f"--tag {image}` builds its image. It is not on this host (pull_policy='never').")
            raise ImageNotFound(f"image {image!r} is not present (pull_policy='never'): build it with "
                                f"`jupyter ptcuda image build --tag {image}`.")
        await check_kernel_image(self.service, image, info)

    async def _wait_ready(self) -> None:
        """Heartbeat until the kernel echoes; if the container exits first, remove it and raise why."""
        import zmq
        import zmq.asyncio

        ctx = zmq.asyncio.Context.instance()
        deadline = time.monotonic() + self.launch_timeout
        next_check = 0.0
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.setsockopt(zmq.REQ_RELAXED, 1)  # re-send while the port proxy drops early connections
        sock.setsockopt(zmq.REQ_CORRELATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        if self.connection_info.get("curve_publickey"):  # CurveZMQ (kube): as jupyter_client's own sockets
            key = self.connection_info["curve_publickey"]
            sock.curve_publickey = sock.curve_serverkey = key.encode() if isinstance(key, str) else key
            secret = self.connection_info["curve_secretkey"]
            sock.curve_secretkey = secret.encode() if isinstance(secret, str) else secret
        if self.connection_info.get("transport") == "ipc":
            sock.connect(f"ipc://{self.connection_info['ip']}-{self.connection_info['hb_port']}")
        else:
            sock.connect(f"tcp://{self._kernel_ip or '127.0.0.1'}:{self.connection_info['hb_port']}")
        try:
            await self._heartbeat_loop(sock, deadline, next_check)
            self._inspected = time.monotonic()  # it runs: the heartbeat loop has just looked
        finally:
            sock.close()

    async def _heartbeat_loop(self, sock: Any, deadline: float, next_check: float) -> None:
        import zmq

        while True:
            await sock.send(b"ptcuda-ping")
            if await sock.poll(100):
                try:
                    await sock.recv(zmq.NOBLOCK)
                    return
                except zmq.Again:  # a late echo of an earlier ping, dropped by REQ_CORRELATE
                    pass
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.5
                state = await self.service.inspect(self.container_id or "", signals=True)
                if state is None or not state.running:
                    logs = await self.service.logs(self.container_id or "", tail=40)
                    err = self.service.describe_exit(state, logs, f"kernel container for image {self._spec.image} stopped during start-up")
                    await self._remove_container()
                    raise err
            if now > deadline:
                logs = await self.service.logs(self.container_id or "", tail=40)
                await self._remove_container()
                raise LaunchError(f"the kernel did not answer within launch_timeout={self.launch_timeout:.0f} s; "
                                  f"its container was removed. Last log lines:\n{logs[-2000:]}")

    # -- running ----------------------------------------------------------------------------------
    def _marker(self, name: str) -> bool:
        """Whether the supervisor wrote ``<control>/<name>-<generation>`` (lstat: links are not followed)."""
        if self._control is None:
            return False
        try:
            os.lstat(self._control / f"{name}-{self._generation}")
        except OSError:
            return False
        return True

    def _restarted_in_place(self) -> bool:
        return self._marker("restarting")

    def _ended_code(self) -> int | None:
        """The exit code in ``ended-<generation>``, or None when the supervisor has not written it."""
        if not self._marker("ended"):
            return None
        assert self._control is not None
        try:
            fd = os.open(self._control / f"ended-{self._generation}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                text = os.read(fd, 16).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
        except OSError:
            text = ""
        return int(text) if text.lstrip("-").isdigit() else -1

    def _clear_markers(self) -> None:
        """A new container's supervisor counts from 0 again: forget the last one's files."""
        if self._control is None:
            return
        for entry in os.scandir(self._control):
            if entry.name == "restart" or entry.name.startswith(("ended-", "restarting-")):
                os.unlink(entry.path)  # unlink never follows a link

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Called just after the shutdown request was sent: for a restart, ask the supervisor to start
        the kernel again in this container (file ``restart`` in the control folder, created without
        following a link the kernel's user may have put there)."""
        self._shutting_down = True
        if restart and self._control is not None and self.container_id:
            try:
                fd = os.open(self._control / "restart", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                pass
            except OSError as exc:  # not a restart in place then: the container is replaced as before
                self.log.warning("jupyter-ptcuda: kernel %s restarts in a new container: %s", self.kernel_id, exc)
                return
            else:
                os.close(fd)
            self._restart_asked = True

    async def poll(self) -> int | None:
        """None while the kernel runs, else its exit code. A supervised kernel's end is a file its
        supervisor writes (no Docker call; the container may still be stopping); else one inspect."""
        if self.container_id is None:
            return self._exit_code if self._exit_code is not None else 0
        code = self._ended_code()
        if code is None and self._shutting_down and self._control is not None:
            # Asked to shut down: jupyter_client polls every 0.1 s; answer as soon as the kernel has ended
            # (its supervisor's file), within this poll, so a shutdown or restart does not wait for a tick.
            deadline = time.monotonic() + 0.09
            while code is None and time.monotonic() < deadline:
                await asyncio.sleep(0.003)
                code = self._ended_code()
        if code is not None:
            self._exit_code = code
            return code
        if self._control is not None and time.monotonic() - self._inspected < 1.0:
            return None  # supervised: its end is the file above; the container itself is looked at each second
        self._inspected = time.monotonic()
        state = await self.service.inspect(self.container_id)
        if state is None:
            return self._exit_code if self._exit_code is not None else -1
        if state.running:
            return None
        self._exit_code = state.exit_code if state.exit_code is not None else -1
        return self._exit_code

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.2)
        return code

    async def send_signal(self, signum: int) -> None:
        """Signal the kernel (through the init process, which forwards it). SIGINT = interrupt."""
        if self.container_id is None:
            return
        if signum == 0:
            await self.poll()
            return
        if signum == signal_module.SIGINT and self.placement.interrupt(self.parent):  # a pod: its control channel
            return
        await self.service.signal(self.container_id, signal_module.Signals(signum).name)

    async def kill(self, restart: bool = False) -> None:
        if self.container_id:
            await self.service.signal(self.container_id, "SIGKILL")

    async def terminate(self, restart: bool = False) -> None:
        if self.container_id:
            await self.service.signal(self.container_id, "SIGTERM")

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the container (kept on a restart in place); on a real shutdown also the kernel's files
        (connection file, ipc folder, record), ports and GPU claim.

        The removal runs on in the background once the kernel has ended: a shutdown does not wait for
        Docker's teardown (the server's stop waits for it, :func:`drain_removals`; the reaper removes what a
        killed server left)."""
        if restart and self._restart_asked and self._restarted_in_place():
            return
        if self._marker("ended") and self.container_id:
            cid, self.container_id = self.container_id, None
            removal = self.service.remove_soon(cid)
            _removals.add(removal)
            removal.add_done_callback(_removals.discard)
        else:
            await self._remove_container()
        if not restart:
            km = self.parent
            await asyncio.to_thread(kernel_files.remove, str(self.kernel_id),
                                    getattr(km, "connection_file", None) or None)
            self.service.release(str(self.kernel_id))
            if self.ports_cached:
                lpc = LocalPortCache.instance()
                for p in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                    lpc.return_port(int(self.connection_info[p]))  # type: ignore[call-overload]
                self.ports_cached = False

    async def _remove_container(self) -> None:
        if self.container_id:
            cid, self.container_id = self.container_id, None
            await self.service.remove(cid)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, 5.0)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, self.launch_timeout)

    def resolve_path(self, path_str: str) -> str | None:
        """Paths in the kernel are host paths for the mounted notebook directory (same path inside)."""
        path = Path(path_str).expanduser()
        if not path.is_absolute():
            return None
        return str(path) if path.exists() else None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update({"container_id": self.container_id, "ports_cached": self.ports_cached})
        return info

    async def load_provisioner_info(self, provisioner_info: dict) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.ports_cached = bool(provisioner_info.get("ports_cached"))

