"""What the operator allows, and the check of a request against it: ceilings and allowlists.

A request (``POST jobs``, ``jupyter ptcuda run``, ``POST health``) may only *narrow* what the operator
configured (``c.JobOptions``/``c.ContainerOptions``, or the kernel a job is derived from); asking for
more is :class:`~jupyter_ptcuda.errors.Forbidden` (403) with a message that names the limit and what
to ask for instead. The rules, as pure functions over parsed values (:func:`jupyter_ptcuda.spec.parse_gpus`,
:func:`~jupyter_ptcuda.spec.parse_size`), so they are tested with plain tables:

- memory (:func:`narrow_size`): a configured limit is a ceiling; a request at or below it is granted,
  above it or for "no limit" (``0``/``none``) is refused. No configured limit: anything (sane) goes.
- GPUs (:func:`narrow_gpus`): ``'all'`` allows anything; a count N allows at most N devices (a count or
  ids); ids allow a subset of them (a count k becomes the first k of them); ``'none'`` allows none.
- images (:func:`image_allowed`): the configured image, an fnmatch pattern of
  ``c.ContainerPolicy.allowed_images``, or an image built by ``jupyter ptcuda image build`` (its labels).

Callers: ``JobManager._options``/``submit`` (jobs, REST and CLI) and the health handler/CLI (image checks)
through :class:`ContainerPolicy`, the Configurable holding the image allowlist. No I/O here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from traitlets import Bool, List, Unicode
from traitlets.config import LoggingConfigurable

from ..errors import ConfigError, Forbidden
from . import labels as L
from .gpus import GpuRequest, describe

#: Labels every image made by ``jupyter ptcuda image build`` carries (torch/cuda may be empty: CPU builds).
BUILT_LABELS = (L.IMAGE_BASE, L.IMAGE_TORCH, L.IMAGE_CUDA, L.IMAGE_PYTHON, L.IMAGE_IPYKERNEL)
#: Of those, the ones that are never empty.
BUILT_LABELS_SET = (L.IMAGE_BASE, L.IMAGE_PYTHON, L.IMAGE_IPYKERNEL)
#: Docker refuses memory limits below 6 MiB; sizes above 8 PiB are not a real machine.
MIN_MEMORY = 6 * 1024**2
MAX_SIZE = 2**53
#: More GPUs than any machine has: a request above this is malformed, not merely unavailable.
MAX_GPUS = 1024


def operator_limit(section: str, trait: str, value: Any) -> str:
    """How a 403 names a configured ceiling: ``the operator's limit c.JobOptions.mem_limit = '1g'``."""
    return f"the operator's limit c.{section}.{trait} = {short(value, 60)}"


def format_size(n: int | None) -> str:
    """``1073741824`` → ``'1g'``; ``None`` → ``'no limit'`` (the way a user writes sizes)."""
    if n is None:
        return "no limit"
    for unit, size in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a request value quoted in a message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_size(n: int | None, what: str, *, memory: bool = False) -> int | None:
    """400 for a size no machine has (above 8 PiB) or, for memory, below Docker's 6 MiB minimum."""
    if n is None:
        return None
    if n > MAX_SIZE:
        raise ConfigError(f"{what}={format_size(n)} is larger than any machine: give e.g. '8g' or '512m'.")
    if memory and n < MIN_MEMORY:
        raise ConfigError(f"{what}={n} bytes is below Docker's minimum of 6 MiB: give e.g. '512m'.")
    return n


def narrow_size(requested: int | None, ceiling: int | None, *, what: str, asked: Any, limit: str) -> int | None:
    """The size a request gets: ``requested`` (None = no limit) when it is within ``ceiling``.

    ``asked`` is the value as the request wrote it and ``limit`` names the ceiling (e.g. "the operator's
    limit c.JobOptions.mem_limit = '1g'", see :func:`operator_limit`); both go into the 403's message.
    """
    if ceiling is None:
        return requested
    hint = f"ask for at most {format_size(ceiling)}"
    if requested is None:
        raise Forbidden(f"{what} {short(asked)} asks for no limit, which is above {limit}; {hint}.", limit=limit)
    if requested > ceiling:
        raise Forbidden(f"{what} {short(asked)} is above {limit}; {hint}.", limit=limit)
    return requested


def check_gpu_count(requested: GpuRequest) -> GpuRequest:
    """400 for more GPUs than any machine has (a count or a list above :data:`MAX_GPUS`)."""
    n = requested.count if requested.mode == "count" else len(requested.ids)
    if n > MAX_GPUS:
        raise ConfigError(f"gpus: {n} GPUs is more than any machine has (at most {MAX_GPUS}); "
                          "ask for a count such as 1, or 'all'.")
    return requested


def narrow_gpus(requested: GpuRequest, ceiling: GpuRequest, *, asked: Any, limit: str) -> GpuRequest:
    """The GPUs a request gets within ``ceiling`` (see the module docstring); 403 naming ``limit`` if beyond.

    A count under an ids ceiling becomes the first devices of that ceiling, so the result is always
    within it.
    """
    check_gpu_count(requested)
    if ceiling.mode == "all" or requested.mode == "none":
        return requested
    beyond = f"gpus {short(asked)} asks for {describe(requested)}, beyond {limit}"
    if ceiling.mode == "none":
        raise Forbidden(f"{beyond}: no GPU is allowed; leave gpus unset or ask for 'none'.", limit=limit)
    if ceiling.mode == "count":
        n = requested.count if requested.mode == "count" else len(requested.ids)
        if requested.mode == "all" or n > ceiling.count:
            raise Forbidden(f"{beyond}; ask for at most {ceiling.count} GPU(s), e.g. gpus: {ceiling.count}.",
                            limit=limit)
        return requested
    allowed = list(ceiling.ids)
    hint = f"ask for some of {', '.join(allowed)} (e.g. gpus: [{', '.join(repr(i) for i in allowed[:1])}]) or a count up to {len(allowed)}"
    if requested.mode == "all":
        raise Forbidden(f"{beyond}; {hint}.", limit=limit)
    if requested.mode == "count":
        if requested.count > len(allowed):
            raise Forbidden(f"{beyond}; {hint}.", limit=limit)
        return GpuRequest("ids", ids=tuple(allowed[: requested.count]))
    extra = [i for i in requested.ids if i not in allowed]
    if extra:
        raise Forbidden(f"{beyond} ({', '.join(extra)} not allowed); {hint}.", limit=limit)
    return requested


def built_by_ptcuda(labels: Mapping[str, str] | None) -> bool:
    """Whether an image's labels are those ``jupyter ptcuda image build`` writes (:data:`BUILT_LABELS`)."""
    labels = labels or {}
    return all(k in labels for k in BUILT_LABELS) and all(labels.get(k) for k in BUILT_LABELS_SET)


def image_allowed(image: str, *, configured: Iterable[str], patterns: Iterable[str],
                  labels: Mapping[str, str] | None = None, allow_built: bool = True) -> bool:
    """The image rule: configured, or matching a pattern (fnmatch, case-sensitive), or built by us.

    ``labels`` None: the image's labels are not known (not inspected, or not present).
    """
    if image in set(configured):
        return True
    if any(fnmatch.fnmatchcase(image, p) for p in patterns):
        return True
    return allow_built and labels is not None and built_by_ptcuda(labels)


def image_refusal(image: str, *, configured: Iterable[str], patterns: Iterable[str], allow_built: bool,
                  present: bool, readable: bool = True) -> Forbidden:
    """The 403 for an image that :func:`image_allowed` refused: what is allowed and how to allow more."""
    names = ", ".join(repr(c) for c in dict.fromkeys(configured)) or "none"
    pats = list(patterns)
    parts = [f"image {short(image, 200)} is not allowed: it is not the configured image ({names})",
             f"matches no pattern of c.ContainerPolicy.allowed_images ({pats})" if pats
             else "c.ContainerPolicy.allowed_images is empty"]
    if allow_built and not readable:
        parts.append("and on the Kubernetes backend the server cannot read an image's labels (the nodes pull "
                     "images), so an image built by `jupyter ptcuda image build` is allowed only by name")
    elif allow_built:
        parts.append("and it is not an image built by `jupyter ptcuda image build`"
                     + ("" if present else " (it is not present on this Docker engine)"))
    else:
        parts.append("and c.ContainerPolicy.allow_built_images is False")
    return Forbidden(", ".join(parts) + ". Use the configured image, or ask the operator to allow it, e.g. "
                     "c.ContainerPolicy.allowed_images = [\"my-team/*\"].", image=image[:200])


class ContainerPolicy(LoggingConfigurable):
    """The image allowlist shared by jobs and health checks (``c.ContainerPolicy.x``)."""

    allowed_images = List(Unicode(), config=True, help="""More images that jobs (`POST jobs`, `jupyter
        ptcuda run --image`) and image health checks (`POST health`, `jupyter ptcuda health --image`) may
        use, as fnmatch patterns matched against the name as written (case-sensitive). Default: [] --
        then only the configured image (c.JobOptions.image for jobs; c.ContainerOptions.image or
        c.JobOptions.image for health checks) and, while allow_built_images is True, images built by
        `jupyter ptcuda image build` (they carry its io.jupyter-ptcuda.image.* labels) are allowed.
        Example: c.ContainerPolicy.allowed_images = ["registry.example.com/ml/*", "pytorch/pytorch:2.5*"]""")
    allow_built_images = Bool(True, config=True, help="""Allow any local image that carries the labels
        `jupyter ptcuda image build` puts on its images (io.jupyter-ptcuda.image.base, .python,
        .ipykernel, .torch, .cuda). Default True. Anyone who can build images on the engine can set
        such labels; set False to allow only the configured image and allowed_images.
        Example: c.ContainerPolicy.allow_built_images = False""")

    mount_roots = List(Unicode(), config=True, help="""Host folders under which notebook folders and extra
        mounts of containers must lie (after normalising the path). Default: [] -- anywhere except the Docker
        socket and the host's system folders (/, /etc, /proc, /run, /var/run, ...), which are never mounted.
        Example: c.ContainerPolicy.mount_roots = ["/home", "/data"]""")

    def allows(self, image: str, *, configured: Iterable[str], labels: Mapping[str, str] | None) -> bool:
        return image_allowed(image, configured=configured, patterns=self.allowed_images, labels=labels,
                             allow_built=self.allow_built_images)

    def needs_labels(self, image: str, *, configured: Iterable[str]) -> bool:
        """True when only the image's labels can decide (callers inspect it then)."""
        return not image_allowed(image, configured=configured, patterns=self.allowed_images, labels=None,
                                 allow_built=False) and self.allow_built_images

    def check_image(self, image: str, *, configured: Iterable[str], labels: Mapping[str, str] | None,
                    present: bool = True, readable: bool = True) -> None:
        """Forbidden unless ``image`` is allowed; ``labels`` from ``docker image inspect`` (None if absent;
        ``readable`` False: the backend cannot read them, Kubernetes)."""
        configured = list(configured)
        if not self.allows(image, configured=configured, labels=labels):
            raise image_refusal(image, configured=configured, patterns=self.allowed_images,
                                allow_built=self.allow_built_images, present=present, readable=readable)

    async def check_image_on(self, service: Any, image: str, *, configured: Iterable[str]) -> None:
        """:meth:`check_image`, reading the labels through ``service`` (the container service) only when
        they decide.

        Called before anything is started: by ``JobManager.submit`` and the health handler and CLI. On
        Kubernetes (``ImageInfo.inspected`` False) the labels are unknown: only the configured image and
        ``allowed_images`` allow, and the refusal says why.
        """
        configured = list(configured)
        if not self.needs_labels(image, configured=configured):
            self.check_image(image, configured=configured, labels={})
            return
        from ..errors import NotFound

        try:
            info = await service.image(image)
        except NotFound:
            self.check_image(image, configured=configured, labels=None, present=False)
            return
        if not getattr(info, "inspected", True):
            self.check_image(image, configured=configured, labels=None, readable=False)
            return
        self.check_image(image, configured=configured, labels=info.labels)
