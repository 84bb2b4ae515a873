"""A small in-memory Kubernetes API server (aiohttp) that answers as a real one does, for what the
Kubernetes backend uses: pods, pods/log, events (core/v1), jobs (batch/v1), /version.

Also secrets (a kernel's connection file), deleted with their owner by the garbage collector.
Faithful where the backend depends on it: label selectors (=, !=, exists), field selectors
(metadata.name, status.phase, involvedObject.*), resourceVersion + watch streams (410 Expired for a too
old version), ``Status`` objects with the real reasons and codes (404 NotFound, 409 AlreadyExists,
422 Invalid: bad names, label values, and any manifest the v1.37 OpenAPI schema rejects, 403 Forbidden
with RBAC's message), a Job controller (one pod per Job with ``batch.kubernetes.io/job-name``, status
conditions Complete/Failed, DeadlineExceeded at activeDeadlineSeconds: its pods deleted gracefully).

Deletion as a real API server does it (:meth:`FakeKube.delete_pod`): a pod on a node gets
``deletionTimestamp`` + ``deletionGracePeriodSeconds`` (the request's ``gracePeriodSeconds``, else the pod's
``terminationGracePeriodSeconds``, else 30) and stays, "removing", until its node has ended its container
(SIGTERM, then SIGKILL at the grace) and deleted it for good; grace 0, a pod on no node or one that has ended
goes at once. Deleting a Job with ``propagationPolicy`` Background (or Foreground) removes the Job, then the
garbage collector deletes its pods, gracefully, after it; Orphan (a Job's default) leaves them. A pod's
Secret goes with it.

The kubelet and scheduler are the test's: :meth:`FakeKube.run`, :meth:`exit`, :meth:`event`, :meth:`log`, and
for a pod being deleted the fake ends its process itself (at once, or at the grace for a pod in
:attr:`FakeKube.ignores_term`) -- unless a node (tests/kube/kubelet.py) is attached, which does it for real.
Why not kmock 0.8: its emulator has no label/field selectors, no resourceVersion, no subresources and
no 403/422 (read in its k8s.py).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import secrets
import time
from typing import Any

import kubernetes_validate
from aiohttp import web

SCHEMA = "1.37.0"
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def now(after: float = 0) -> str:
    """The time (``after`` seconds from now) as the API writes it."""
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=after)).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "details": details, "code": code}, status=code)


def truthy(value: str | None) -> bool:
    """A query bool as the API server parses it (Go's strconv.ParseBool)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _get(obj: dict, path: str) -> Any:
    for part in path.split("."):
        obj = (obj or {}).get(part) if isinstance(obj, dict) else None
    return obj


def matches(obj: dict, labels: str | None, fields: str | None) -> bool:
    have = _get(obj, "metadata.labels") or {}
    for term in filter(None, (labels or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if have.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if have.get(k.rstrip("=")) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif term not in have:
            return False
    for term in filter(None, (fields or "").split(",")):
        k, v = term.split("=", 1)
        if str(_get(obj, k.rstrip("=")) or "") != v:
            return False
    return True


class FakeKube:
    def __init__(self, namespace: str = "hub") -> None:
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict] = {}  # (plural, name) -> object
        self.history: list[tuple[int, str, str, dict]] = []  # (rv, plural, type, object)
        self.rv = 100
        self.compacted = 0  # watches from a version below this get 410 Gone
        self.logs: dict[str, bytes] = {}
        self.deny: set[tuple[str, str]] = set()  # (verb, resource) RBAC refuses
        self.allow: set[tuple[str, str]] | None = None  # a Role's (verb, resource): anything else is 403
        self.changed = asyncio.Condition()
        self.requests: list[tuple[str, str]] = []  # (verb, resource) as RBAC sees them
        self.url = ""
        self._deadlines: list[asyncio.Task] = []  # also the graceful deletions and the garbage collector's work
        self.nodes: list[Any] = []  # attached kubelets (kubelet.Node): they end a deleted pod's container
        self.ignores_term: set[str] = set()  # pods (no node attached) whose process ignores SIGTERM

    # -- storage ------------------------------------------------------------------------------------
    async def _emit(self, plural: str, kind: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, plural, kind, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()

    async def put(self, plural: str, obj: dict) -> dict:
        meta = obj.setdefault("metadata", {})
        meta.update(namespace=self.namespace, uid=secrets.token_hex(16), creationTimestamp=now())
        self.objects[(plural, meta["name"])] = obj
        await self._emit(plural, "ADDED", obj)
        return obj

    async def modify(self, plural: str, name: str, change) -> dict:
        obj = self.objects[(plural, name)]
        change(obj)
        await self._emit(plural, "MODIFIED", obj)
        return obj

    async def drop(self, plural: str, name: str, propagation: str = "Background") -> dict | None:
        """Remove an object for good; the garbage collector then deletes what it owns (``propagation``
        Background/Foreground; Orphan: they lose the reference): a pod's Secret at once, a Job's pods
        gracefully, after it."""
        obj = self.objects.pop((plural, name), None)
        if obj is not None:
            await self._emit(plural, "DELETED", obj)
            uid = obj["metadata"]["uid"]
            for (p, n), o in list(self.objects.items()):
                refs = o["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == uid for r in refs):
                    continue
                if propagation == "Orphan":
                    o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                elif p == "pods":
                    self._later(self.delete_pod(n))
                else:
                    await self.drop(p, n)
        return obj

    def _later(self, work: Any) -> None:
        self._deadlines.append(asyncio.ensure_future(work))

    async def delete_pod(self, name: str, grace: int | None = None) -> dict | None:
        """DELETE of a pod: at once (grace 0, on no node, ended), else marked with its deletionTimestamp until
        its node has ended it. A second delete with a shorter grace shortens it."""
        obj = self.objects.get(("pods", name))
        if obj is None:
            return None
        if grace is None:
            grace = int(obj["spec"].get("terminationGracePeriodSeconds", 30))
        meta = obj["metadata"]
        if grace <= 0 or not obj["spec"].get("nodeName") or (obj.get("status") or {}).get("phase") in ("Succeeded",
                                                                                                       "Failed"):
            await self.drop("pods", name)
            return obj
        if meta.get("deletionTimestamp") and grace >= meta.get("deletionGracePeriodSeconds", 30):
            return obj

        def mark(o: dict) -> None:
            o["metadata"].update(deletionTimestamp=now(grace), deletionGracePeriodSeconds=grace)
        obj = await self.modify("pods", name, mark)
        if not self.nodes:
            self._later(self._terminate(name, meta["uid"], grace))
        return obj

    async def _terminate(self, name: str, uid: str, grace: float) -> None:
        """The kubelet's part, while the test plays the node: SIGTERM ends the process (at once), or, for a pod in
        :attr:`ignores_term`, SIGKILL at the grace; then the pod is deleted for good."""
        killed = name in self.ignores_term
        await asyncio.sleep(grace if killed else 0)
        obj = self.objects.get(("pods", name))
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        if (obj.get("status") or {}).get("phase") == "Running":
            await self.exit(name, 137 if killed else 143)
        await self.drop("pods", name)

    # -- the kubelet / scheduler, driven by tests ---------------------------------------------------
    def pod_of(self, job: str) -> str:
        return next(n for (p, n), o in self.objects.items()
                    if p == "pods" and o["metadata"]["labels"].get("batch.kubernetes.io/job-name") == job)

    async def run(self, pod: str, log: bytes = b"") -> None:
        self.logs[pod] = self.logs.get(pod, b"") + log

        def change(o: dict) -> None:
            o["spec"].setdefault("nodeName", "node-1")
            o["status"] = {"phase": "Running", "startTime": now(), "containerStatuses": [{
                "name": "main", "ready": True, "restartCount": 0, "image": o["spec"]["containers"][0]["image"],
                "imageID": "docker.io/library/img@sha256:" + "0" * 64, "state": {"running": {"startedAt": now()}}}]}
        await self.modify("pods", pod, change)

    async def log(self, pod: str, data: bytes) -> None:
        self.logs[pod] = self.logs.get(pod, b"") + data
        async with self.changed:
            self.changed.notify_all()

    async def exit(self, pod: str, code: int, reason: str = "") -> None:
        reason = reason or ("Completed" if code == 0 else "Error")

        def change(o: dict) -> None:
            o["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            o["status"]["containerStatuses"][0]["state"] = {"terminated": {
                "exitCode": code, "reason": reason, "startedAt": now(), "finishedAt": now()}}
        pod_obj = await self.modify("pods", pod, change)
        job = pod_obj["metadata"]["labels"].get("batch.kubernetes.io/job-name")
        if job and ("jobs", job) in self.objects and not (self.objects[("jobs", job)].get("status") or {}).get("conditions"):
            await self._finish_job(job, "Complete" if code == 0 else "Failed",
                                   "" if code == 0 else "BackoffLimitExceeded")

    async def _finish_job(self, job: str, cond: str, reason: str) -> None:
        def change(o: dict) -> None:
            st = o.setdefault("status", {})
            st.update(active=0, **({"succeeded": 1} if cond == "Complete" else {"failed": 1}))
            st["conditions"] = [{"type": cond, "status": "True", "reason": reason or None, "lastTransitionTime": now()}]
            if cond == "Complete":
                st["completionTime"] = now()
        await self.modify("jobs", job, change)

    async def event(self, pod: str, reason: str, message: str, type: str = "Warning") -> None:
        name = f"{pod}.{time.time_ns():x}"  # as client-go's recorder names them: listed in the order they happened
        await self.put("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
                                  "involvedObject": {"kind": "Pod", "name": pod, "namespace": self.namespace},
                                  "reason": reason, "message": message, "type": type, "lastTimestamp": now(),
                                  "source": {"component": "default-scheduler"}})

    # -- HTTP -----------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        ns = "/namespaces/{ns}"
        for prefix, plural in (("/api/v1", "pods"), ("/api/v1", "events"), ("/api/v1", "secrets"),
                               ("/apis/batch/v1", "jobs")):
            app.router.add_route("*", f"{prefix}{ns}/{plural}", self._collection(plural))
            app.router.add_route("*", f"{prefix}{ns}/{plural}/{{name}}", self._item(plural))
        app.router.add_get(f"/api/v1{ns}/pods/{{name}}/log", self._log)
        app.router.add_get("/version", self._version)
        return app

    def use_role(self, role: dict) -> None:
        """Answer 403 to whatever the Role does not grant (RBAC's view: verb + resource)."""
        self.allow = {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"major": "1", "minor": "37", "gitVersion": "v1.37.0"})

    async def close(self) -> None:
        for t in self._deadlines:
            t.cancel()

    def _forbidden(self, verb: str, resource: str, ns: str) -> web.Response | None:
        if (verb, resource) not in self.deny and (self.allow is None or (verb, resource) in self.allow):
            return None
        group = "batch" if resource == "jobs" else ""
        sub = resource.split("/")
        return status(403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:{ns}:jupyter" cannot '
                      f'{verb} resource "{sub[0]}" in API group "{group}" in the namespace "{ns}"', kind=sub[0])

    def _collection(self, plural: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info["ns"]
            q = request.query
            verb = {"GET": "watch" if truthy(q.get("watch")) else "list", "POST": "create"}[request.method]
            self.requests.append((verb, plural))
            if (denied := self._forbidden(verb, plural, ns)) is not None:
                return denied
            if ns != self.namespace:
                return status(403, "Forbidden", f"{plural} is forbidden in namespace {ns}")
            if verb == "create":
                return await self._create(plural, await request.json())
            if verb == "watch":
                return await self._watch(request, plural)
            items = [copy.deepcopy(o) for (p, _), o in sorted(self.objects.items()) if p == plural
                     and matches(o, q.get("labelSelector"), q.get("fieldSelector"))]
            for o in items:
                o.pop("apiVersion", None), o.pop("kind", None)
            kind = {"pods": "PodList", "jobs": "JobList", "events": "EventList", "secrets": "SecretList"}[plural]
            return web.json_response({"kind": kind, "apiVersion": "batch/v1" if plural == "jobs" else "v1",
                                      "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        return handler

    async def _create(self, plural: str, body: dict) -> web.Response:
        name = (body.get("metadata") or {}).get("name") or ""
        kind = body.get("kind", "")
        if not _DNS.match(name) or len(name) > 63:
            return status(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                          "lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                          name=name, kind=plural)
        for _k, v in ((body.get("metadata") or {}).get("labels") or {}).items():
            if len(v) > 63 or not _LABEL_VALUE.match(v):
                return status(422, "Invalid", f'{kind} "{name}" is invalid: metadata.labels: Invalid value: "{v}": '
                              "a valid label must be an empty string or consist of alphanumeric characters, '-', "
                              "'_' or '.'", name=name, kind=plural)
        try:
            kubernetes_validate.validate(body, SCHEMA, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return status(422, "Invalid", f'{kind} "{name}" is invalid: {exc.message}', name=name, kind=plural)
        if (plural, name) in self.objects:
            return status(409, "AlreadyExists", f'{plural} "{name}" already exists', name=name, kind=plural)
        for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
            if not ref.get("uid"):
                return status(422, "Invalid", f'{kind} "{name}" is invalid: metadata.ownerReferences.uid: Invalid '
                              'value: "": uid must not be empty', name=name, kind=plural)
        obj = await self.put(plural, copy.deepcopy(body))
        if plural == "pods":
            await self.modify("pods", name, lambda o: o.update(status={"phase": "Pending", "qosClass": "Burstable"}))
        if plural == "jobs":
            await self._start_job(obj)
        return web.json_response(self.objects[(plural, name)], status=201)

    async def _start_job(self, job: dict) -> None:
        tmpl = copy.deepcopy(job["spec"]["template"])
        name = job["metadata"]["name"]
        labels = dict(tmpl["metadata"].get("labels") or {})
        labels.update({"batch.kubernetes.io/job-name": name, "job-name": name,
                       "batch.kubernetes.io/controller-uid": job["metadata"]["uid"]})
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": tmpl["spec"], "status": {"phase": "Pending"},
               "metadata": {"name": f"{name}-{secrets.token_hex(3)[:5]}", "labels": labels,
                            "annotations": tmpl["metadata"].get("annotations") or {},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                 "uid": job["metadata"]["uid"], "controller": True}]}}
        await self.put("pods", pod)
        await self.modify("jobs", name, lambda o: o.update(status={"active": 1, "startTime": now()}))
        if job["spec"].get("activeDeadlineSeconds"):
            self._deadlines.append(asyncio.ensure_future(self._deadline(name, job["spec"]["activeDeadlineSeconds"])))

    async def _deadline(self, job: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        obj = self.objects.get(("jobs", job))
        if obj is None or (obj.get("status") or {}).get("conditions"):
            return
        # as the Job controller (1.31+) does: FailureTarget first, then its active pods deleted, then Failed
        await self._finish_job(job, "FailureTarget", "DeadlineExceeded")
        for (p, n), o in list(self.objects.items()):
            if p == "pods" and o["metadata"]["labels"].get("batch.kubernetes.io/job-name") == job:
                await self.delete_pod(n)
        await self._finish_job(job, "Failed", "DeadlineExceeded")

    async def _watch(self, request: web.Request, plural: str) -> web.StreamResponse:
        q = request.query
        since = int(q.get("resourceVersion") or 0 or self.rv)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if since < self.compacted:
            await resp.write(json.dumps({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 410,
                "reason": "Expired", "message": f"too old resource version: {since} ({self.compacted})"}}).encode() + b"\n")
            return resp
        loop = asyncio.get_running_loop()
        end = loop.time() + float(q.get("timeoutSeconds") or 1800)
        seen = since
        while loop.time() < end:
            for rv, p, kind, obj in self.history:
                if rv > seen and p == plural and matches(obj, q.get("labelSelector"), q.get("fieldSelector")):
                    await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            seen = self.rv
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), max(0.01, end - loop.time()))
                except TimeoutError:
                    break
        return resp

    def _item(self, plural: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            ns, name = request.match_info["ns"], request.match_info["name"]
            verb = {"GET": "get", "DELETE": "delete"}[request.method]
            self.requests.append((verb, plural))
            if (denied := self._forbidden(verb, plural, ns)) is not None:
                return denied
            obj = self.objects.get((plural, name))
            if obj is None:
                return status(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            if verb == "get":
                return web.json_response(obj)
            try:
                options = (await request.json()) if request.can_read_body else {}
            except ValueError:
                options = {}
            grace = request.query.get("gracePeriodSeconds", (options or {}).get("gracePeriodSeconds"))
            if plural == "pods":
                return web.json_response(await self.delete_pod(name, None if grace is None else int(grace)))
            await self.drop(plural, name, (options or {}).get("propagationPolicy")
                            or request.query.get("propagationPolicy") or ("Orphan" if plural == "jobs" else "Background"))
            if plural == "jobs":
                return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                          "details": {"name": name, "group": "batch", "kind": "jobs",
                                                      "uid": obj["metadata"]["uid"]}})
            return web.json_response(obj)
        return handler

    async def _log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.requests.append(("get", "pods/log"))
        if (denied := self._forbidden("get", "pods/log", ns)) is not None:
            return denied
        obj = self.objects.get(("pods", name))
        if obj is None:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        if obj["status"].get("phase") == "Pending":
            return status(400, "BadRequest", f'container "main" in pod "{name}" is waiting to start: ContainerCreating')
        data = self.logs.get(name, b"")
        if request.query.get("tailLines"):
            n = int(request.query["tailLines"])
            data = b"".join(data.splitlines(keepends=True)[-n:])
        if not truthy(request.query.get("follow")):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = 0
        while True:
            data = self.logs.get(name, b"")
            if len(data) > sent:
                await resp.write(data[sent:])
                sent = len(data)
            o = self.objects.get(("pods", name))
            if o is None or o["status"].get("phase") in ("Succeeded", "Failed"):
                return resp
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), 1)
                except TimeoutError:
                    pass
