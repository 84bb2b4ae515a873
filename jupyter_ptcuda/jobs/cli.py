"""``jupyter ptcuda run`` and ``jupyter ptcuda jobs [list|show|logs|cancel|rerun|register]``: jobs without a server.

The top-level CLI (``jupyter_ptcuda.cli``) calls :func:`register` to add the two sub-commands; each
handler returns the exit status and raises PtcudaError subclasses for errors (printed by the top level).
They talk to the engine and the SQLite store directly through a :class:`~.manager.JobManager` configured
from the same Jupyter config files as a server (``c.JobManager``, ``c.JobOptions``, ``c.ContainerOptions``).

``run --wait`` follows the output, is the job's watcher (timeout, finalising) and exits with the job's exit
code; Ctrl-C cancels the job. Without ``--wait`` the job id is printed and the command returns: a running
server adopts the job (every ``reconcile_interval``); otherwise the next ``jobs list``/``logs -f``/server
start records its outcome from the container, which is kept until then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError
from ..jupyter_config import load_server_config
from .manager import JobManager
from .request import JobRequest, parse_param
from .store import QUEUED, RUNNING, Job

RUN_USAGE = "jupyter ptcuda run [options] NOTEBOOK.ipynb|SCRIPT.py [options] [-- SCRIPT ARGS...]"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    # --image has its own dest: the top-level main() fills a missing ``args.image`` with the kernel default.
    where = p.add_mutually_exclusive_group()
    where.add_argument("--from-kernel", metavar="KERNEL_ID",
                       help="run in the configuration of this running kernel: image, GPUs, mounts, user, env")
    where.add_argument("--image", dest="job_image", help="image to run in (default: $JUPYTER_PTCUDA_IMAGE or the kernel image)")
    p.add_argument("--gpus", help="'all', 'none', a count (2), or device ids ('device=0,1', '[\"1\"]')")
    p.add_argument("--gpu-resource", metavar="NAME", help="Kubernetes only: the resource the GPUs are asked for as, "
                   "e.g. a MIG profile nvidia.com/mig-1g.18gb (default: c.JobOptions.gpu_resource)")
    p.add_argument("--wait", action="store_true",
                   help="follow the output and exit with the job's exit code (Ctrl-C cancels the job)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook parameter (a variable of the cell tagged 'parameters', else a top-level NAME = literal); repeatable; JSON values allowed")
    p.add_argument("--nproc-per-node", type=int, metavar="N", help="run under torchrun with N processes")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="cancel the job after this long (timed_out)")
    p.add_argument("--mem-limit", metavar="SIZE", help="memory limit, e.g. 16g (exceeding it: OOMKilled)")
    p.add_argument("--name", default="", help="a name to recognise the job by (default: the file's stem)")
    p.add_argument("--lenient", action="store_true", help="export: comment out magics with no plain-Python form")
    p.add_argument("--no-import-check", dest="import_check", action="store_false", default=None,
                   help="start even if the image lacks a package the script imports (default: refuse, naming them)")
    p.add_argument("--json", action="store_true", help="print the job as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``run`` and ``jobs`` to the ``jupyter ptcuda`` sub-commands (called by ``jupyter_ptcuda.cli``)."""
    r = sub.add_parser("run", help="run a notebook or script as a batch job in a container", usage=RUN_USAGE,
                       description="Run a notebook (exported to train.py) or a script in a container. "
                                   "Arguments after -- go to the script, e.g. `run train.py --wait -- --lr 0.5`.")
    _add_run_options(r)
    r.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_run)

    j = sub.add_parser("jobs", help="list, show, follow and cancel batch jobs")
    j.set_defaults(func=cmd_list, json=False, all=False, limit=20)
    js = j.add_subparsers(dest="jobs_command")
    ls = js.add_parser("list", help="jobs, newest first (records the outcome of finished ones)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all", action="store_true", help="all jobs, not only the last --limit")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(func=cmd_list)
    show = js.add_parser("show", help="one job, as JSON")
    show.add_argument("job_id")
    show.set_defaults(func=cmd_show)
    lg = js.add_parser("logs", help="a job's output")
    lg.add_argument("job_id")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    lg.set_defaults(func=cmd_logs)
    c = js.add_parser("cancel", help="stop a job: SIGTERM, then SIGKILL after the grace period")
    c.add_argument("job_id")
    c.set_defaults(func=cmd_cancel)
    rr = js.add_parser("rerun", help="run an ended job again: same script snapshot, parameters, GPUs, mounts and "
                       "image digest (pulled if missing)")
    rr.add_argument("job_id")
    rr.add_argument("--wait", action="store_true",
                    help="follow the output and exit with the new job's exit code (Ctrl-C cancels it)")
    rr.add_argument("--json", action="store_true", help="print the new job as JSON")
    rr.set_defaults(func=cmd_rerun)
    rg = js.add_parser("register", help="make a model version in the MLflow registry from a finished job's model")
    rg.add_argument("job_id")
    rg.add_argument("--name", required=True, help="the registered model's name (made if new)")
    rg.add_argument("--artifact", metavar="PATH", help="a path in the job run's artifacts (default: the model the "
                    "job logged, e.g. with mlflow.pytorch.log_model)")
    rg.add_argument("--json", action="store_true")
    rg.set_defaults(func=cmd_register)

    sv = sub.add_parser("serve", help="serve a registered model in the image it was trained in (MLflow's scoring "
                        "server, reached through the Jupyter server)",
                        usage="jupyter ptcuda serve models:/NAME/VERSION | --image IMAGE [--gpus N] | serve list | "
                              "serve stop ID")
    sv.add_argument("what", nargs="*", metavar="models:/NAME/VERSION | list | stop ID")
    sv.add_argument("--image", help="serve the model an image made by `image build --model` holds (instead of a "
                    "registered version)")
    sv.add_argument("--gpus", help="GPUs for the model server: 'none' (default), a count, 'all' or device ids")
    sv.add_argument("--json", action="store_true")
    sv.set_defaults(func=cmd_serve)


def split_run_argv(args: argparse.Namespace) -> tuple[str, list[str]]:
    """(script, script args) from ``args.argv``; our options between the script and ``--`` are parsed
    into ``args`` (argparse alone cannot take options after the script *and* pass ``--lr`` through)."""
    rest = list(args.argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
        if not rest:
            raise ConfigError("run: give the notebook or script to run, e.g. `jupyter ptcuda run train.py --wait`.")
        return rest[0], rest[1:]
    if not rest:
        raise ConfigError("run: give the notebook or script to run, e.g. `jupyter ptcuda run train.py --wait`.")
    script, after = rest[0], rest[1:]
    head, tail = (after[: after.index("--")], after[after.index("--") + 1 :]) if "--" in after else (after, [])
    if head:
        opts = argparse.ArgumentParser(prog="jupyter ptcuda run", usage=RUN_USAGE, add_help=False)
        _add_run_options(opts)
        for action in opts._actions:
            action.default = argparse.SUPPRESS  # keep what was parsed before the script
        ns, unknown = opts.parse_known_args(head)
        if unknown:
            raise ConfigError(f"run: {' '.join(unknown)} is not an option of `jupyter ptcuda run`; put the "
                              f"script's own arguments after --, e.g. `run {script} --wait -- {' '.join(unknown)}`.")
        for key, value in vars(ns).items():
            setattr(args, key, getattr(args, key) + value if key == "param" else value)
    return script, tail


def _gpus(value: str | None) -> Any:
    if value is None:
        return None
    return json.loads(value) if value.strip().startswith("[") else value


def request_from_args(args: argparse.Namespace) -> JobRequest:
    script, script_args = split_run_argv(args)
    return JobRequest(
        path=os.path.abspath(script), kernel_id=args.from_kernel, image=args.job_image, gpus=_gpus(args.gpus),
        params=dict(parse_param(p) for p in args.param), args=script_args, nproc_per_node=args.nproc_per_node,
        timeout=args.timeout, mem_limit=args.mem_limit, name=args.name, lenient=args.lenient,
        gpu_resource=args.gpu_resource,
    )


def _summary(job: Job) -> str:
    took = f" in {job.duration():.1f} s" if job.duration() is not None else ""
    code = f", exit code {job.exit_code}" if job.exit_code is not None else ""
    reason = f" ({job.reason})" if job.reason and job.reason != job.state else ""
    return f"job {job.id} {job.state}{reason}{code}{took}; log and manifest in {job.output_dir}"


T = TypeVar("T")


def in_one_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, then the backend's API client closed (:meth:`ContainerService.close`; Kubernetes: its
    HTTP session belongs to this event loop), so the command ends without "Unclosed client session"."""
    async def run() -> T:
        try:
            return await main
        finally:
            from ..containers.factory import close_service

            await close_service()

    return asyncio.run(run())


def manager() -> JobManager:
    """A JobManager configured like the server's: the same Jupyter config files (store, job options). A job whose
    GPUs are held is kept queued for the server's GPU queue (:meth:`JobManager._queue_for_server`), not refused."""
    mgr = JobManager(config=load_server_config())
    mgr.queue_for_server = True
    return mgr


def cmd_run(args: argparse.Namespace) -> int:
    req = request_from_args(args)
    return in_one_loop(_run(req, wait=args.wait, as_json=args.json, import_check=args.import_check))


async def _run(req: JobRequest, *, wait: bool, as_json: bool, import_check: bool | None = None) -> int:
    mgr = manager()
    return await _started(mgr, await mgr.submit(req, watch=False, import_check=import_check), wait=wait,
                          as_json=as_json)


def cmd_rerun(args: argparse.Namespace) -> int:
    async def rerun() -> int:
        mgr = manager()
        job = await mgr.rerun(args.job_id, watch=False)
        print(f"job {job.id} reruns job {job.meta.get('rerun_of')}", file=sys.stderr)
        return await _started(mgr, job, wait=args.wait, as_json=args.json)

    return in_one_loop(rerun())


async def _started(mgr: JobManager, job: Job, *, wait: bool, as_json: bool) -> int:
    """What ``run`` and ``jobs rerun`` print once the job is submitted; with ``wait``, follow it to its end."""
    for warning in job.meta.get("export_warnings") or ():  # also at the top of the job's log
        print(f"warning: {warning}", file=sys.stderr)
    doing = "running" if job.state == RUNNING else job.reason or job.state  # Kubernetes: "pending: ..."
    print(f"job {job.id} {doing} in {job.image} ({job.image_digest[:19]}), gpus {job.gpus}; "
          f"output in {job.output_dir}", file=sys.stderr, flush=True)
    if not wait:
        print(json.dumps(job.to_json(), indent=2) if as_json else job.id)
        print(f"follow it with `jupyter ptcuda jobs logs -f {job.id}`", file=sys.stderr)
        return 0
    watcher: asyncio.Task | None = None
    try:
        job = await _until_started(mgr, job)
        watcher = asyncio.get_running_loop().create_task(mgr.watch(job.id))
        async for chunk in mgr.follow(job.id):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        job = await watcher
    except asyncio.CancelledError:  # Ctrl-C (asyncio.run cancels us, then raises KeyboardInterrupt)
        print(f"\ncancelling job {job.id}...", file=sys.stderr, flush=True)
        if watcher is not None:
            watcher.cancel()
        job = await mgr.cancel(job.id)
        print(_summary(job), file=sys.stderr)
        raise
    finally:
        await mgr.stop()
    if as_json:
        print(json.dumps(job.to_json(), indent=2))
    print(_summary(job), file=sys.stderr)
    return job.exit_code if job.exit_code is not None else 1


async def _until_started(mgr: JobManager, job: Job) -> Job:
    """``run --wait`` of a job waiting for GPUs: until it has a container (started by the GPU queue: the server's,
    or the JupyterHub broker's) or has ended."""
    said = job.reason or ""  # said already, by the line "job ... waiting for ..."
    while job.state == QUEUED and not job.container_id:
        if job.reason and job.reason != said:
            said = job.reason
            print(f"job {job.id} {said}", file=sys.stderr, flush=True)
        await asyncio.sleep(mgr.poll_interval)
        job = await mgr.get(job.id)
    return job


def _age(ts: float) -> str:
    secs = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def cmd_list(args: argparse.Namespace) -> int:
    return in_one_loop(_list(args.json, None if args.all else args.limit))


async def _list(as_json: bool, limit: int | None) -> int:
    mgr = manager()
    try:
        await mgr.reconcile(adopt=False)
    except Exception as exc:  # noqa: BLE001 - the engine may be down: still show what the store knows
        print(f"warning: running jobs not checked against the engine: {exc}", file=sys.stderr)
    jobs = await mgr.list_jobs(None, limit)
    if as_json:
        print(json.dumps([j.to_json() for j in jobs], indent=2))
        return 0
    if not jobs:
        print("no jobs yet: `jupyter ptcuda run train.py --wait` starts one")
        return 0
    rows = [("ID", "NAME", "STATE", "EXIT", "GPUS", "CREATED", "WAITED", "DURATION")]
    for j in jobs:  # a job waiting for GPUs: "queued (waiting for 1 GPU: 2 requests ahead of you; ...)"
        state = j.state + (f" ({j.reason})" if j.reason and j.reason not in (j.state, "completed", "failed") else "")
        waited = j.waited()
        rows.append((j.id, j.name[:24], state, "" if j.exit_code is None else str(j.exit_code), j.gpus,
                     _age(j.created), "" if waited is None or waited < 1 else f"{waited:.0f}s",
                     "" if j.duration() is None else f"{j.duration():.1f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def show() -> int:
        job = await manager().get(args.job_id)
        print(json.dumps(job.to_json(), indent=2))
        return 0

    return in_one_loop(show())


def cmd_logs(args: argparse.Namespace) -> int:
    async def logs() -> int:
        mgr = manager()
        if args.follow:
            async for chunk in mgr.follow(args.job_id):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        else:
            data, _ = await mgr.read_log(args.job_id)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return 0

    return in_one_loop(logs())


def cmd_cancel(args: argparse.Namespace) -> int:
    async def cancel() -> int:
        mgr = manager()
        job = await mgr.get(args.job_id)
        print(f"cancelling job {job.id} (SIGTERM, SIGKILL after {mgr.cancel_grace:.0f} s)...", file=sys.stderr,
              flush=True)
        job = await mgr.cancel(job.id)
        print(_summary(job))
        return 0

    return in_one_loop(cancel())


def cmd_register(args: argparse.Namespace) -> int:
    async def register() -> int:
        mgr = manager()
        version = await mgr.tracker.register_job(await mgr.get(args.job_id), args.name, args.artifact)
        if args.json:
            print(json.dumps(version, indent=2))
        else:
            print(f"registered {version['uri']} from job {args.job_id} (run {version['run_id']}, image "
                  f"{version['image_digest'][:19]})")
        return 0

    return in_one_loop(register())


def cmd_serve(args: argparse.Namespace) -> int:
    from . import serving

    what = list(args.what)

    async def serve() -> int:
        mgr = manager()
        if args.image:
            if what:
                raise ConfigError(f"serve --image IMAGE serves the model the image holds: leave out {' '.join(what)}.")
            return show(await serving.start_image(mgr, args.image, gpus=_gpus(args.gpus)))
        if not what:
            raise ConfigError("serve: give a model, e.g. `jupyter ptcuda serve models:/linear/1` (or --image IMAGE), "
                              "or `serve list`, `serve stop ID`.")
        if what == ["list"]:
            found = await serving.servers(mgr)
            if args.json:
                print(json.dumps(found, indent=2))
            elif not found:
                print("no model servers: `jupyter ptcuda serve models:/NAME/VERSION` starts one")
            for s in [] if args.json else found:
                print(f"{s['id']}  {s['state']:<8} {s['model']}  gpus {s['gpus']}  {_age(s['created'])}")
            return 0
        if what[0] == "stop":
            if len(what) != 2:
                raise ConfigError("serve stop: give the model server's id, e.g. `jupyter ptcuda serve stop 3f2a`.")
            gone = await serving.stop(mgr, what[1])
            print(json.dumps(gone, indent=2) if args.json else f"stopped model server {gone['id']} ({gone['model']})")
            return 0
        if len(what) != 1:
            raise ConfigError("serve: give one model, e.g. `jupyter ptcuda serve models:/linear/1`, or `serve list`, "
                              "`serve stop ID`.")
        return show(await serving.start(mgr, what[0], gpus=_gpus(args.gpus)))

    def show(started: dict[str, Any]) -> int:
        if args.json:
            print(json.dumps(started, indent=2))
        else:
            print(f"serving {started['model']} as {started['id']} (image {started['image'][:40]}, gpus "
                  f"{started['gpus']}): POST {{base_url}}jupyter-ptcuda/serve/{started['id']}/invocations "
                  "through the Jupyter server")
        return 0

    return in_one_loop(serve())
