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
import dataclasses
import json
import os
import pwd
import signal as signal_module
import socket
import time
from pathlib import Path
from typing import Any

from jupyter_client.connect import KernelConnectionInfo, LocalPortCache
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import kernel_files
from . import spec as S
from .engine import Engine, get_engine
from .errors import ConfigError, ImageNotFound, LaunchError, NoNvidiaRuntime, PtcudaError
from .images import DEFAULT_TAG, check_kernel_image
from .ledger import active_ledger

#: The container's copy of the connection file (placed in the container before start, never mounted).
CONTAINER_CONN_FILE = "/run/ptcuda/kernel.json"
#: The uid:gid of containers of a root server whose folder is root's (or that mounts no folder): held by
#: no host account, so no local user can read its keys, signal it or read its memory.
ISOLATED_UID = ISOLATED_GID = 65533
SERVER_STARTED = time.time()


def server_id() -> str:
    """Identifies this server process in container labels: host, pid and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(SERVER_STARTED)}"


def _as_trait_error(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except ConfigError as exc:
        raise TraitError(exc.message) from None


class ContainerOptions(LoggingConfigurable):
    """The container-shaping traits, shared by the provisioner and batch jobs (mixin for Configurables)."""

    image = Unicode(DEFAULT_TAG, config=True, help=f"""Kernel image (default {DEFAULT_TAG!r}).
        Build one with `jupyter ptcuda image build`. Example: c.DockerProvisioner.image = "my/torch:kernel" """)
    gpus = AnyTrait("all", config=True, help="""GPUs: 'all' (default), a count (2), device indexes or
        UUIDs (["0", "GPU-5a3f..."]), or 'none'. Example: c.DockerProvisioner.gpus = 1""")
    gpu_fallback = CaselessStrEnum(["error", "cpu"], "error", config=True, help="""What to do when GPUs
        are requested but the engine has no NVIDIA runtime: 'error' (default: the kernel fails to start,
        saying how to fix it) or 'cpu' (start without GPUs and log a warning).""")
    shm_size = AnyTrait("2g", config=True, help="""/dev/shm size (default '2g'; Docker's 64 MB breaks
        DataLoader workers). Example: c.DockerProvisioner.shm_size = "16g" """)
    mem_limit = AnyTrait(None, allow_none=True, config=True, help="Memory limit, e.g. '32g' (default: none).")
    cpus = AnyTrait(None, allow_none=True, config=True, help="CPU limit, e.g. 8 (default: none).")
    pids_limit = Int(4096, config=True, help="Process limit (default 4096; 0 = none).")
    mounts: List[Any] = List(config=True, help="""Extra bind mounts, 'SRC:DST[:ro]' (default none). The notebook's
        directory is always mounted at its own path. Example: c.DockerProvisioner.mounts = ["/data:/data:ro"]""")
    env_allowlist = List(Unicode(), list(S.DEFAULT_ENV_ALLOWLIST), config=True, help=f"""Names (fnmatch
        patterns) of server environment variables passed to the kernel (default {list(S.DEFAULT_ENV_ALLOWLIST)}).
        Nothing else from the server's environment reaches the container; the kernelspec's own `env`
        is always passed. Example: c.DockerProvisioner.env_allowlist = ["LANG", "WANDB_*"]""")
    unprivileged_uid = Int(None, allow_none=True, config=True, help=f"""uid for containers when the server
        runs as root. Default (None): the owner of the notebook's folder, with the folder's group, so
        files are the user's own; when root owns the folder (or none is mounted), {ISOLATED_UID}:{ISOLATED_GID},
        a uid no host account holds. A non-root server always runs containers as its own uid:gid.
        Set a uid only if no other local user holds it (whoever holds it can read the kernel's memory and
        signal it). Example: c.ContainerOptions.unprivileged_uid = 2000""")
    unprivileged_gid = Int(100, config=True, help="gid paired with an explicit unprivileged_uid (default 100).")
    allow_root = Bool(False, config=True, help="""Run the kernel as root when the server runs as root
        (default False: see unprivileged_uid).""")
    transport = CaselessStrEnum(["ipc", "tcp"], "ipc", config=True, help="""How the server reaches the kernel:
        'ipc' (default): Unix sockets in the kernel's private folder (0700, owned by the kernel's uid,
        bind-mounted at the same path); no port, nothing another local user can connect to.
        'tcp': five ports published on 127.0.0.1, UNENCRYPTED: every local user can connect to them
        and read the kernel's output on iopub (loopback is not private on a shared host); only for a
        single-user machine. Example: c.DockerProvisioner.transport = "tcp" """)
    network_mode = CaselessStrEnum(["bridge", "host", "none", "shared"], "bridge", config=True, help="""'shared':
        the kernels of this server join one network namespace held by a small per-server container
        (outbound access, isolated from the host network; implies transport 'ipc'; fastest isolated start).
        'bridge' (default):
        kernel ports are published on 127.0.0.1 only. 'host': the kernel shares the host network and
        binds 127.0.0.1 itself (lower latency, no port proxy).""")

    @validate("gpus")
    def _v_gpus(self, proposal: Any) -> Any:
        _as_trait_error(S.parse_gpus, proposal["value"])
        return proposal["value"]

    @validate("shm_size", "mem_limit")
    def _v_size(self, proposal: Any) -> Any:
        _as_trait_error(lambda v: S.parse_size(v, proposal["trait"].name), proposal["value"])
        return proposal["value"]

    @validate("cpus")
    def _v_cpus(self, proposal: Any) -> Any:
        _as_trait_error(S.parse_cpus, proposal["value"])
        return proposal["value"]

    @validate("mounts")
    def _v_mounts(self, proposal: Any) -> Any:
        _as_trait_error(S.parse_mounts, proposal["value"])
        return proposal["value"]

    @validate("pids_limit")
    def _v_pids(self, proposal: Any) -> Any:
        if proposal["value"] < 0:
            raise TraitError(f"pids_limit={proposal['value']}: must be 0 (no limit) or positive.")
        return proposal["value"]

    def container_user(self, workdir: str | None = None) -> str:
        """uid:gid a container with ``workdir`` mounted runs as (see ``unprivileged_uid``/``allow_root``)."""
        if os.geteuid() != 0:
            return f"{os.geteuid()}:{os.getegid()}"
        if self.allow_root:
            return "0:0"
        if self.unprivileged_uid is not None:
            return f"{self.unprivileged_uid}:{self.unprivileged_gid}"
        if workdir:
            try:
                st = os.stat(workdir)
            except OSError:
                st = None
            if st is not None and st.st_uid != 0:
                return f"{st.st_uid}:{st.st_gid}"
        try:
            pwd.getpwuid(ISOLATED_UID)
        except KeyError:
            return f"{ISOLATED_UID}:{ISOLATED_GID}"
        raise ConfigError(f"uid {ISOLATED_UID} (for containers of a root server in root's folders) belongs to "
                          f"the host account {pwd.getpwuid(ISOLATED_UID).pw_name!r}: set "
                          "c.ContainerOptions.unprivileged_uid to a uid that no local user holds.")

    def base_spec(self, *, command: list[str], workdir: str, env: dict[str, str], labels: dict[str, str],
                  ports: dict[int, int] | None = None, extra_mounts: tuple[S.Mount, ...] = (),
                  mount_workdir: bool = True, user: str | None = None,
                  files: tuple[S.SpecFile, ...] = ()) -> S.ContainerSpec:
        """The ContainerSpec for these options: the one builder kernels, jobs and health checks share.

        ``workdir`` (the notebook's directory) is bind-mounted at its own path unless ``mount_workdir``
        is False (one-off health containers, kernels started without a folder)."""
        gpus = S.parse_gpus(self.gpus)
        own = (S.Mount(workdir, workdir, False),) if mount_workdir else ()
        mounts = own + S.parse_mounts(self.mounts) + extra_mounts
        labels = {S.LABEL_OWNER_UID: str(os.geteuid()), S.LABEL_GPUS: gpus.label(), **labels}
        return S.ContainerSpec(
            image=self.image, command=tuple(command), files=files,
            user=user or self.container_user(workdir if mount_workdir else None), workdir=workdir,
            env=env, labels=labels, mounts=mounts, gpus=gpus, ports=ports or {},
            network_mode=self.network_mode, shm_size=S.parse_size(self.shm_size, "shm_size"),
            mem_limit=S.parse_size(self.mem_limit, "mem_limit"), cpus=S.parse_cpus(self.cpus),
            pids_limit=self.pids_limit or None,
        )


class DockerProvisioner(ContainerOptions, KernelProvisionerBase):  # type: ignore[misc,metaclass]
    """Runs an IPython kernel in a (PyTorch-CUDA) container. See the module docstring."""

    pull_policy = CaselessStrEnum(["missing", "always", "never"], "missing", config=True, help="""When to
        pull the image: 'missing' (default), 'always', or 'never'.""")
    pull_timeout = Float(900, config=True, help="Seconds allowed for an image pull (default 900).")
    launch_timeout = Float(120, config=True, help="""Seconds from container start until the kernel answers
        its heartbeat (default 120); past it the container is removed and the start fails.""")

    container_id = Unicode(None, allow_none=True)
    ports_cached = False
    _exit_code: int | None = None

    @default("image")
    def _default_image(self) -> str:
        return os.environ.get("JUPYTER_PTCUDA_IMAGE", DEFAULT_TAG)

    @property
    def engine(self) -> Engine:
        return get_engine()

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
        S.parse_gpus(self.gpus)  # fail early on config errors
        cwd = kwargs.pop("cwd", None)
        workdir = os.path.abspath(cwd) if cwd else None
        user = self.container_user(workdir)
        kid = str(self.kernel_id)
        ipc_dir = kernel_files.ipc_dir(kid, user) if self._ipc else None
        if ipc_dir is not None:  # socket files <ipc_dir>/kernel-<n>; jupyter_client picks free suffixes
            km.transport, km.ip = "ipc", str(ipc_dir / "kernel")
        else:
            km.transport, km.ip = "tcp", "127.0.0.1"
        if ipc_dir is None and not self.ports_cached:
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

        env = S.filter_env(env_in, self.env_allowlist)
        env.update({k: os.path.expandvars(v) for k, v in (self.kernel_spec.env or {}).items()})
        env["JUPYTER_PTCUDA_KERNEL_ID"] = kid
        env.pop("PYTHONEXECUTABLE", None)
        ports = {int(self.connection_info[p]): int(self.connection_info[p])  # type: ignore[call-overload]
                 for p in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")}
        labels = {S.LABEL_KIND: "kernel", S.LABEL_KERNEL_ID: kid, S.LABEL_SERVER_ID: server_id(),
                  S.LABEL_SERVER_PID: str(os.getpid()),
                  S.LABEL_NOTEBOOK: env_in.get("JPY_SESSION_NAME", "") or workdir or ""}
        if ipc_dir is not None:
            labels[S.LABEL_KERNEL_DIR] = str(ipc_dir)
        self._spec = self.base_spec(
            command=cmd, workdir=workdir or S.ContainerSpec.home, env=env, labels=labels, user=user,
            mount_workdir=workdir is not None,
            ports=ports if self.network_mode == "bridge" and ipc_dir is None else {},
            extra_mounts=(S.Mount(str(ipc_dir), str(ipc_dir), False),) if ipc_dir is not None else (),
            files=(S.SpecFile(CONTAINER_CONN_FILE, self._container_connection()),),
        )
        return {"cmd": cmd, **kwargs}

    @property
    def _ipc(self) -> bool:
        return self.transport == "ipc" or self.network_mode == "shared"

    def _container_connection(self) -> bytes:
        """The container's copy of the connection file: with tcp it binds all interfaces *inside* the
        container (bridge). Placed in the container, mode 0400, owned by the container user; never logged."""
        info = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in dict(self.connection_info).items()}
        if info.get("transport") == "tcp":
            info["ip"] = "0.0.0.0" if self.network_mode == "bridge" else "127.0.0.1"
        return json.dumps(info).encode()

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start the container and wait until the kernel answers its heartbeat."""
        await self._ensure_image(self._spec.image)
        spec = await self._resolve_gpus(self._spec)
        if self.network_mode == "shared":
            from .netns import ensure_holder

            holder = await ensure_holder(self.engine, spec.image)
            spec = dataclasses.replace(spec, network_mode=f"container:{holder}", ports={})
        try:
            self.container_id = await self.engine.run(spec)
        except NoNvidiaRuntime as exc:
            if self.gpu_fallback != "cpu":
                raise
            self.log.warning("jupyter-ptcuda: %s -- gpu_fallback='cpu': starting kernel %s WITHOUT GPUs.",
                             exc.message.split(". ")[0], self.kernel_id)
            spec = spec.with_gpus(S.GpuRequest())
            self.container_id = await self.engine.run(spec)
        self._exit_code = None
        self.log.info("jupyter-ptcuda: kernel %s in container %s (image %s, gpus %s, user %s)",
                      self.kernel_id, self.container_id[:12], spec.image, spec.gpus.label(), spec.user)
        await self._wait_ready()
        return self.connection_info

    async def _resolve_gpus(self, spec: S.ContainerSpec) -> S.ContainerSpec:
        """The GPU ledger (set by the server extension) picks devices; without it requests pass through."""
        ledger = active_ledger()
        if ledger is None or not spec.gpus.wanted:
            return spec
        return spec.with_gpus(await ledger.assign(str(self.kernel_id), spec.gpus))

    async def _ensure_image(self, image: str) -> None:
        present = True
        try:
            await self.engine.image(image)
        except ImageNotFound:
            present = False
        if self.pull_policy == "always" or (not present and self.pull_policy == "missing"):
            try:
                await asyncio.wait_for(self.engine.call(lambda api: list(api.pull(image, stream=True, decode=True)),
                                                        what=f"pulling {image}", long=True), self.pull_timeout)
            except TimeoutError:
                raise LaunchError(f"pulling {image} took longer than pull_timeout={self.pull_timeout:.0f} s.") from None
            except PtcudaError as exc:
                if present:
                    self.log.warning("jupyter-ptcuda: pull of %s failed, using the local copy: %s", image, exc)
                else:
                    raise ImageNotFound(
                        f"image {image!r} is not present and could not be pulled ({exc.message.splitlines()[0]}). "
                        f"Build it: `jupyter ptcuda image build --tag {image}` (add --base debian without a registry)."
                    ) from exc
        elif not present:
            raise ImageNotFound(f"image {image!r} is not present (pull_policy='never'): build it with "
                                f"`jupyter ptcuda image build --tag {image}`.")
        await check_kernel_image(self.engine, image)

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
        if self.connection_info.get("transport") == "ipc":
            sock.connect(f"ipc://{self.connection_info['ip']}-{self.connection_info['hb_port']}")
        else:
            sock.connect(f"tcp://127.0.0.1:{self.connection_info['hb_port']}")
        try:
            await self._heartbeat_loop(sock, deadline, next_check)
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
                info = await self.engine.inspect(self.container_id or "")
                if info is None or not info["State"].get("Running"):
                    logs = await self.engine.logs(self.container_id or "", tail=40)
                    err = self.engine.describe_exit(info, logs, f"kernel container for image {self._spec.image} stopped during start-up")
                    await self._remove_container()
                    raise err
            if now > deadline:
                logs = await self.engine.logs(self.container_id or "", tail=40)
                await self._remove_container()
                raise LaunchError(f"the kernel did not answer within launch_timeout={self.launch_timeout:.0f} s; "
                                  f"its container was removed. Last log lines:\n{logs[-2000:]}")

    # -- running ----------------------------------------------------------------------------------
    async def poll(self) -> int | None:
        """None while the container runs, else its exit code. One inspect in a worker thread."""
        if self.container_id is None:
            return self._exit_code if self._exit_code is not None else 0
        info = await self.engine.inspect(self.container_id)
        if info is None:
            return self._exit_code if self._exit_code is not None else -1
        state = info["State"]
        if state.get("Running"):
            return None
        self._exit_code = int(state.get("ExitCode", -1))
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
        await self.engine.kill(self.container_id, signal=signal_module.Signals(signum).name)

    async def kill(self, restart: bool = False) -> None:
        if self.container_id:
            await self.engine.kill(self.container_id, "SIGKILL")

    async def terminate(self, restart: bool = False) -> None:
        if self.container_id:
            await self.engine.kill(self.container_id, "SIGTERM")

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the container; on a real shutdown also the kernel's files (connection file, ipc folder,
        record), ports and GPU claim."""
        await self._remove_container()
        if not restart:
            km = self.parent
            await asyncio.to_thread(kernel_files.remove, str(self.kernel_id),
                                    getattr(km, "connection_file", None) or None)
            ledger = active_ledger()
            if ledger is not None:
                ledger.release(str(self.kernel_id))
            if self.ports_cached:
                lpc = LocalPortCache.instance()
                for p in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                    lpc.return_port(int(self.connection_info[p]))  # type: ignore[call-overload]
                self.ports_cached = False

    async def _remove_container(self) -> None:
        if self.container_id:
            cid, self.container_id = self.container_id, None
            await self.engine.remove(cid)

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


def username() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
