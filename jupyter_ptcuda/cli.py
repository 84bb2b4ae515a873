"""``jupyter ptcuda <command>`` (console script ``jupyter-ptcuda``).

Each command is a thin shell over a library function; errors are ours (:mod:`.errors`) and are printed
as one clear message with a non-zero exit status, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from . import __version__
from .containers.engine import get_engine
from .containers.factory import get_service
from .errors import PtcudaError
from .images import DEFAULT_BASE, DEFAULT_TAG
from .presets import PRESETS

Handler = Callable[[argparse.Namespace], int]


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def cmd_image_build(args: argparse.Namespace) -> int:
    from .builds import MODEL_STEPS, STEPS, BuildStatus

    # where a server sees it (GET jupyter-ptcuda/builds): step n of m, its last line
    status = BuildStatus(args.tag, steps=MODEL_STEPS if args.model else tuple(
        s for s in STEPS if s != "sbom" or not args.no_sbom))

    def progress(line: str) -> None:
        print(line, flush=True)
        status.line(line)

    try:
        if args.model:
            _build_model_image(args, progress)
        else:
            from .images import build_image

            build_image(get_engine(), base=args.base or DEFAULT_BASE, tag=args.tag, torch=args.torch,
                        extra=args.extra, preset=args.preset, pull=not args.no_pull, wheelhouse=args.wheelhouse,
                        progress=progress, sbom=not args.no_sbom, sbom_file=args.sbom)
    except BaseException as exc:
        status.finish(error=getattr(exc, "message", None) or str(exc) or type(exc).__name__)
        raise
    status.finish()
    if args.push:
        from .registry import push_image

        print(push_image(get_engine(), args.tag), flush=True)
    return 0


def _build_model_image(args: argparse.Namespace, progress: Callable[[str], None]) -> None:
    """``image build --model``: the registry and the interpreter as a server's JobManager has them."""
    from .jobs.cli import manager
    from .jobs.model_image import build_model_image

    given = [flag for flag, value in (("--preset", args.preset), ("--extra", args.extra), ("--wheelhouse", args.wheelhouse),
                                      ("--sbom", args.sbom), ("--torch", args.torch != "torch")) if value]
    if given:
        raise PtcudaError(f"image build --model adds only the model to the image it was trained in: leave out "
                          f"{', '.join(given)} (build the training image with them first).")
    if args.tag == DEFAULT_TAG:
        raise PtcudaError("image build --model: give the inference image's --tag, e.g. --tag registry.example.org/"
                          "team/linear:1 (the default tag is the kernel image's).")
    mgr = manager()
    try:
        build_model_image(get_engine(), mgr.tracker, args.model, tag=args.tag, base=args.base, python=mgr.python,
                          pull=not args.no_pull, progress=progress)
    finally:
        mgr.tracker.close()


def cmd_image_push(args: argparse.Namespace) -> int:
    """Push TAG to the registry it names; the pinned reference (REPO@sha256:...) is the one stdout line."""
    from .registry import push_image

    print(push_image(get_engine(), args.tag), flush=True)
    return 0


def cmd_kernelspec_install(args: argparse.Namespace) -> int:
    from .kernelspec import install_kernelspec

    image = args.image
    if args.pin:  # the registry's digest for the tag, asked before anything is written
        from .registry import ensure_local, pin_reference

        image = pin_reference(get_engine(), args.image)
        print(f"pinned {args.image} to {image}", file=sys.stderr)
        if not args.no_check:  # the check reads the image's labels: it needs the image here
            ensure_local(get_engine(), image)
    config: dict[str, Any] = {"image": image}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PtcudaError(f"--option {item!r}: write KEY=VALUE, e.g. --option mem_limit=32g")
        config[key.strip()] = _json_or_text(value)
    if args.gpus is not None:
        config["gpus"] = _json_or_text(args.gpus) if args.gpus.startswith("[") else args.gpus
    if args.interrupt_mode:
        config["interrupt_mode"] = args.interrupt_mode
    prefix = sys.prefix if args.sys_prefix else args.prefix
    path = install_kernelspec(None if args.no_check else get_service(), name=args.name,
                              display_name=args.display_name, config=config, user=args.user, prefix=prefix,
                              check_image=not args.no_check)
    print(f"installed kernelspec {args.name!r} ({args.display_name}, image {image}) in {path}")
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    from .containers.reaper import reap_kernel_files, reap_orphans

    removed = asyncio.run(reap_orphans(get_service(), dry_run=args.dry_run))
    files = asyncio.run(reap_kernel_files(dry_run=args.dry_run))
    verb = "would remove" if args.dry_run else "removed"
    for c in removed:
        what = f"kernel {c['kernel_id']}, " if c["kernel_id"] else f"{c['kind']}, "
        print(f"{verb} {c['id'][:12]} ({what}server {c['server_id']}): {c['why']}")
    for f in files:
        print(f"{verb} the connection files of kernel {f['kernel_id']}: {f['why']}")
    if not removed:
        print("no orphaned jupyter-ptcuda containers")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 1 when a check fails or the check cannot run; ``--junit FILE`` is written in both cases."""
    from .health.report import exit_code, render_junit, render_junit_error, render_text, write_junit
    from .health.runner import check_allowed, check_image, check_kernel
    from .jobs.cli import in_one_loop

    if bool(args.image) == bool(args.kernel):
        raise PtcudaError("give --image IMAGE or --kernel KERNEL_ID")
    if args.scan and not args.image:
        raise PtcudaError("--scan needs --image IMAGE (it scans an image on this Docker engine)")
    try:
        from .jupyter_config import load_server_config

        config = load_server_config()
        service = get_service(config)  # c.ContainerBackend as the server's config files say
        if args.image:
            gpus = _json_or_text(args.gpus) if args.gpus and args.gpus.startswith("[") else args.gpus
            from traitlets.config import Configurable

            like_the_server = Configurable(config=config)  # c.ContainerOptions: shm, limits, env

            async def of_image() -> dict:
                await check_allowed(service, args.image, parent=like_the_server)  # the server's image policy
                return await check_image(service, args.image, gpus=gpus, perf=args.perf, timeout=args.timeout,
                                         parent=like_the_server)

            report = in_one_loop(of_image())  # one event loop: the Kubernetes client's session belongs to it
        else:
            report = in_one_loop(check_kernel(service, args.kernel, perf=args.perf, timeout=args.timeout))
        if args.scan:
            from .health.scan import ImageScan, add_checks, scan_checks

            settings = ImageScan(config=config)
            for flag in ("max_critical", "max_high", "max_base_age_days"):
                if getattr(args, flag) is not None:
                    setattr(settings, flag, getattr(args, flag))
            report = add_checks(report, scan_checks(get_engine(), args.image, settings))
    except PtcudaError as exc:
        if args.junit:  # CI shows why the gate failed, not a missing report
            target = {"image": args.image, "gpus": args.gpus} if args.image else {"kernel_id": args.kernel}
            write_junit(args.junit, render_junit_error(exc.message, target))
        raise
    if args.junit:
        write_junit(args.junit, render_junit(report))
        failed = sum(c["status"] == "fail" for c in report["checks"])
        print(f"JUnit report: {args.junit} ({len(report['checks'])} checks, {failed} failed)", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else render_text(report, color=sys.stdout.isatty()))
    return exit_code(report)


def cmd_gpus(args: argparse.Namespace) -> int:
    """One NVML sample (real pynvml, or the fake ``--nvml fake:SPEC`` names) as a table."""
    import logging

    from .nvml import nvml_from_config
    from .nvml.sampler import GpuSampler

    sampler = GpuSampler(nvml_from_config(args.nvml, "--nvml", logging.getLogger("jupyter_ptcuda")), interval=0.2)
    sampler.ensure_started()
    sampler.wait_ready(10)
    snap = sampler.snapshot()
    sampler.stop()
    holders: dict[str, Any] = {}
    try:
        from .containers.ledger import GpuLedger

        holders = asyncio.run(GpuLedger(get_service(), lambda: snap).holders())
    except PtcudaError:
        pass
    if args.json:
        print(json.dumps({"snapshot": snap, "holders": holders}, indent=2, default=str))
        return 0 if snap["state"] == "ok" else 1
    if snap["state"] != "ok":
        print(f"no GPU telemetry: {snap.get('reason')}")
        return 1
    print(f"driver {snap.get('driver_version')}  CUDA {snap.get('cuda_driver_version')}")
    print(f"{'#':>2} {'name':28} {'util':>5} {'memory':>19} {'temp':>5} {'power':>13}  held by")
    for g in snap["gpus"]:
        if g.get("state") != "ok":
            print(f"{g['index']:>2} {g.get('name') or '?':28} {g['state']}: {g.get('reason', '')}")
            continue
        mem = f"{(g['memory_used'] or 0) / 2**30:.1f}/{(g['memory_total'] or 0) / 2**30:.0f} GiB"
        power = f"{g['power_w']}/{g['power_limit_w']} W" if g.get("power_w") is not None else "n/a"
        who = ", ".join(f"{h['kind']} {h['id'][:8]}" for h in holders.get(str(g["index"]), [])) or "-"
        print(f"{g['index']:>2} {g['name'][:28]:28} {g['utilization_gpu']:>4}% {mem:>19} {g['temperature_c']:>4}C {power:>13}  {who}")
    return 0


def build_parser(extra: dict[str, Callable[[argparse._SubParsersAction], None]] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jupyter ptcuda", description="PyTorch-CUDA kernels in Docker containers.")
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help="kernel images").add_subparsers(dest="image_command", required=True)
    b = image.add_parser("build", help="derive a kernel-ready image (adds ipykernel) from a PyTorch base")
    b.add_argument("--base", default=None, help="base image (default: the official PyTorch CUDA runtime image); "
                   "'debian' builds one from Debian packages with no registry; with --model, build on this image "
                   "instead of the one the model was trained in")
    b.add_argument("--model", metavar="models:/NAME/VERSION", help="bake this registered model version (MLflow "
                   "registry: c.JobManager.mlflow_tracking_uri / $MLFLOW_TRACKING_URI) into an inference image on "
                   "the image it was trained in, running MLflow's scoring server (/invocations, /ping; port 5000) "
                   "as a non-root user; needs --tag")
    b.add_argument("--tag", default=DEFAULT_TAG, help="tag of the result")
    b.add_argument("--torch", default="torch", help="torch requirement for --base debian (default 'torch')")
    b.add_argument("--extra", action="append", default=[], help="another requirement to install (repeatable)")
    b.add_argument("--preset", choices=sorted(PRESETS), help="; ".join(f"{k}: {v.help}" for k, v in PRESETS.items()))
    b.add_argument("--no-pull", action="store_true", help="never pull the base")
    b.add_argument("--wheelhouse", help="use this folder of wheels instead of downloading on the host")
    b.add_argument("--sbom", metavar="FILE", help="also write the image's CycloneDX SBOM (made by cyclonedx-py; "
                   "always put in the image, at the path its label io.jupyter-ptcuda.image.sbom names) to FILE")
    b.add_argument("--no-sbom", action="store_true", help="make no SBOM")
    b.add_argument("--push", action="store_true", help="then push --tag to the registry it names (as `image push`)")
    b.set_defaults(func=cmd_image_build)

    ps = image.add_parser("push", help="push an image to the registry its tag names; prints REPO@sha256:...")
    ps.add_argument("tag", metavar="TAG", help="REGISTRY/REPO:TAG, e.g. registry.example.org/team/kernel:2026-12")
    ps.set_defaults(func=cmd_image_push)

    ks = sub.add_parser("kernelspec", help="kernelspecs").add_subparsers(dest="ks_command", required=True)
    k = ks.add_parser("install", help="install a kernelspec that runs kernels in containers")
    k.add_argument("--name", default="ptcuda")
    k.add_argument("--display-name", default="PyTorch (CUDA)")
    k.add_argument("--image", default=DEFAULT_TAG, help="kernel image (default: jupyter-ptcuda/pytorch-kernel:latest)")
    k.add_argument("--gpus", default=None, help="'all', 'none', a count, or ids '[\"0\",\"1\"]'")
    k.add_argument("--interrupt-mode", choices=["signal", "message"])
    k.add_argument("--option", "-o", action="append", help="provisioner option KEY=VALUE (JSON values allowed)")
    where = k.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (e.g. a venv)")
    where.add_argument("--prefix", help="install under this prefix")
    k.add_argument("--pin", action="store_true", help="write the image as REPO@sha256:... (the digest the registry "
                   "serves for --image now, asked with this user's `docker login`); kernels and their jobs then "
                   "run that digest, pulled when missing")
    k.add_argument("--no-check", action="store_true", help="do not check the image (no engine needed, except "
                   "to ask the registry for --pin)")
    k.set_defaults(func=cmd_kernelspec_install)

    r = sub.add_parser("reap", help="remove containers whose kernel no longer exists")
    r.add_argument("--dry-run", action="store_true")
    r.set_defaults(func=cmd_reap)

    h = sub.add_parser("health", help="health check of an image or a running kernel (exit 1 if a check fails)")
    h.add_argument("--image", help="image to check in a one-off container")
    h.add_argument("--kernel", help="id of a running kernel to check inside its container")
    h.add_argument("--gpus", default="all", help="GPUs for --image (default all; 'none', a count, '[\"0\"]')")
    h.add_argument("--perf", action="store_true", help="also measure GEMM TFLOPS and memory bandwidth")
    h.add_argument("--json", action="store_true", help="print the JSON report")
    h.add_argument("--junit", metavar="FILE", help="also write the report as JUnit XML for CI (one testcase per "
                   "check; a failed check is a failure, a skipped one skipped); the exit code is unchanged")
    h.add_argument("--timeout", type=float, default=600)
    h.add_argument("--scan", action="store_true", help="also scan --image: HIGH/CRITICAL vulnerabilities (Trivy, "
                   "when installed; skipped with the reason otherwise, never passed) and the age of its base")
    h.add_argument("--max-critical", type=int, help="CRITICAL findings allowed before --scan fails (default "
                   "c.ImageScan.max_critical, 0)")
    h.add_argument("--max-high", type=int, help="HIGH findings allowed before --scan fails (default "
                   "c.ImageScan.max_high, -1: no limit, they warn)")
    h.add_argument("--max-base-age-days", type=int, help="warn when the image's base is older (default "
                   "c.ImageScan.max_base_age_days, 30)")
    h.set_defaults(func=cmd_health)

    g = sub.add_parser("gpus", help="print the GPU table (NVML) and which kernels/jobs hold each GPU")
    g.add_argument("--json", action="store_true")
    g.add_argument("--nvml", default="", metavar="fake:SPEC", help="simulated GPUs instead of the host's NVML "
                   "(tests, demos; e.g. fake:2; needs jupyter_ptcuda_testing)")
    g.set_defaults(func=cmd_gpus)

    from .broker import register as register_broker

    register_broker(sub)

    for register in (extra or {}).values():
        register(sub)
    return p


def _feature_commands() -> dict[str, Callable[[argparse._SubParsersAction], None]]:
    """Commands contributed by feature modules (export, jobs, shell/exec)."""
    from . import shell
    from .export import cli as export_cli
    from .jobs import cli as jobs_cli

    def reg_export(sub: argparse._SubParsersAction) -> None:
        e = sub.add_parser("export", help="export a notebook to a plain train.py")
        export_cli.add_arguments(e)
        e.set_defaults(func=export_cli.run)

    return {"export": reg_export, "jobs": jobs_cli.register, "shell": shell.register}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_feature_commands())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except PtcudaError as exc:
        if args.debug:
            raise
        print(f"jupyter ptcuda: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
