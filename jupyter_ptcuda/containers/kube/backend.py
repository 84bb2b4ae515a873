"""KubeContainerService: the container service's interface over the Kubernetes API (kubernetes_asyncio).

The only module that imports ``kubernetes_asyncio`` (an optional dependency, imported when a service
is made, so the package imports without it). Same method names and types as
:class:`~..service.ContainerService`: ``launch`` (a Pod, or a Job for a job: backoffLimit 0,
activeDeadlineSeconds for its timeout), ``inspect`` / ``list`` / ``find`` (from the pod and its
annotations, which :mod:`..labels` wrote), ``logs`` / ``follow`` (the pod's log), ``wait`` (exit code and
OOMKilled from the container status), ``signal`` (SIGTERM/SIGKILL = delete with/without grace),
``remove``, ``run_once``; :meth:`address` (a pod's IP: where a kernel listens); :meth:`reap` (orphaned
pods, by label); :meth:`pending` (why a job's pod waits, for the job lifecycle); :meth:`validate` (the pod
builder's refusals before a job is recorded). ``image`` knows only the name (the nodes pull images:
``ImageInfo.inspected`` False); ``exec`` is refused (no ``pods/exec`` in the Role), and so is ``open_tty`` (a
shell with a terminal); ``close`` closes the API client. A spec with files (a kernel) gets a Secret owned by
its pod, created just after the pod (which waits for it); if that fails the pod is deleted: nothing is left
behind.

A pod that stays Pending is reported with the scheduler's reason (its events) and deleted after
``c.KubeBackend.launch_timeout``. Every API answer other than 2xx becomes one of our errors, saying what
to do; a 403 names the Role in ``examples/k8s/role.yaml``.

Callers: :func:`..service.get_service` when ``c.ContainerBackend.backend = "kubernetes"`` (the provisioner,
jobs, health checks, the reaper all go through it); tests make their own.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, Conflict, EngineError, EngineUnavailable, Forbidden, LaunchError, NotFound
from .. import labels as L
from ..base import ContainerService
from ..identity import Identity, this_server
from ..spec import ContainerSpec
from ..types import DEADLINE_STATUS, ContainerState, ImageInfo, Launched
from . import pods as P
from .options import KubeBackend, KubeOptions

if TYPE_CHECKING:
    from ..tty import ExecTarget, TtySession

log = logging.getLogger("jupyter_ptcuda")

#: Exit code a Job killed at its activeDeadlineSeconds reads as (as coreutils ``timeout``).
DEADLINE_EXIT = 124
#: Seconds a pod may wait with only Normal events (Scheduled, Pulling) before ``launch(on_pending=)`` says so.
SAY_PENDING_AFTER = 10.0
NO_CREDENTIALS = ("the Kubernetes backend found no credentials for the Kubernetes API: run the server in a pod whose "
                  "service account has the Role in examples/k8s/role.yaml (z2jh: singleuser.serviceAccountName), or "
                  "give a kubeconfig ($KUBECONFIG or ~/.kube/config); or use the Docker backend "
                  "(unset $JUPYTER_PTCUDA_BACKEND / c.ContainerBackend.backend)")
ROLE_HINT = ("the server's service account needs the Role in examples/k8s/role.yaml (pods, pods/log, jobs, events, secrets "
             "in its namespace)")


def _time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def api_error(status: int, body: bytes | str, what: str) -> Exception:
    """Our error for a non-2xx answer; ``body`` is the API's ``Status`` object (or whatever came)."""
    try:
        st = json.loads(body or b"{}")
        message = str(st.get("message") or "") if isinstance(st, dict) else ""
    except ValueError:
        message = (body.decode(errors="replace") if isinstance(body, bytes) else body)[:300]
    message = message or f"HTTP {status}"
    if status == 403:
        return Forbidden(f"{what}: the Kubernetes API refused: {message}. {ROLE_HINT}.")
    if status == 401:
        return Forbidden(f"{what}: the Kubernetes API did not accept the server's credentials: {message}.")
    if status == 404:
        return NotFound(f"{what}: {message}.")
    if status == 409:
        return Conflict(f"{what}: {message}.")
    if status in (400, 422):
        return ConfigError(f"{what}: the Kubernetes API rejected it: {message}.")
    return EngineError(f"{what}: the Kubernetes API answered {status}: {message}.")


def state_from_pod(pod: Mapping[str, Any]) -> ContainerState:
    """A pod (a Job's pod reads as its Job: id = the Job's name) as the service's ContainerState."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(L.PREFIX)}
    job = (meta.get("labels") or {}).get(P.JOB_NAME)
    cstatus: dict[str, Any] = next((c for c in status.get("containerStatuses") or [] if c.get("name") == P.CONTAINER), {})
    cstate = cstatus.get("state") or {}
    term = cstate.get("terminated") or {}
    phase = status.get("phase") or "Pending"
    running = phase == "Running" and not meta.get("deletionTimestamp")
    word = ("removing" if meta.get("deletionTimestamp") else
            {"Pending": "created", "Running": "running", "Succeeded": "exited", "Failed": "exited"}.get(phase, "dead"))
    code = term.get("exitCode")
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return ContainerState(
        id=job or meta.get("name", ""), name=job or meta.get("name", ""), image=containers[0].get("image") or "",
        image_id=cstatus.get("imageID") or "", running=running, status=word, tag=L.Tag.read(labels), labels=labels,
        exit_code=None if running or code is None else int(code), oom_killed=term.get("reason") == "OOMKilled",
        created=_time(meta.get("creationTimestamp")) or 0.0,
        started_at=_time(((cstate.get("running") or {}).get("startedAt")) or term.get("startedAt")),
        finished_at=_time(term.get("finishedAt")))


def digest_of(image_id: str) -> str:
    """The image a container status's ``imageID`` names, without the runtime's scheme
    (``docker-pullable://img@sha256:..`` and containerd's ``docker.io/library/img@sha256:..`` alike)."""
    return image_id.split("://", 1)[-1]


def state_from_job(job: Mapping[str, Any]) -> ContainerState:
    """A Job whose pod is gone (killed at its deadline, or removed by the TTL controller)."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    labels = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(L.PREFIX)}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conds.get("Failed") or conds.get("FailureTarget")  # FailureTarget: failed, its pods still ending
    done = failed is not None or "Complete" in conds
    deadline = failed is not None and failed.get("reason") == "DeadlineExceeded"
    code = None if not done else (0 if failed is None else DEADLINE_EXIT if deadline else 1)
    image = ((((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
    word = DEADLINE_STATUS if deadline else "exited" if done else "created"
    return ContainerState(id=meta.get("name", ""), name=meta.get("name", ""), image=image.get("image") or "",
                          image_id="", running=False, status=word, tag=L.Tag.read(labels),
                          labels=labels, exit_code=code, created=_time(meta.get("creationTimestamp")) or 0.0,
                          finished_at=_time(status.get("completionTime")))


class KubeContainerService(ContainerService):
    """Containers as pods in one namespace. ``configuration``: a kubernetes_asyncio ``Configuration``
    (tests give one for their API server); None: in-cluster config, else ``~/.kube/config``."""

    #: A job's timeout is its Job's activeDeadlineSeconds: the job lifecycle's own timer is only a backstop.
    enforces_deadlines = True
    #: A pod (a Job's pod) waits Pending for the scheduler: :meth:`pending` says why.
    waits_for_scheduler = True
    #: Why no command or shell runs in a pod here (``jupyter ptcuda shell``/``exec``, the terminal button).
    no_exec = ("a shell or command inside a pod needs pods/exec, which the Kubernetes backend's Role "
               "(examples/k8s/role.yaml) deliberately does not grant; someone whose account may can use `kubectl "
               "exec -it POD -- bash` (find the pod with `kubectl get pods -l io.jupyter-ptcuda.kind`).")
    #: Nodes pull images: an image is allowed by name only; its labels and env are not known here.
    inspects_images = False
    #: The scheduler places GPUs (nvidia.com/gpu, or a MIG resource): no local ledger around this backend.
    allocates_gpus = True
    gpu_resources = True
    #: A kernel pod listens on its own IP (CurveZMQ), reached by :meth:`address`.
    kernel_placement = "pod"

    def __init__(self, options: KubeOptions | None = None, *, configuration: Any = None,
                 identity: Identity | None = None, poll: float = 2.0) -> None:
        self.options = options or KubeOptions()
        self.identity = identity or this_server()
        self._configuration = configuration
        self._client: Any = None
        self._poll = poll  # seconds between looks at a Pending pod's events
        self._secrets: set[str] = set()  # Secrets this process made (also deleted with their pod by the GC)

    @property
    def namespace(self) -> str:
        return self.options.namespace

    # -- the API -----------------------------------------------------------------------------------
    async def _api(self) -> Any:
        if self._client is None:
            try:
                from kubernetes_asyncio import client, config
            except ImportError:
                raise ConfigError('the Kubernetes backend needs kubernetes_asyncio: pip install '
                                  '"jupyter-ptcuda[kubernetes]".') from None
            configuration = self._configuration
            if configuration is None:
                configuration = client.Configuration()
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    try:
                        # $KUBECONFIG as it is now (kubernetes_asyncio reads it once, at its import)
                        await config.load_kube_config(client_configuration=configuration, config_file=os.environ.get(
                            "KUBECONFIG") or os.path.expanduser("~/.kube/config"))
                    except (config.ConfigException, OSError) as exc:
                        raise ConfigError(f"{NO_CREDENTIALS} ({exc})") from None
            self._client = client.ApiClient(configuration)
        return self._client

    async def close(self) -> None:
        """Close the API client (its HTTP session belongs to the event loop it was made on). Called when a
        command's event loop ends (:func:`jupyter_ptcuda.jobs.cli.in_one_loop`) and by tests."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _core(self) -> Any:
        api = await self._api()  # first: says how to install kubernetes_asyncio when it is missing
        from kubernetes_asyncio import client

        return client.CoreV1Api(api)

    async def _batch(self) -> Any:
        api = await self._api()  # first: says how to install kubernetes_asyncio when it is missing
        from kubernetes_asyncio import client

        return client.BatchV1Api(api)

    async def _raw(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        """The answer (a live aiohttp response) of one API call, or our error for a non-2xx one."""
        import aiohttp

        try:
            resp = await fn(*args, _preload_content=False, **kwargs)
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineUnavailable(f"{what}: the Kubernetes API does not answer ({exc}): check the server's "
                                    "kubeconfig or in-cluster service account.") from exc
        if not 200 <= resp.status <= 299:
            body = await resp.read()
            resp.release()
            raise api_error(resp.status, body, what)
        return resp

    async def _call(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
        resp = await self._raw(fn, *args, what=what, **kwargs)
        try:
            return json.loads(await resp.read())
        finally:
            resp.release()

    async def ping(self) -> dict[str, str]:
        api = await self._api()
        from kubernetes_asyncio import client

        v = await self._call(client.VersionApi(api).get_code, what="Kubernetes version")
        return {"version": str(v.get("gitVersion") or ""), "api_version": "v1"}

    async def _pod(self, name: str) -> dict[str, Any] | None:
        core = await self._core()
        try:
            return await self._call(core.read_namespaced_pod, name, self.namespace, what=f"pod {name}")
        except NotFound:
            return None

    async def _job(self, name: str) -> dict[str, Any] | None:
        batch = await self._batch()
        try:
            return await self._call(batch.read_namespaced_job, name, self.namespace, what=f"job {name}")
        except NotFound:
            return None

    async def _pods(self, selector: str, *, field: str | None = None) -> list[dict[str, Any]]:
        core = await self._core()
        kw = {"field_selector": field} if field else {}
        got = await self._call(core.list_namespaced_pod, self.namespace, label_selector=selector,
                               what="listing pods", **kw)
        return list(got.get("items") or [])

    async def _job_pod(self, job: str) -> dict[str, Any] | None:
        found = await self._pods(f"{P.JOB_NAME}={job}")
        return max(found, key=lambda p: p["metadata"].get("creationTimestamp") or "") if found else None

    async def _resolve(self, cid: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """``(pod, job)`` of an id: a pod's name, or a Job's (then its newest pod, if any)."""
        pod = await self._pod(cid)
        if pod is not None:
            return pod, None
        job = await self._job(cid)
        if job is None:
            return None, None
        return await self._job_pod(cid), job

    async def _watch(self, selector: str, until: Callable[[dict[str, Any]], bool], timeout: float,
                     field: str | None = None) -> dict[str, Any] | None:
        """The first pod (of the selector) for which ``until`` holds, waiting up to ``timeout`` s for it
        through a watch from the listing's resourceVersion (re-listed on a 410); None on time out, or when
        the one pod named by ``field`` is deleted."""
        core = await self._core()
        deadline = time.monotonic() + timeout
        while True:
            kw = {"field_selector": field} if field else {}
            got = await self._call(core.list_namespaced_pod, self.namespace, label_selector=selector,
                                   what="listing pods", **kw)
            for pod in got.get("items") or []:
                if until(pod):
                    return pod
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            rv = (got.get("metadata") or {}).get("resourceVersion") or ""
            resp = await self._raw(core.list_namespaced_pod, self.namespace, label_selector=selector, watch=True,
                                   resource_version=rv, timeout_seconds=max(1, int(left) + 1), what="watching pods",
                                   allow_watch_bookmarks=False, **kw)
            expired = False
            try:
                async with asyncio.timeout(left):
                    async for line in resp.content:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            if (event.get("object") or {}).get("code") == 410:
                                expired = True  # too old: list again
                                break
                            raise api_error(int(event["object"].get("code") or 500), json.dumps(event["object"]),
                                            "watching pods")
                        if event.get("type") in ("ADDED", "MODIFIED") and until(event["object"]):
                            return dict(event["object"])
                        if event.get("type") == "DELETED" and field and field.startswith("metadata.name="):
                            return None  # the one pod watched is gone
            except TimeoutError:
                return None
            finally:
                resp.release()
            if not expired and time.monotonic() >= deadline:
                return None

    async def _pending_reason(self, pod: str, kind: str = "Pod") -> str:
        """What the scheduler (or kubelet) last said about a pod that does not run yet (``kind`` "Job": what
        the Job controller said of a Job that has no pod, e.g. FailedCreate when a quota is exceeded)."""
        return (await self._pending_said(pod, kind))[0]

    async def _pending_said(self, pod: str, kind: str = "Pod") -> tuple[str, bool]:
        """:meth:`_pending_reason` and whether it is a Warning (FailedScheduling, FailedMount, a failed pull:
        what the user must hear of) rather than a Normal step of a start (Scheduled, Pulling)."""
        core = await self._core()
        got = await self._call(core.list_namespaced_event, self.namespace, what=f"events of {kind.lower()} {pod}",
                               field_selector=f"involvedObject.kind={kind},involvedObject.name={pod}")
        events = sorted(got.get("items") or [],
                        key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or
                        (e.get("metadata") or {}).get("creationTimestamp") or "")
        warnings = [e for e in events if e.get("type") == "Warning"]
        said = (warnings or events)[-1:]
        return (f"{said[0].get('reason')}: {said[0].get('message')}" if said else "", bool(warnings))

    # -- launching ---------------------------------------------------------------------------------
    def validate(self, spec: ContainerSpec, *, timeout: float | None = None, gpu_resource: str | None = None) -> None:
        """ConfigError when ``spec`` cannot become a pod here (gpus 'all' or device ids, a GPU resource the
        operator does not allow, a mount no volume holds): the pure builder's refusals, without an API
        call. ``JobManager.submit`` calls it before a job is recorded."""
        P.manifest(spec, self.options, self.identity, name="ptcuda-check", timeout=timeout, gpu_resource=gpu_resource)

    async def launch(self, spec: ContainerSpec, *, claim: str | None = None, gpu_fallback: str = "error",
                     assign_gpus: bool = True, timeout: float | None = None,
                     gpu_resource: str | None = None, wait: bool = True,
                     on_pending: Callable[[str], None] | None = None) -> Launched:
        """Create the pod (a Job for a job) and wait until it leaves Pending; a pod still Pending after
        ``launch_timeout`` is deleted and the launch fails with the scheduler's reason. The scheduler
        assigns GPUs (``claim``/``assign_gpus``: no ledger here); ``gpu_fallback`` has nothing to fall back
        from. ``timeout``: a job's activeDeadlineSeconds. ``gpu_resource``: an allowed MIG profile.
        ``wait=False`` (the job manager): return once it is created; :meth:`pending` says why it waits.
        ``on_pending(reason)``: called while it waits, each time the reason changes, once a Warning was said
        (FailedScheduling, FailedMount, a failed pull) or it has waited :data:`SAY_PENDING_AFTER` seconds:
        the provisioner tells the user in JupyterLab (a quick start's Normal events are not news)."""
        name = P.object_name(spec, secrets.token_hex(3))
        body = P.manifest(spec, self.options, self.identity, name=name, timeout=timeout, gpu_resource=gpu_resource)
        is_job = body["kind"] == "Job"
        if is_job:
            batch = await self._batch()
            made = await self._call(batch.create_namespaced_job, self.namespace, body, what=f"creating job {name}")
            selector = f"{P.JOB_NAME}={name}"
        else:
            core = await self._core()
            made = await self._call(core.create_namespaced_pod, self.namespace, body, what=f"creating pod {name}")
            selector = f"{P.MANAGED_BY}={P.MANAGED_BY_VALUE}"
        if spec.files:  # the pod waits (ContainerCreating) until its Secret is there; never left without it
            try:
                await self._call((await self._core()).create_namespaced_secret, self.namespace,
                                 P.secret_manifest(spec, self.options, name=name, owner=made),
                                 what=f"creating secret {name}")
            except BaseException:
                await asyncio.shield(self.remove(name))
                raise
            self._secrets.add(name)
        if not wait:
            return Launched(name, spec)
        field = None if is_job else f"metadata.name={name}"
        started = time.monotonic()
        limit = self.options.launch_timeout
        reason = told = ""
        pod_name = name
        while True:
            look = min(0.5, self._poll) if time.monotonic() - started < 0.5 else self._poll  # the first look: soon
            pod = await self._watch(selector, lambda p: (p.get("status") or {}).get("phase") not in (None, "Pending"),
                                    min(look, max(0.0, limit - (time.monotonic() - started))), field=field)
            if pod is not None:
                return Launched(name, spec)
            if is_job:
                job_pod = await self._job_pod(name)
                pod_name = job_pod["metadata"]["name"] if job_pod else ""
                if job_pod is None and await self._job_done(name):
                    return Launched(name, spec)  # over before we saw its pod (deadline, or gone already)
            said, warning = await self._pending_said(pod_name) if pod_name else ("", False)
            said = said or reason
            if said != reason:
                log.info("jupyter-ptcuda: %s %s is Pending: %s", spec.labels.get(L.KIND, "pod"), name, said)
            reason = said
            if on_pending is not None and reason and reason != told and (
                    warning or time.monotonic() - started >= SAY_PENDING_AFTER):
                told = reason
                on_pending(reason)
            if time.monotonic() - started >= limit:
                await self.remove(name)
                raise LaunchError(f"{spec.labels.get(L.KIND, 'pod')} {name} stayed Pending for {limit:.0f} s"
                                  + (f" ({reason})" if reason else " (no event from the scheduler)")
                                  + "; it was deleted. Ask for fewer GPUs or less memory, wait for a free node, or "
                                  "raise c.KubeBackend.launch_timeout.", reason=reason)

    async def _job_done(self, name: str) -> bool:
        job = await self._job(name)
        return job is None or state_from_job(job).exit_code is not None

    async def pending(self, cid: str) -> str | None:
        """Why the pod (or the Job's pod) ``cid`` does not run yet: the scheduler's or kubelet's last word
        (``"FailedScheduling: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."``), "" when none
        was said; None when it is not pending (running, ended, gone). Pending for longer than
        ``launch_timeout`` since it was created: it is deleted and LaunchError says why. Called by the job
        lifecycle while a job is queued (its reason reads ``pending: ...`` in the Jobs API)."""
        pod, job = await self._resolve(cid)
        if pod is None and job is None:
            return None
        state = state_from_pod(pod) if pod is not None else state_from_job(job or {})
        if state.running or state.exit_code is not None or state.status != "created":
            return None
        reason = await self._pending_reason(pod["metadata"]["name"]) if pod is not None else ""
        if not reason and job is not None:  # no pod yet, or nothing said of it: the Job controller's word
            reason = await self._pending_reason(job["metadata"]["name"], kind="Job")
        if job is not None and (job.get("spec") or {}).get("suspend"):  # waiting for Kueue's admission: its queue
            return reason or f"waiting for admission by Kueue (queue {self.options.queue_name or '?'})"
        created = state_from_job(job).created if job is not None else state.created
        limit = self.options.launch_timeout
        if created and time.time() - created >= limit:
            await self.remove(cid)
            what = state.tag.kind or "pod"
            raise LaunchError(f"{what} {cid} stayed Pending for {limit:.0f} s"
                              + (f" ({reason})" if reason else " (no event from the scheduler)")
                              + "; it was deleted. Ask for fewer GPUs or less memory, wait for a free node, or "
                              "raise c.KubeBackend.launch_timeout.", reason=reason)
        return reason

    def release(self, claim: str) -> None:
        """No ledger on Kubernetes: the scheduler holds the GPU assignments."""

    async def run_once(self, spec: ContainerSpec, *, timeout: float = 300, claim: str | None = None,
                       gpu_fallback: str = "error") -> tuple[int, str, Launched]:
        """Run a one-off pod to completion: ``(exit code, output, what was launched)``; always deleted."""
        launched = await self.launch(spec, claim=claim, gpu_fallback=gpu_fallback)
        try:
            try:
                code = await asyncio.wait_for(self.wait(launched.id), timeout)
            except TimeoutError:
                raise LaunchError(f"{spec.image}: {' '.join(spec.command)[:80]} did not finish in {timeout:.0f} s; "
                                  "its pod was deleted.") from None
            return code, await self.logs(launched.id), launched
        finally:
            await self.remove(launched.id)

    # -- watching ----------------------------------------------------------------------------------
    async def inspect(self, cid: str, *, signals: bool = False) -> ContainerState | None:
        """The pod's (or Job's) state, or None when it is gone. ``signals`` changes nothing here."""
        pod, job = await self._resolve(cid)
        if pod is not None:
            state = state_from_pod(pod)
            if job is not None:  # its Job's end wins: at its deadline the pod may still be terminating
                ended = state_from_job(job)
                if ended.status == DEADLINE_STATUS:
                    return dataclasses.replace(state, running=False, status=DEADLINE_STATUS, exit_code=DEADLINE_EXIT,
                                               finished_at=state.finished_at or ended.finished_at or time.time())
            return state
        return state_from_job(job) if job is not None else None

    async def list(self, kind: str | None = None, *, id: str | None = None, owner_uid: int | None = None,
                   server_id: str | None = None, running: bool = False) -> list[ContainerState]:
        """Pods of ours (of ``kind``, with that id/owner/server), newest first; ``running`` only."""
        selector, after = P.label_selector(L.selector(kind, id=id, owner_uid=owner_uid, server_id=server_id))
        out: dict[str, ContainerState] = {}
        for pod in await self._pods(selector, field="status.phase=Running" if running else None):
            state = state_from_pod(pod)
            if all(state.labels.get(k) == v for k, v in after.items()) and not (running and not state.running):
                if state.id not in out or state.created > out[state.id].created:
                    out[state.id] = state
        return sorted(out.values(), key=lambda s: -s.created)

    def list_hint(self, kind: str) -> str:
        return f"`kubectl get pods -n {self.namespace} -l {L.KIND}={kind}`"

    async def address(self, cid: str) -> str:
        """The pod's IP (where a kernel listens); LaunchError when it has none (not running)."""
        pod, _ = await self._resolve(cid)
        ip = str(((pod or {}).get("status") or {}).get("podIP") or "")
        if not ip:
            raise LaunchError(f"pod {cid} has no IP address (phase {((pod or {}).get('status') or {}).get('phase')}).")
        return ip

    async def _pod_name(self, cid: str) -> str:
        pod, job = await self._resolve(cid)
        if pod is None:
            raise NotFound(f"pod {cid} is gone" + (" (its Job has no pod left)." if job else "."))
        return str(pod["metadata"]["name"])

    async def log_bytes(self, cid: str) -> bytes:
        name = await self._pod_name(cid)
        core = await self._core()
        resp = await self._raw(core.read_namespaced_pod_log, name, self.namespace, container=P.CONTAINER,
                               what=f"logs of pod {name}")
        try:
            return bytes(await resp.read())
        finally:
            resp.release()

    async def logs(self, cid: str, tail: int | str = "all") -> str:
        name = await self._pod_name(cid)
        core = await self._core()
        kw = {} if tail == "all" else {"tail_lines": int(tail)}
        resp = await self._raw(core.read_namespaced_pod_log, name, self.namespace, container=P.CONTAINER,
                               what=f"logs of pod {name}", **kw)
        try:
            return (await resp.read()).decode(errors="replace")
        finally:
            resp.release()

    async def follow(self, cid: str, sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        """The pod's output as it comes (``follow=true``), until its container ends."""
        name = await self._pod_name(cid)
        pod = await self._watch(f"{P.MANAGED_BY}={P.MANAGED_BY_VALUE}",
                                lambda p: (p.get("status") or {}).get("phase") != "Pending", self.options.launch_timeout,
                                field=f"metadata.name={name}")
        if pod is None:
            raise LaunchError(f"pod {name} did not start in {self.options.launch_timeout:.0f} s: no log to follow.")
        core = await self._core()
        resp = await self._raw(core.read_namespaced_pod_log, name, self.namespace, container=P.CONTAINER,
                               follow=True, what=f"logs of pod {name}")
        try:
            async for chunk in resp.content.iter_any():
                if sink is not None:
                    sink(chunk)
                yield chunk
        finally:
            resp.release()

    async def wait(self, cid: str) -> int:
        """Its exit code once it ended (a Job at its deadline: :data:`DEADLINE_EXIT`)."""
        while True:
            pod, job = await self._resolve(cid)
            if pod is None and job is None:
                raise NotFound(f"pod {cid} is gone.")
            if pod is None:
                state = state_from_job(job or {})
                if state.exit_code is not None:
                    return state.exit_code
                await asyncio.sleep(self._poll)
                continue
            name = pod["metadata"]["name"]
            done = await self._watch(f"{P.MANAGED_BY}={P.MANAGED_BY_VALUE}",
                                     lambda p: (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                                     max(self._poll, 30.0), field=f"metadata.name={name}")
            if done is not None:
                state = state_from_pod(done)
                if state.exit_code is not None:
                    if job is not None:  # at its deadline the Job controller ended the pod (SIGTERM): the Job says
                        latest = await self._job(job["metadata"]["name"])
                        if latest is not None and state_from_job(latest).status == DEADLINE_STATUS:
                            return DEADLINE_EXIT
                    return state.exit_code
                if job is not None:
                    continue  # killed at the deadline without a status: the Job says
                return -1

    async def exec(self, cid: str, cmd: Any, **kwargs: Any) -> tuple[int, bytes]:
        """Not here: running a command in a pod needs ``pods/exec``, which the Role does not grant."""
        raise ConfigError(f"pod {cid}: running a command inside a pod needs pods/exec, which the Kubernetes "
                          "backend's Role (examples/k8s/role.yaml) does not grant. Check an image instead "
                          "(`jupyter ptcuda health --image IMAGE`, or POST health with an image).")

    def open_tty(self, target: ExecTarget, *, term: str, size: tuple[int, int] | None = None) -> TtySession:
        """Not here: this backend has no shell with a terminal (no Docker engine, no broker): ConfigError saying
        what to use instead."""
        raise ConfigError(self.no_exec or "")

    # -- acting ------------------------------------------------------------------------------------
    async def signal(self, cid: str, signal: str | int = "SIGTERM") -> None:
        """SIGTERM: delete with the pod's grace period; SIGKILL: at once. Anything else would need
        ``pods/exec``, which the Role does not grant: ConfigError saying so."""
        if signal in ("SIGTERM", 15):
            await self._delete(cid, grace=None)
        elif signal in ("SIGKILL", 9):
            await self._delete(cid, grace=0)
        else:
            raise ConfigError(f"signal {signal} cannot reach a pod without pods/exec (not in the Role): interrupt a "
                              "kernel through its control channel (interrupt_mode 'message').")

    async def remove(self, cid: str) -> None:
        """Delete the pod (or the Job and its pods) at once, and its Secret; one already gone is fine."""
        await self._delete(cid, grace=0)
        if cid in self._secrets:  # the garbage collector would too (ownerReferences): at once, here
            core = await self._core()
            try:
                await self._call(core.delete_namespaced_secret, cid, self.namespace, what=f"deleting secret {cid}")
            except NotFound:
                pass
            self._secrets.discard(cid)

    async def _delete(self, cid: str, grace: int | None) -> None:
        from kubernetes_asyncio import client

        kw: dict[str, Any] = {} if grace is None else {"grace_period_seconds": grace}
        core = await self._core()
        try:
            await self._call(core.delete_namespaced_pod, cid, self.namespace, what=f"deleting pod {cid}", **kw)
            return
        except NotFound:
            pass
        batch = await self._batch()
        body = client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=grace)
        try:
            await self._call(batch.delete_namespaced_job, cid, self.namespace, body=body, what=f"deleting job {cid}")
        except NotFound:
            return

    async def reap(self, *, own_server_id: str | None = None, dry_run: bool = False
                   ) -> builtins.list[dict[str, Any]]:
        """Delete the pods whose server is gone (jobs outlive their server on purpose): a pod labelled
        with a server whose pod no longer exists in the namespace; and, asked by the server itself
        (``own_server_id``: its id), one of an earlier server process of this very pod (same host, another
        id: a restarted container keeps its pid, so the pid check of :mod:`..reaper` cannot tell). What was
        (``dry_run``: would be) removed, as :func:`..reaper.reap_orphans` reports it. Called by
        :func:`..reaper.reap_orphans` (the server at start and every ``reap_interval``; ``jupyter ptcuda reap``)."""
        own_host = own_server_id.split(":", 1)[0] if own_server_id else None
        removed: builtins.list[dict[str, Any]] = []
        alive: dict[str, bool] = {}
        for state in await self.list():
            tag = state.tag
            if tag.kind == L.JOB or not tag.server_id:
                continue
            if tag.host == own_host:
                why = "an earlier server process of this pod started it" if tag.server_id != own_server_id else ""
            else:
                if tag.host not in alive:
                    alive[tag.host] = await self._pod(tag.host) is not None
                why = "" if alive[tag.host] else f"its server's pod {tag.host} is gone"
            if why:
                log.info("jupyter-ptcuda: deleting orphaned %s pod %s: %s", tag.kind, state.id, why)
                if not dry_run:
                    await self.remove(state.id)
                removed.append({"id": state.id, "kind": tag.kind, "kernel_id": tag.id if tag.kind == L.KERNEL else None,
                                "server_id": tag.server_id, "why": why})
        return removed

    async def image(self, ref: str) -> ImageInfo:
        """What is known of an image here: nothing but its name. The nodes pull images; this server cannot
        read their labels or env (``inspected`` False, ``digest`` = ``ref``). Callers degrade: the image
        policy allows it only by name (:mod:`..policy`), the import check is skipped
        (:mod:`jupyter_ptcuda.jobs.imports`), a job records the digest its pod runs (the container status's
        imageID, :func:`digest_of`) once it runs."""
        return ImageInfo(id="", digest=ref, labels={}, env={}, inspected=False)

    async def kernel_record(self, cid: str) -> tuple[ContainerSpec, str]:
        """``(spec, gpu_resource)`` a kernel pod was made from, read from the pod (annotation
        :data:`.pods.SPEC`): what ``run --from-kernel`` copies when this process did not start the kernel
        (the CLI beside the server). NotFound if the pod is gone; ConfigError if it has no record."""
        pod = await self._pod(cid)
        if pod is None:
            raise NotFound(f"pod {cid} is gone.")
        got = P.spec_from_record((pod.get("metadata") or {}).get("annotations") or {})
        if got is None:
            raise ConfigError(f"pod {cid} has no {P.SPEC} annotation (it was started by an older jupyter-ptcuda): "
                              "restart the kernel, or give the job --image and --gpus.")
        return got

    async def spec_of(self, cid: str) -> tuple[ContainerSpec, ImageInfo]:
        """The spec a kernel pod was made from (:meth:`kernel_record`) and what is known of its image."""
        spec, _ = await self.kernel_record(cid)
        return spec, await self.image(spec.image)

    def image_digest(self, state: ContainerState) -> str:
        """The image a pod runs (its container status's imageID, :func:`digest_of`): what a job records once
        its pod runs."""
        return digest_of(state.image_id)


def check_available(configuration: Any = None) -> None:
    """ConfigError saying what to do when this backend cannot work here: kubernetes_asyncio missing, or
    neither in-cluster credentials (a pod's service account) nor a kubeconfig file."""
    try:
        import kubernetes_asyncio  # noqa: F401
    except ImportError:
        raise ConfigError('the Kubernetes backend (c.ContainerBackend.backend = "kubernetes") needs kubernetes_asyncio: '
                          'pip install "jupyter-ptcuda[kubernetes]".') from None
    if configuration is not None:
        return
    token = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
    if token and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return
    files = [f for f in os.environ.get("KUBECONFIG", "").split(os.pathsep) if f] or [os.path.expanduser("~/.kube/config")]
    if not any(os.path.isfile(f) for f in files):
        raise ConfigError(f"{NO_CREDENTIALS} (no service account token, no {', '.join(files)})")


def get_kube_service(config: Any = None, *, configuration: Any = None,
                     identity: Identity | None = None) -> KubeContainerService:
    """The Kubernetes backend, configured by ``config`` (a traitlets Config with ``KubeBackend``);
    ConfigError saying what to do when it cannot work here (:func:`check_available`)."""
    check_available(configuration)
    return KubeContainerService(KubeBackend(config=config).options(), configuration=configuration, identity=identity)
