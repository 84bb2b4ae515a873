"""The engine seam: the only module that imports ``docker``.

Every blocking docker-py call runs in a worker thread (``Engine.call``), so nothing blocks the event
loop, and every ``docker.errors`` exception is mapped to our own (:mod:`jupyter_ptcuda.errors`):
404 → NotFound, 409 → Conflict, connection refused → EngineUnavailable, the "no NVIDIA runtime" refusal
→ NoNvidiaRuntime. The client is created lazily on first use, because provisioner methods may run on
different event loops and the server extension may start before the daemon answers.

Callers: :class:`~.service.ContainerService` (everything that runs containers) and image builds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from ..errors import (
    Conflict,
    EngineError,
    EngineUnavailable,
    ImageNotFound,
    NoNvidiaRuntime,
    NotFound,
    PtcudaError,
    RegistryError,
)
from . import labels as L
from .spec import ContainerSpec, build_create_kwargs, files_archive

T = TypeVar("T")
log = logging.getLogger("jupyter_ptcuda")

NO_NVIDIA_HINT = (
    "GPUs were requested but this Docker engine has no NVIDIA runtime ({reason}). Install the NVIDIA "
    "Container Toolkit on the host (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
    "install-guide.html), restart dockerd, and check with `docker run --rm --gpus all IMAGE nvidia-smi`; "
    "or set gpus='none', or gpu_fallback='cpu' in the kernelspec to start on the CPU instead."
)


def _is_no_gpu_driver(text: str) -> bool:
    return "could not select device driver" in text and "gpu" in text


def map_error(exc: BaseException, what: str = "") -> PtcudaError:
    """Translate a docker-py / requests exception into one of ours (the one place that does)."""
    if isinstance(exc, PtcudaError):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{prefix}{exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        text = str(exc.explanation or exc)
        if _is_no_gpu_driver(text):
            return NoNvidiaRuntime(NO_NVIDIA_HINT.format(reason=text.strip()))
        status = exc.status_code or 500
        if status == 404:
            return NotFound(f"{prefix}{text}")
        if status == 409:
            return Conflict(f"{prefix}{text}")
        return EngineError(f"{prefix}Docker engine error ({status}): {text}")
    if isinstance(exc, docker.errors.DockerException | requests.exceptions.ConnectionError | FileNotFoundError):
        return EngineUnavailable(
            f"{prefix}the Docker engine does not answer ({exc}). Start it (`sudo systemctl start docker`, "
            "or `dockerd &` where there is no systemd), check DOCKER_HOST, and that this user may use "
            "the socket (member of the `docker` group)."
        )
    return EngineError(f"{prefix}{type(exc).__name__}: {exc}")


def registry_of(ref: str) -> str:
    """The registry an image reference names: its first path part when that is a host (has a dot or a
    port, or is ``localhost``), else Docker Hub (``docker.io``), as the engine reads it."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry_error(text: str, ref: str, doing: str = "pushing") -> RegistryError:
    """One sentence, with the fix, for what a registry (through the engine) said while ``doing`` ``ref``:
    401 → ``docker login``, 403 → the account may not, name unknown → the name, TLS → the CA, an
    unreachable registry → its address. The engine's own words follow in parentheses."""
    registry = registry_of(ref)
    low = text.lower()
    said = " ".join(text.split())[:200]
    if any(w in low for w in ("unauthorized", "authentication required", "no basic auth credentials",
                              "incorrect username or password", "401 unauthorized")):
        msg = (f"the registry {registry} did not accept the credentials of this process while {doing} {ref} "
               f"({said}): run `docker login {registry}` as the user that runs jupyter ptcuda (credentials are "
               "read from $DOCKER_CONFIG/config.json, default ~/.docker/config.json).")
    elif any(w in low for w in ("denied", "forbidden")):
        msg = (f"the registry {registry} denied {doing} {ref} ({said}): the account logged in with "
               f"`docker login {registry}` may not use this repository; ask for access, or tag the image into a "
               "repository that account owns.")
    elif any(w in low for w in ("x509", "certificate", "tls", "https client")):
        msg = (f"a TLS connection to the registry {registry} failed while {doing} {ref} ({said}): install the "
               f"registry's CA certificate as /etc/docker/certs.d/{registry}/ca.crt on the Docker host (or, for a "
               "test registry on plain HTTP, list it in dockerd's insecure-registries).")
    elif any(w in low for w in ("name unknown", "manifest unknown", "repository name not known", "not found",
                                "does not exist", "name invalid", "invalid reference")):
        msg = (f"the registry {registry} does not know {ref} ({said}): check the repository name and tag "
               f"(for an image built here, push it first: `jupyter ptcuda image push {ref}`).")
    elif any(w in low for w in ("connection refused", "no such host", "i/o timeout", "dial tcp",
                                "network is unreachable", "timeout")):
        msg = (f"the registry {registry} is unreachable while {doing} {ref} ({said}): check the registry "
               "address in the image name and that the registry runs and is reachable from the Docker host.")
    else:
        msg = f"{doing} {ref} failed at the registry {registry}: {said}."
    return RegistryError(msg, registry=registry, ref=ref)


def _stream_to_registry(chunks: Iterator[dict[str, Any]], ref: str, doing: str,
                        on_event: Callable[[dict[str, Any]], None] | None) -> str:
    """Read a push/pull event stream: each event to ``on_event``; an error event raised as the sentence;
    returns the manifest digest the stream named (push: its ``aux``; pull: ``Digest: sha256:...``)."""
    digest = ""
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            text = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message") or str(chunk)
            raise registry_error(str(text), ref, doing)
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest") or digest
        status = str(chunk.get("status") or "")
        if status.startswith("Digest: sha256:"):
            digest = status.split()[1]
        if on_event is not None:
            on_event(chunk)
    return digest


class Engine:
    """A lazily connected Docker engine. One per process (see :func:`get_engine`)."""

    def __init__(self, base_url: str | None = None, timeout: float = 120) -> None:
        self.base_url = base_url or os.environ.get("DOCKER_HOST")
        self.timeout = timeout
        self._client: docker.APIClient | None = None
        self._lock = threading.Lock()
        self.ulimits_refused = False  # learnt once: this engine cannot raise memlock/stack limits
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ptcuda-engine")
        # Calls that last as long as a container runs (waits, execs, pulls) each get a thread of their own
        # (:meth:`call` with ``long``): no pool for them to fill, so nobody's wait delays anybody's exec or
        # kernel start. Their number is bounded by their callers (the broker: c.PtcudaBroker.max_long_calls).

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def api(self) -> docker.APIClient:
        """The low-level client, created on first use (in a worker thread; it talks to the daemon)."""
        with self._lock:
            if self._client is None:
                try:
                    kwargs: dict[str, Any] = {"version": "auto", "timeout": self.timeout}
                    if self.base_url:
                        kwargs["base_url"] = self.base_url
                    else:
                        kwargs.update(docker.utils.kwargs_from_env())
                        kwargs.setdefault("base_url", "unix:///var/run/docker.sock")
                    self._client = docker.APIClient(**kwargs)
                except Exception as exc:
                    raise map_error(exc) from exc
            return self._client

    def run_sync(self, fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
        """Run ``fn(api, *args, **kwargs)`` here, mapping errors. For threads and the CLI."""
        try:
            return fn(self.api, *args, **kwargs)
        except PtcudaError:
            raise
        except Exception as exc:
            raise map_error(exc, what) from exc

    async def call(self, fn: Callable[..., T], *args: Any, what: str = "", long: bool = False, **kwargs: Any) -> T:
        """Run ``fn(api, *args, **kwargs)`` in a worker thread; the one way async code reaches Docker.

        ``long``: a call that blocks while a container runs or an image downloads (wait, exec, pull,
        build) runs on a thread of its own, never in the shared pool."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.run_sync, fn, *args, what=what, **kwargs)
        if not long:
            return await loop.run_in_executor(self._pool, call)
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def run() -> None:
            try:
                result: Any = (True, call())
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                result = (False, exc)
            try:
                loop.call_soon_threadsafe(settle, *result)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        threading.Thread(target=run, name=f"ptcuda-engine-long-{what or 'call'}"[:40], daemon=True).start()
        return await future

    def call_soon(self, fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> asyncio.Future[T]:
        """Like :meth:`call`, but handed to a worker thread *now*, before the caller awaits anything: the
        call is made even if the event loop stops first (the pool's threads finish their work before the
        interpreter exits). For work a caller does not wait for (a container removal after shutdown)."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, functools.partial(self.run_sync, fn, *args, what=what, **kwargs))

    # -- queries -------------------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        """Version info of the daemon; raises EngineUnavailable when it does not answer."""
        return await self.call(lambda api: api.version(), what="ping")

    async def image(self, ref: str) -> dict[str, Any]:
        """``docker image inspect``; ImageNotFound with a fix when the image is not present."""
        try:
            return await self.call(lambda api: api.inspect_image(ref))
        except NotFound as exc:
            raise ImageNotFound(
                f"image {ref!r} is not present on this Docker engine. Build a kernel image with "
                f"`jupyter ptcuda image build --tag {ref}` (or `docker pull {ref}`)."
            ) from exc

    async def inspect(self, container: str) -> dict[str, Any] | None:
        """``docker inspect``, or None when the container is gone."""
        try:
            return await self.call(lambda api: api.inspect_container(container))
        except NotFound:
            return None

    async def containers(self, labels: dict[str, str] | None = None, all: bool = True) -> list[dict[str, Any]]:
        """Our containers (label ``io.jupyter-ptcuda.kind`` present), filtered by more labels."""
        filters = [L.KIND] + [f"{k}={v}" for k, v in (labels or {}).items()]
        return await self.call(lambda api: api.containers(all=all, filters={"label": filters}))

    async def logs(self, container: str, tail: int | str = "all") -> str:
        try:
            data = await self.call(lambda api: api.logs(container, stdout=True, stderr=True, tail=tail))
        except NotFound:
            return ""
        return data.decode("utf-8", "replace")

    def stream_logs(self, container: str, since: int | None = None) -> Iterator[bytes]:
        """A blocking iterator of log chunks (follow). Iterate it in a worker thread."""
        return self.run_sync(
            lambda api: api.logs(container, stdout=True, stderr=True, stream=True, follow=True, since=since)
        )

    # -- registries (push, pull, digest look-up) -------------------------------------------------
    # Credentials: the Docker config of this process ($DOCKER_CONFIG/config.json, default ~/.docker;
    # credential helpers included), re-read before each call, so a `docker login` made after this
    # process started counts. The engine sends them with the request; no container ever sees them.

    @staticmethod
    def _push(api: docker.APIClient, ref: str, on_event: Callable[[dict[str, Any]], None] | None) -> str:
        api.reload_config()
        try:
            chunks = api.push(ref, stream=True, decode=True)
            digest = _stream_to_registry(chunks, ref, "pushing", on_event)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if exc.status_code == 404 and "does not exist locally" in text:
                raise ImageNotFound(f"image {ref!r} is not present on this Docker engine: build it with "
                                    f"`jupyter ptcuda image build --tag {ref}`, or `docker tag IMAGE {ref}`.") from exc
            raise registry_error(text, ref, "pushing") from exc
        if not digest:
            raise RegistryError(f"pushing {ref}: the engine did not report the pushed digest; push again, "
                                "or look it up with `docker buildx imagetools inspect`.")
        return digest

    def push_sync(self, ref: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> str:
        """``docker push ref`` to the registry named in it; each progress event (the engine's JSON) to
        ``on_event``; returns the pushed manifest digest (``sha256:...``). Blocking: the CLI. A refusal
        is a RegistryError whose message says what to do (:func:`registry_error`)."""
        return self.run_sync(self._push, ref, on_event, what=f"pushing {ref}")

    async def push(self, ref: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> str:
        """:meth:`push_sync` in the long-call pool (for the server; ``on_event`` runs in that thread)."""
        return await self.call(self._push, ref, on_event, what=f"pushing {ref}", long=True)

    @staticmethod
    def _pull(api: docker.APIClient, ref: str, on_event: Callable[[dict[str, Any]], None] | None) -> str:
        api.reload_config()
        try:
            return _stream_to_registry(api.pull(ref, stream=True, decode=True), ref, "pulling", on_event)
        except docker.errors.APIError as exc:
            raise registry_error(str(exc.explanation or exc), ref, "pulling") from exc

    def pull_sync(self, ref: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> str:
        """``docker pull ref`` (a tag or ``REPO@sha256:...``), with progress events and credentials as
        :meth:`push_sync`; returns the digest the registry named. RegistryError with the fix on refusal."""
        return self.run_sync(self._pull, ref, on_event, what=f"pulling {ref}")

    async def pull(self, ref: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> str:
        """:meth:`pull_sync` in the long-call pool: what a kernel start may use to show a pull's progress."""
        return await self.call(self._pull, ref, on_event, what=f"pulling {ref}", long=True)

    def registry_digest_sync(self, ref: str) -> str:
        """The manifest digest the registry serves for ``ref`` now (``docker buildx imagetools inspect``'s,
        through the engine's distribution endpoint, with this process's credentials). RegistryError with
        the fix when the registry refuses or does not know the name. Blocking: the CLI."""

        def look(api: docker.APIClient) -> str:
            api.reload_config()
            try:
                return str(api.inspect_distribution(ref)["Descriptor"]["digest"])
            except docker.errors.APIError as exc:
                raise registry_error(str(exc.explanation or exc), ref, "looking up") from exc

        return self.run_sync(look, what=f"looking up {ref}")

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self, spec: ContainerSpec) -> str:
        """Create and start a container from a spec; return its id.

        On any failure the container is removed before the error is raised (a container refused at
        start, e.g. for a GPU request without the NVIDIA runtime, otherwise stays in state Created).
        """
        return await self.call(self._run_sync, spec)

    def _run_sync(self, api: docker.APIClient, spec: ContainerSpec) -> str:
        if self.ulimits_refused and spec.ulimits:
            spec = dataclasses.replace(spec, ulimits={})
        kwargs = build_create_kwargs(spec)
        host_config = kwargs.pop("host_config")
        kwargs["host_config"] = host_config
        try:
            created = api.create_container(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(
                f"image {spec.image!r} is not present on this Docker engine: build it with "
                f"`jupyter ptcuda image build --tag {spec.image}` or pull it."
            ) from exc
        cid = created["Id"]
        try:
            archive = files_archive(spec)
            if archive is not None:  # e.g. the kernel's connection file: in the container, no host folder
                api.put_archive(cid, "/", archive)
            api.start(cid)
        except Exception as exc:
            self._remove_quietly(api, cid)
            if "error setting rlimit" in str(exc) and spec.ulimits:
                # The engine may not raise these limits (a rootless or sandboxed dockerd): keep the
                # container startable, say what was dropped.
                log.warning("the engine refused ulimits %s (%s); starting with the engine's defaults. "
                            "Raise dockerd's own limits (LimitMEMLOCK=infinity) for NVIDIA's recommended "
                            "memlock/stack.", dict(spec.ulimits), str(exc).strip()[-120:])
                self.ulimits_refused = True
                return self._run_sync(api, dataclasses.replace(spec, ulimits={}))
            raise map_error(exc, "starting the container") from exc
        return cid

    @staticmethod
    def _remove_quietly(api: docker.APIClient, cid: str) -> None:
        """Remove a container we failed to start; retried while the engine says a removal is underway."""
        import time

        for _ in range(20):
            try:
                api.remove_container(cid, force=True, v=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    log.warning("could not remove container %s: %s", cid[:12], exc)
                    return
                time.sleep(0.1)

    async def cpu_seconds(self, container: str) -> float | None:
        """CPU time the container's processes have used so far (cgroup, via ``docker stats`` one-shot),
        or None when it is gone or not running."""
        try:
            stats = await self.call(lambda api: api.stats(container, stream=False, one_shot=True))
        except (NotFound, Conflict):
            return None
        usage = ((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}
        total = usage.get("total_usage")
        return None if total is None else float(total) / 1e9

    async def kill(self, container: str, signal: str | int = "SIGKILL") -> None:
        """Send a signal to the container's PID 1 (the init process forwards it to the kernel)."""
        try:
            await self.call(lambda api: api.kill(container, signal=signal))
        except (NotFound, Conflict):  # gone, or not running any more
            pass

    async def stop(self, container: str, timeout: int = 10) -> None:
        try:
            await self.call(lambda api: api.stop(container, timeout=timeout))
        except NotFound:
            pass

    async def remove(self, container: str) -> None:
        """Force-remove a container; a container already gone (or being removed) is fine."""
        try:
            await self.call(lambda api: api.remove_container(container, force=True, v=True))
        except (NotFound, Conflict):
            pass

    async def wait(self, container: str, timeout: float | None = None) -> int:
        """Block (in a thread) until the container exits; its exit code."""
        result = await self.call(lambda api: api.wait(container, timeout=timeout), long=True)
        return int(result.get("StatusCode", -1))

    async def exec(self, container: str, cmd: list[str], stdin: bytes | None = None, user: str = "",
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        """Run a command in a running container; (exit code, combined output). ``workdir``: its cwd
        (default: the container's working directory)."""
        return await self.call(self._exec_sync, container, cmd, stdin, user, env, workdir, long=True)

    @staticmethod
    def _exec_sync(api: docker.APIClient, container: str, cmd: list[str], stdin: bytes | None, user: str,
                   env: dict[str, str] | None = None, workdir: str | None = None) -> tuple[int, bytes]:
        ex = api.exec_create(container, cmd, stdin=stdin is not None, user=user, stdout=True, stderr=True,
                             environment=env or None, workdir=workdir)
        if stdin is None:
            out = api.exec_start(ex["Id"])
        else:
            sock = api.exec_start(ex["Id"], socket=True)
            raw = getattr(sock, "_sock", sock)
            raw.sendall(stdin)
            raw.shutdown(1)  # SHUT_WR: EOF on the command's stdin
            out = _read_multiplexed(raw)
            sock.close()
        code = api.exec_inspect(ex["Id"]).get("ExitCode")
        return int(code if code is not None else -1), out


def _read_multiplexed(sock: Any) -> bytes:
    """Read Docker's multiplexed stream (8-byte frame headers) until EOF; stdout+stderr joined."""
    buf, out = b"", bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 8:
            size = int.from_bytes(buf[4:8], "big")
            if len(buf) < 8 + size:
                break
            out += buf[8 : 8 + size]
            buf = buf[8 + size :]
    return bytes(out)


_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """The process-wide engine (created lazily; no daemon contact until the first call)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


def set_engine(engine: Engine | None) -> None:
    """Replace the process-wide engine (tests point it at a dead socket)."""
    global _engine
    with _engine_lock:
        _engine = engine
