"""REST handlers: GPUs, kernels, health checks, Prometheus metrics (``{base_url}/jupyter-ptcuda/...``; the
GPU queue's length and wait-time histogram among them).

Every verb is ``@web.authenticated`` + ``@authorized`` (resource ``jupyter_ptcuda``). Reads of GPU state
never call NVML (the sampler's cached snapshot); Docker calls go through the engine's worker threads.
The routes are described in ``jupyter_ptcuda/server/openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web

from ..containers import labels as L
from ..containers.gpus import devices, parse_gpus
from ..errors import ConfigError, EngineUnavailable, NotFound, PtcudaError, TooBusy
from ..health.runner import check_allowed, check_image, check_kernel
from ..refreshed import Refreshed
from .attribution import attribute_processes
from .base import NAMESPACE, PtcudaHandler, truncate

_ID = r"(?P<item_id>[A-Za-z0-9_.-]+)"
HOLDERS_TTL = 1.0
ENGINE_TTL = 5.0


def _refreshed(state: Any, key: str, ttl: float, produce: Callable[[], Awaitable[Any]]) -> Refreshed:
    value = state.cache.get(key)
    if value is None:
        value = state.cache[key] = Refreshed(ttl, produce)
    return value


def holders_value(state: Any) -> Refreshed:
    """Ledger holders (``{gpu index: [holder, ...]}``), refreshed at most every second."""
    async def produce() -> dict[str, list[dict[str, str]]]:
        try:
            return await state.ledger.holders()
        except PtcudaError:
            return {}

    return _refreshed(state, "holders", HOLDERS_TTL, produce)


def engine_value(state: Any) -> Refreshed:
    """Whether the Docker engine answers (refreshed at most every ``ENGINE_TTL`` s):
    ``{"state": "ok"|"unavailable", ...}``."""
    async def produce() -> dict[str, Any]:
        try:
            version = await state.service.ping()
        except PtcudaError as exc:
            return {"state": "unavailable", "reason": exc.message}
        return {"state": "ok", **version}

    return _refreshed(state, "engine", ENGINE_TTL, produce)


class GpusHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Snapshot + history (``?since=<epoch>&max_points=<n>``) + who holds each GPU + engine state."""
        sampler = self.state.sampler
        sampler.ensure_started()
        try:
            since = float(self.get_argument("since")) if self.get_argument("since", None) else None
            max_points = int(self.get_argument("max_points", "600"))
        except ValueError:
            raise web.HTTPError(400, "since must be a number (epoch seconds) and max_points an integer") from None
        if max_points <= 0:
            raise web.HTTPError(400, "max_points must be positive")
        hv, ev = holders_value(self.state), engine_value(self.state)
        holders, engine = await hv.get(), await ev.get()
        # Many panels poll the same thing: the snapshot is encoded once per (sample, holders) and each
        # body once per (snapshot, query, engine state); history samples were encoded when sampled.
        snap_key = (sampler.version, hv.version)
        cache = self.state.cache
        snap_json = cache.get("gpus_snapshot")
        if snap_json is None or snap_json[0] != snap_key:
            snap = sampler.snapshot()
            for gpu in snap.get("gpus", []):
                gpu["holders"] = holders.get(str(gpu.get("index")), [])
            if snap.get("gpus"):
                await attribute_processes(snap)  # NVML pids → our containers
            snap_json = cache["gpus_snapshot"] = (snap_key, json.dumps(snap, default=str))
        key = (snap_json[0], since, max_points, ev.version)
        bodies = cache.setdefault("gpus_body", {})
        entry = bodies.get(key)
        if entry is None:
            history = sampler.history_json(since=since, max_points=max_points)
            entry = EncodedBody(f'{{"snapshot": {snap_json[1]}, "history": {history}, '
                                f'"engine": {json.dumps(engine, default=str)}}}')
            if len(bodies) > 64 or any(k[0] != key[0] for k in bodies):
                bodies.clear()
            bodies[key] = entry
        entry.send(self)


class EncodedBody:
    """A JSON response encoded once and sent to many clients, with its ETag (304 on ``If-None-Match``)
    computed once too: tornado would otherwise hash the ~110 kB of a full hour's history on every send."""

    def __init__(self, text: str) -> None:
        self.raw = text.encode()
        self.etag = f'"{hashlib.sha1(self.raw).hexdigest()[:20]}"'

    def send(self, handler: web.RequestHandler) -> None:
        handler.set_header("Etag", self.etag)
        if handler.check_etag_header():
            handler.set_status(304)
            handler.finish()
        else:
            handler.finish(self.raw)


class KernelsHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Kernel ↔ container ↔ GPUs ↔ notebook, for this server's kernels."""
        self.write_json(await kernels_view(self))


async def kernels_view(handler: PtcudaHandler) -> list[dict[str, Any]]:
    """This server's kernels with their container, image, notebook and GPUs. ``gpus``: the device indexes
    the kernel can use (``all`` → every GPU the sampler sees; the status bar matches them), ``gpu_request``:
    the request as labelled (``all``, ``count:2``, ``0,1``)."""
    km = handler.serverapp.kernel_manager
    sessions = {s["kernel"]["id"]: s for s in await handler.serverapp.session_manager.list_sessions() if s.get("kernel")}
    try:
        containers = {c.tag.id: c for c in await handler.state.service.list(L.KERNEL, running=True)}
    except PtcudaError:
        containers = {}
    snapshot = handler.state.sampler.snapshot() or {}
    gpus_seen = snapshot.get("gpus", []) if snapshot.get("state") == "ok" else []
    out = []
    for kid in km.list_kernel_ids():
        kernel = km.get_kernel(kid)
        model = km.kernel_model(kid)
        c = containers.get(kid)
        session = sessions.get(kid, {})
        label = c.tag.gpus if c else "none"
        out.append({
            "kernel_id": kid,
            "name": model.get("name"),
            "execution_state": model.get("execution_state"),
            "notebook": session.get("path") or (c.tag.notebook if c else None),
            "container_id": c.id[:12] if c else None,
            "image": c.image if c else None,
            "gpus": devices(label, gpus_seen),
            "gpu_request": label,
            "in_container": bool(getattr(kernel.provisioner, "container_id", None)),
            "fell_back": getattr(kernel.provisioner, "fell_back", None),
        })
    return out


class HealthCollectionHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start a health check of ``{"image": ..., "gpus"?, "perf"?}`` or ``{"kernel_id": ...}``."""
        body = self.json_body()
        image, kernel_id = body.get("image"), body.get("kernel_id")
        if bool(image) == bool(kernel_id):
            raise ConfigError("give exactly one of 'image' (an image name) or 'kernel_id' (a running kernel)")
        if image is not None and not isinstance(image, str):
            raise ConfigError("'image' must be a string such as 'jupyter-ptcuda/pytorch-kernel:latest'")
        if kernel_id is not None:
            if not isinstance(kernel_id, str) or kernel_id not in self.serverapp.kernel_manager:
                raise NotFound(f"no kernel {kernel_id!r} on this server")
        if "gpus" in body:
            parse_gpus(body["gpus"])
        running = sum(1 for e in self.state.health.values() if e["state"] == "running")
        limit = self.state.app.health_concurrency
        if running >= limit:
            raise TooBusy(f"{running} health checks are running, the most this server runs at once "
                          f"(c.PtcudaExtension.health_concurrency = {limit}); retry when one has finished.")
        perf = body.get("perf", False)
        if not isinstance(perf, bool):
            raise ConfigError("'perf' must be true or false")
        unavailable: EngineUnavailable | None = None
        if image:  # 403 before anything starts: an allowed image, GPUs within c.ContainerOptions.gpus
            try:
                await check_allowed(self.state.service, image, gpus=body.get("gpus"), parent=self.state.app)
            except EngineUnavailable as exc:  # the check is recorded and fails with it (the panel shows why)
                unavailable = exc
        hid = uuid.uuid4().hex[:12]
        target: dict[str, Any] = {"image": image} if image else {"kernel_id": kernel_id, "notebook": None}
        if kernel_id:  # named by its notebook, also after a reload when the kernel is gone
            sessions = await self.serverapp.session_manager.list_sessions()
            target["notebook"] = next((s.get("path") for s in sessions if (s.get("kernel") or {}).get("id") == kernel_id),
                                      None)
        entry = {"id": hid, "state": "running", "created": time.time(), "finished": None,
                 "target": target, "report": None, "error": None}
        self.state.health[hid] = entry
        while len(self.state.health) > 100:
            self.state.health.pop(next(iter(self.state.health)))
        self.state.spawn(self._run(entry, image, kernel_id, body.get("gpus"), perf, unavailable))
        self.set_header("Location", url_path_join(self.base_url, NAMESPACE, "health", hid))
        self.write_json(entry, status=201)

    async def _run(self, entry: dict[str, Any], image: str | None, kernel_id: str | None, gpus: Any, perf: bool,
                   unavailable: EngineUnavailable | None = None) -> None:
        service, timeout = self.state.service, self.state.app.health_timeout
        try:
            if unavailable is not None:  # never run a check the policy could not judge
                raise unavailable
            if image:
                entry["report"] = await check_image(service, image, gpus=gpus, perf=perf, parent=self.state.app,
                                                    timeout=timeout, check_id=entry["id"])
            else:
                prov = self.serverapp.kernel_manager.get_kernel(str(kernel_id)).provisioner
                entry["report"] = await check_kernel(service, str(kernel_id), perf=perf, timeout=timeout,
                                                     requested=getattr(prov, "gpus", None),
                                                     fell_back=bool(getattr(prov, "fell_back", None)))
            entry["state"] = "done"
        except PtcudaError as exc:
            entry.update(state="error", error={"message": truncate(exc.message), "reason": type(exc).__name__})
        except Exception as exc:  # noqa: BLE001 - reported to the client, logged here
            self.log.error("jupyter-ptcuda: health check failed: %s", truncate(f"{type(exc).__name__}: {exc}"),
                           exc_info=not isinstance(exc, asyncio.TimeoutError))
            entry.update(state="error", error={"message": truncate(f"{type(exc).__name__}: {exc}"), "reason": "error"})
        entry["finished"] = time.time()

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(list(self.state.health.values()))


class HealthHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        entry = self.state.health.get(item_id)
        if entry is None:
            raise NotFound(f"no health check {item_id!r} (results are kept for the last 100 checks)")
        self.write_json(entry)


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


def _esc(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class NoticesHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """What happened to this server's kernels that the user should hear of (the Hub broker shutting an
        idle GPU kernel down, a kernel pod waiting for a node: :mod:`jupyter_ptcuda.notices`), newest last;
        ``?since=<epoch>``: only those posted or changed after it."""
        try:
            since = float(self.get_argument("since", "0") or 0)
        except ValueError:
            raise web.HTTPError(400, "since must be a number (epoch seconds)") from None
        root = os.path.realpath(self.serverapp.root_dir)  # type: ignore[union-attr]
        self.write_json({"notices": [_relative_notebook(n, root) for n in self.state.notices.since(since)]})


def _relative_notebook(notice: dict[str, Any], root: str) -> dict[str, Any]:
    """The notice with its ``notebook`` as JupyterLab opens it: relative to the server's root (kernels
    record an absolute path), or none when it lies outside the root."""
    path = notice.get("notebook")
    if not path or not os.path.isabs(path):
        return notice
    rel = os.path.relpath(path, root)
    return {**notice, "notebook": None if rel == ".." or rel.startswith("../") else rel}


class BuildsHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """This user's image builds (``jupyter ptcuda image build``) running now or finished in the last 10
        minutes, newest first: tag, state, step n of m and its name, the last line (:mod:`jupyter_ptcuda.builds`;
        a folder read, off the loop)."""
        from ..builds import read_builds

        builds = await asyncio.to_thread(read_builds)
        keep = ("id", "tag", "state", "step", "steps", "step_name", "last_line", "message", "started", "updated",
                "finished", "error")
        self.write_json({"builds": [{k: b.get(k) for k in keep} for b in builds]})


class QueueHandler(PtcudaHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The GPU queue, in order: each waiting request's place, what it is, why it waits, since when. Another
        user's request (under a shared ledger) is "another user", never its name."""
        queue = self.state.queue
        user = getattr(self.current_user, "username", "") or ""
        shared = await self.backend_queue()  # the JupyterHub broker's line, shared by every user
        if shared is not None:
            self.write_json({"enabled": True, "waiting": shared})
            return
        view = queue.view() if queue is not None else {}
        waiting = []
        for claim, w in sorted(view.items(), key=lambda kv: kv[1]["place"]):
            mine = queue is None or not queue.ledger.hide_others or w["owner"] in ("", user)
            waiting.append({"id": claim if mine else None, "what": w["what"] if mine else "another user",
                            "place": w["place"], "reason": w["reason"] if mine else None,
                            "waited_s": w["waited_s"], "gpus": w["gpus"]})
        self.write_json({"enabled": bool(queue is not None and queue.enabled), "waiting": waiting})


class MetricsHandler(PtcudaHandler):
    GAUGES = [("utilization_gpu", "gpu_utilization_percent", "GPU utilisation (%)"),
              ("utilization_memory", "gpu_memory_utilization_percent", "Memory controller utilisation (%)"),
              ("memory_used", "gpu_memory_used_bytes", "GPU memory used (bytes)"),
              ("memory_total", "gpu_memory_total_bytes", "GPU memory total (bytes)"),
              ("temperature_c", "gpu_temperature_celsius", "GPU temperature (C)"),
              ("power_w", "gpu_power_watts", "Power draw (W)"),
              ("power_limit_w", "gpu_power_limit_watts", "Enforced power limit (W)"),
              ("clock_sm_mhz", "gpu_sm_clock_mhz", "SM clock (MHz)"),
              ("ecc_volatile_uncorrected", "gpu_ecc_volatile_uncorrected_errors", "Volatile uncorrected ECC errors")]

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Prometheus text exposition format 0.0.4."""
        sampler = self.state.sampler
        sampler.ensure_started()
        snap = sampler.snapshot()
        lines = ["# HELP ptcuda_nvml_up 1 when NVML answers on this host.", "# TYPE ptcuda_nvml_up gauge",
                 f"ptcuda_nvml_up {1 if snap.get('state') == 'ok' else 0}"]
        holders = await holders_value(self.state).get()
        for key, name, help_text in self.GAUGES:
            lines += [f"# HELP ptcuda_{name} {help_text}", f"# TYPE ptcuda_{name} gauge"]
            for g in snap.get("gpus", []):
                if g.get(key) is not None:
                    lines.append(f'ptcuda_{name}{{gpu="{g["index"]}",uuid="{_esc(g.get("uuid"))}",'
                                 f'name="{_esc(g.get("name"))}"}} {g[key]}')
        lines += ["# HELP ptcuda_gpu_holders Kernels/jobs of jupyter-ptcuda holding each GPU.",
                  "# TYPE ptcuda_gpu_holders gauge"]
        for gpu, hs in sorted(holders.items()):
            lines.append(f'ptcuda_gpu_holders{{gpu="{_esc(gpu)}"}} {len(hs)}')
        kernels = self.serverapp.kernel_manager.list_kernel_ids()
        lines += ["# HELP ptcuda_kernels Kernels on this server.", "# TYPE ptcuda_kernels gauge",
                  f"ptcuda_kernels {len(kernels)}"]
        lines += ["# HELP ptcuda_jobs Batch jobs by state.", "# TYPE ptcuda_jobs gauge"]
        for st, n in sorted((await self.state.jobs.count_by_state()).items()):
            lines.append(f'ptcuda_jobs{{state="{_esc(st)}"}} {n}')
        queue = self.state.queue
        if queue is not None:
            lines += ["# HELP ptcuda_gpu_queue_length Requests (jobs, kernels) waiting in the GPU queue.",
                      "# TYPE ptcuda_gpu_queue_length gauge", f"ptcuda_gpu_queue_length {len(queue)}",
                      "# HELP ptcuda_gpu_queue_wait_seconds Seconds a GPU request waited before its GPUs were granted.",
                      "# TYPE ptcuda_gpu_queue_wait_seconds histogram"]
            hist = queue.waited
            for bound, count in zip(hist.buckets, hist.counts, strict=True):
                lines.append(f'ptcuda_gpu_queue_wait_seconds_bucket{{le="{bound:g}"}} {count}')
            lines += [f'ptcuda_gpu_queue_wait_seconds_bucket{{le="+Inf"}} {hist.count}',
                      f"ptcuda_gpu_queue_wait_seconds_sum {hist.sum:g}", f"ptcuda_gpu_queue_wait_seconds_count {hist.count}"]
        self.finish("\n".join(lines) + "\n", set_content_type="text/plain; version=0.0.4; charset=utf-8")


handlers = [
    (rf"/{NAMESPACE}/gpus", GpusHandler),
    (rf"/{NAMESPACE}/kernels", KernelsHandler),
    (rf"/{NAMESPACE}/health", HealthCollectionHandler),
    (rf"/{NAMESPACE}/health/{_ID}", HealthHandler),
    (rf"/{NAMESPACE}/metrics", MetricsHandler),
    (rf"/{NAMESPACE}/queue", QueueHandler),
    (rf"/{NAMESPACE}/notices", NoticesHandler),
    (rf"/{NAMESPACE}/builds", BuildsHandler),
]
