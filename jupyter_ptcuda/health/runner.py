"""Run ``check.py`` in an image (one-off container) or in a running kernel's container.

Callers: ``jupyter ptcuda health`` (CLI) and ``POST health`` (server extension). Both go through the
engine seam; the one-off container is built by the same ``ContainerOptions.base_spec`` as kernels, so
the check sees the kernel's shared memory, limits, user and GPU request. Both call :func:`check_allowed`
first: the image must be allowed (:class:`~jupyter_ptcuda.policy.ContainerPolicy`) and the GPUs within
``c.ContainerOptions.gpus``.

The check runs isolated from the user's files: ``python -I`` (no current directory, script directory,
user site-packages or ``PYTHON*`` variables on the path), and the exec into a kernel runs in ``/``, not
the notebook folder, so a ``json.py`` there cannot shadow the standard library.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..engine import Engine
from ..errors import NoNvidiaRuntime, NotFound
from ..spec import LABEL_KERNEL_ID, LABEL_KIND, GpuRequest, parse_gpus
from . import check_script_source
from .report import parse_report

#: The interpreter command of every check: isolated mode (see the module docstring).
PYTHON = ["python", "-I"]


def _options(parent: Any, image: str, gpus: Any) -> Any:
    from ..provisioner import ContainerOptions

    kwargs: dict[str, Any] = {"image": image}
    if gpus is not None:
        kwargs["gpus"] = gpus
    return ContainerOptions(parent=parent, **kwargs)


async def check_allowed(engine: Engine, image: str, *, gpus: Any = None, parent: Any = None) -> None:
    """Forbidden unless ``image`` may be checked and ``gpus`` is within ``c.ContainerOptions.gpus``.

    Allowed images: ``c.ContainerOptions.image``, ``c.JobOptions.image``, ``c.ContainerPolicy.allowed_images``
    and images built by ``jupyter ptcuda image build`` (see :class:`~jupyter_ptcuda.policy.ContainerPolicy`).
    Called before a check is started (the health handler, ``jupyter ptcuda health --image``).
    """
    from traitlets import TraitError

    from .. import policy as P
    from ..errors import ConfigError
    from ..jobs.manager import JobOptions
    from ..provisioner import ContainerOptions

    try:
        kernels, jobs = ContainerOptions(parent=parent), JobOptions(parent=parent)
    except TraitError as exc:
        raise ConfigError(f"the container options in the Jupyter config are invalid: {exc}") from None
    if gpus is not None:
        P.narrow_gpus(parse_gpus(gpus), parse_gpus(kernels.gpus), asked=gpus,
                      limit=P.operator_limit("ContainerOptions", "gpus", kernels.gpus))
    await P.ContainerPolicy(parent=parent).check_image_on(engine, image, configured=[kernels.image, jobs.image])


async def check_image(engine: Engine, image: str, *, gpus: Any = None, perf: bool = False,
                      parent: Any = None, timeout: float = 600) -> dict[str, Any]:
    """The health report of ``image``. Without an NVIDIA runtime the check still runs, on the CPU,
    and the report says that this is why CUDA is unavailable."""
    from ..images import check_kernel_image

    await engine.image(image)  # ImageNotFound with the fix
    opts = _options(parent, image, gpus)
    command = [*PYTHON, "-c", check_script_source()] + (["--perf"] if perf else [])
    spec = opts.base_spec(command=command, workdir="/tmp", env={}, labels={LABEL_KIND: "health"},
                          mount_workdir=False)
    note = None
    try:
        code, out = await engine.run_once(spec, timeout=timeout)
    except NoNvidiaRuntime as exc:
        note = exc.message
        code, out = await engine.run_once(spec.with_gpus(GpuRequest()), timeout=timeout)
    report = parse_report(out)
    if note:
        report.setdefault("notes", []).insert(0, note)
        report["cuda"] = {**report.get("cuda", {}), "reason_code": "no_nvidia_runtime",
                          "reason": "GPUs were requested but the Docker engine has no NVIDIA runtime "
                                    "(NVIDIA Container Toolkit); the check ran without GPUs."}
    report["target"] = {"image": image, "gpus": spec.gpus.label()}
    try:
        report["image"] = await check_kernel_image(engine, image)
    except Exception as exc:  # noqa: BLE001 - informative only; the checks above are the verdict
        report.setdefault("notes", []).append(f"not a kernel image: {exc}")
    return report


async def find_kernel_container(engine: Engine, kernel_id: str) -> dict[str, Any]:
    found = await engine.containers({LABEL_KIND: "kernel", LABEL_KERNEL_ID: kernel_id}, all=False)
    if not found:
        raise NotFound(f"no running container for kernel {kernel_id}: is it a PyTorch (CUDA) kernel, and running?")
    return found[0]


async def check_kernel(engine: Engine, kernel_id: str, *, perf: bool = False, timeout: float = 600) -> dict[str, Any]:
    """The health report from inside a running kernel's container (``docker exec``)."""
    container = await find_kernel_container(engine, kernel_id)
    # `docker exec` does not inherit what the engine's NVIDIA driver set for the container's processes
    # (NVIDIA_VISIBLE_DEVICES…): take it from the container's init process, as the kernel sees it.
    _, raw = await engine.exec(container["Id"], ["cat", "/proc/1/environ"])
    env = dict(item.split("=", 1) for item in raw.decode("utf-8", "replace").split("\0") if "=" in item)
    env = {k: v for k, v in env.items() if k.startswith(("NVIDIA_", "CUDA_"))}
    argv = [*PYTHON, "-"] + (["--perf"] if perf else [])
    code, out = await asyncio.wait_for(
        engine.exec(container["Id"], argv, stdin=check_script_source().encode(), env=env, workdir="/"),
        timeout)  # not the notebook folder: nothing of the user's is on the path or the cwd
    report = parse_report(out.decode("utf-8", "replace"))
    report["target"] = {"kernel_id": kernel_id, "container": container["Id"][:12], "image": container.get("Image")}
    return report
