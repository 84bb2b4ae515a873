"""Domain exceptions, in one place, each mapped to one HTTP status.

Every message says what happened and what to do. The REST handlers turn these into
JSON errors through :func:`http_status`; the CLI prints ``str(exc)`` and exits non-zero.
"""

from __future__ import annotations

from tornado import web


class PtcudaError(web.HTTPError):
    """Base class. ``status`` is the HTTP status the server extension answers with.

    It is a ``tornado.web.HTTPError`` so that an error raised while jupyter_server starts a kernel
    (``POST /api/kernels``) reaches JupyterLab with its status and message instead of a bare
    "Unhandled error"; ``str(exc)`` is the message alone.
    """

    status = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(self.status, message)  # no format args: tornado never %-formats it
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(PtcudaError):
    """A kernelspec option, CLI flag or request field is malformed."""

    status = 400


class NotFound(PtcudaError):
    """The named object (image, container, kernel, job, report, notebook) does not exist."""

    status = 404


class Conflict(PtcudaError):
    """The request conflicts with current state (e.g. a GPU held by someone else)."""

    status = 409


class Forbidden(PtcudaError):
    """The request is not allowed (e.g. a path outside the server root)."""

    status = 403


class TooBusy(PtcudaError):
    """429: a bounded resource (e.g. health checks running at once) is full; retry later."""

    status = 429


class EngineUnavailable(PtcudaError):
    """The Docker daemon does not answer."""

    status = 503


class EngineError(PtcudaError):
    """The Docker daemon answered with an error we have no better name for."""

    status = 502


class ImageNotFound(NotFound):
    """The image is not present locally (and could not be pulled, when pulling was allowed)."""


class ImageNotReady(ConfigError):
    """The image exists but cannot run a kernel (no ipykernel, no python)."""


class NoNvidiaRuntime(PtcudaError):
    """GPUs were requested but the engine has no NVIDIA device driver."""

    status = 503


class GpuUnavailable(Conflict):
    """A GPU request cannot be met (ledger): the message names who holds what."""


class LaunchError(PtcudaError):
    """A kernel or job container failed to start or died during start-up.

    ``details`` carries ``exit_code``, ``oom_killed`` and ``logs`` (the last lines).
    """

    status = 500


class RegistryError(PtcudaError):
    """A container registry refused or could not be reached (push, pull, digest look-up); the message is
    one sentence that names the registry and the fix (``docker login``, the CA, the name)."""

    status = 502


class ExportError(PtcudaError):
    """A notebook cannot be exported to a script. ``cell`` is the 1-based cell number."""

    status = 400

    def __init__(self, message: str, *, cell: int | None = None, line: str | None = None) -> None:
        where = f"cell {cell}" if cell is not None else "notebook"
        text = f"{where}: {message}" + (f"\n    {line}" if line else "")
        super().__init__(text, cell=cell, line=line)
        self.cell = cell
        self.line = line


def http_status(exc: BaseException) -> int:
    """The HTTP status for an exception; 500 for anything that is not ours."""
    return exc.status if isinstance(exc, PtcudaError) else 500
