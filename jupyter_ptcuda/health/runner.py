"""Run ``check.py`` in an image (one-off container) or in a running kernel's container.

Callers: ``jupyter ptcuda health`` (CLI) and ``POST health`` (server extension). Both go through the
engine seam; the one-off container is built by the same ``ContainerOptions.base_spec`` as kernels, so
the check sees the kernel's shared memory, limits, user and GPU request. Both call :func:`check_allowed`
first: the image must be allowed (:class:`~jupyter_ptcuda.policy.ContainerPolicy`) and the GPUs within
``c.ContainerOptions.gpus``.

On the Kubernetes backend the image check is a pod (``run_once``: scheduled, waited for, its log read,
deleted); ``gpus='all'`` means one GPU there (the scheduler hands GPUs out by count), and whether it is
a kernel image is not asked (no labels to read, and no second pod for a probe): the report's notes say
both. A check inside a kernel's pod would need ``pods/exec``, which the Role does not grant: the
backend's ``exec`` refuses, saying so.

The check runs isolated from the user's files: ``python -I`` (no current directory, script directory,
user site-packages or ``PYTHON*`` variables on the path), and the exec into a kernel runs in ``/``, not
the notebook folder, so a ``json.py`` there cannot shadow the standard library.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ..containers import labels as L
from ..containers import policy as P
from ..containers.base import ContainerService
from ..containers.gpus import GpuRequest, parse_gpus
from ..containers.options import ContainerOptions
from ..errors import ConfigError, LaunchError
from . import check_script_source
from .reasons import apply_reason, reason_for
from .report import parse_report

#: The interpreter command of every check: isolated mode (see the module docstring).
PYTHON = ["python", "-I"]
#: Runs the check script read from stdin with an alarm: the process ends itself after ``seconds``.
ALARMED = ("import signal, sys; signal.alarm({seconds}); src = sys.stdin.read(); sys.argv[0] = 'check'; "
           "exec(compile(src, 'check.py', 'exec'), {{'__name__': '__main__'}})")


def _options(parent: Any, image: str, gpus: Any) -> ContainerOptions:
    kwargs: dict[str, Any] = {"image": image}
    if gpus is not None:
        kwargs["gpus"] = gpus
    return ContainerOptions(parent=parent, **kwargs)


def configured_images(parent: Any) -> list[str]:
    """The images an operator configured (kernels' and jobs'): always allowed to be checked."""
    from traitlets import TraitError

    from ..jobs.manager import JobOptions

    try:
        return [ContainerOptions(parent=parent).image, JobOptions(parent=parent).image]
    except TraitError as exc:
        raise ConfigError(f"the container options in the Jupyter config are invalid: {exc}") from None


async def check_allowed(service: ContainerService, image: str, *, gpus: Any = None, parent: Any = None) -> None:
    """Forbidden unless ``image`` may be checked and ``gpus`` is within ``c.ContainerOptions.gpus``.

    Allowed images: ``c.ContainerOptions.image``, ``c.JobOptions.image``, ``c.ContainerPolicy.allowed_images``
    and images built by ``jupyter ptcuda image build`` (see :class:`~jupyter_ptcuda.containers.policy.ContainerPolicy`).
    Called before a check is started (the health handler, ``jupyter ptcuda health --image``).
    """
    configured = configured_images(parent)
    if gpus is not None:
        ceiling = ContainerOptions(parent=parent).gpus
        P.narrow_gpus(parse_gpus(gpus), parse_gpus(ceiling), asked=gpus,
                      limit=P.operator_limit("ContainerOptions", "gpus", ceiling))
    await P.ContainerPolicy(parent=parent).check_image_on(service, image, configured=configured)


async def check_image(service: ContainerService, image: str, *, gpus: Any = None, perf: bool = False,
                      parent: Any = None, timeout: float = 600, check_id: str | None = None) -> dict[str, Any]:
    """The health report of ``image``, from a one-off ``health`` container built like a kernel's.

    Its GPUs come from the ledger like any container's: ``all`` means every GPU nobody holds, so a check
    never runs on a GPU a kernel holds exclusively (GpuUnavailable naming the holders when none is free).
    Without an NVIDIA runtime the check still runs, on the CPU, and the report says that this is why
    CUDA is unavailable. ``timeout``: the container is killed and removed after it (LaunchError).
    """
    from ..images import check_kernel_image

    info = await service.image(image)  # ImageNotFound with the fix
    opts = _options(parent, image, gpus)
    command = [*PYTHON, "-c", check_script_source()] + (["--perf"] if perf else [])
    check_id = check_id or uuid.uuid4().hex[:12]
    spec = opts.base_spec(kind=L.HEALTH, id=check_id, command=command, workdir="/tmp", env={},
                          mount_workdir=False, configured=[*configured_images(parent), image],
                          image_labels=info.labels)
    notes: list[str] = []
    if service.waits_for_scheduler and spec.gpus.mode == "all":  # a scheduler hands GPUs out by count
        spec = spec.with_gpus(GpuRequest("count", 1))
        notes.append("On Kubernetes the check asked for one GPU: gpus='all' has no meaning there (the scheduler "
                     "hands GPUs out by count); ask for a count to check more.")
    # The check runs without GPUs when the engine has no NVIDIA runtime (the one fallback, in the
    # service), so the report can say that this is why CUDA is unavailable.
    code, out, launched = await service.run_once(spec, timeout=timeout, claim=check_id, gpu_fallback="cpu")
    spec = launched.spec
    report = parse_report(out)
    if notes:
        report.setdefault("notes", []).extend(notes)
    if launched.fallback:
        report.setdefault("notes", []).insert(0, launched.fallback)
    asked = parse_gpus(opts.gpus)
    apply_reason(report, reason_for(report, requested="some" if asked.wanted else "none",
                                    fell_back=bool(launched.fallback), gpus_label=asked.label()))
    report["target"] = {"image": image, "gpus": spec.gpus.label()}
    if not info.inspected:
        report.setdefault("notes", []).append(
            f"Not checked whether {image} is a kernel image: on the Kubernetes backend the server cannot read its "
            "labels (the nodes pull images). A kernel started from it says so if it is not.")
        return report
    try:
        report["image"] = await check_kernel_image(service, image, info)
    except Exception as exc:  # noqa: BLE001 - informative only; the checks above are the verdict
        report.setdefault("notes", []).append(f"not a kernel image: {exc}")
    return report


async def check_kernel(service: ContainerService, kernel_id: str, *, perf: bool = False,
                       timeout: float = 600, requested: Any = None, fell_back: bool = False) -> dict[str, Any]:
    """The health report from inside a running kernel's container (``docker exec``).

    ``requested`` (the kernel's ``gpus`` option) and ``fell_back`` (it started on the CPU for want of an
    NVIDIA runtime) come from the kernel's provisioner: the container cannot tell them apart (see
    :mod:`.reasons`). Unknown (None, as for the CLI): the report keeps the container's own reason."""
    container = await service.find(L.KERNEL, kernel_id)
    # `docker exec` does not inherit what the engine's NVIDIA driver set for the container's processes
    # (NVIDIA_VISIBLE_DEVICES…): take it from the container's init process, as the kernel sees it.
    _, raw = await service.exec(container.id, ["cat", "/proc/1/environ"])
    env = dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)
    env = {k: v for k, v in env.items() if k.startswith(("NVIDIA_", "CUDA_"))}
    # The check's own process ends itself after ``timeout`` (SIGALRM's default action), so a hung check
    # ends its exec and frees the worker that waits on it; Docker has no way to kill an exec from outside.
    argv = [*PYTHON, "-c", ALARMED.format(seconds=max(1, int(timeout)))] + (["--perf"] if perf else [])
    try:
        code, out = await asyncio.wait_for(
            service.exec(container.id, argv, stdin=check_script_source().encode(), env=env, workdir="/"),
            timeout + 5)  # not the notebook folder: nothing of the user's is on the path or the cwd
    except TimeoutError:
        raise LaunchError(f"the health check in kernel {container.tag.id[:12]} did not finish in {timeout:.0f} s.") from None
    if code == -14 or code == 142:  # SIGALRM
        raise LaunchError(f"the health check in kernel {container.tag.id[:12]} did not finish in {timeout:.0f} s "
                          "and was stopped (c.PtcudaExtension.health_timeout).")
    report = parse_report(out.decode("utf-8", "replace"))
    report["target"] = {"kernel_id": container.tag.id, "container": container.id[:12], "image": container.image}
    if requested is not None:
        asked = parse_gpus(requested)
        apply_reason(report, reason_for(report, requested="some" if asked.wanted else "none", fell_back=fell_back,
                                        gpus_label=asked.label()))
    return report
