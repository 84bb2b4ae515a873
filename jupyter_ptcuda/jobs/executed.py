"""The executed notebook of a notebook job: ``outputs/<job>/<name>.ipynb``, each cell with its outputs.

A notebook job's ``train.py`` (``export.runtime._cell_streams``) copies what each cell writes to stdout and
stderr to ``artifacts/.cells/<N>.stdout|.stderr`` (N: the cell's position in the notebook, markdown cells
counted, as in ``# %% cell N``); its figures are ``artifacts/figures/cell-<N>-<k>.png``. When the job has
ended, :func:`write_executed` puts them back into the notebook it came from: a ``stream`` output per
stream, a ``display_data`` per figure, and for a failed job an ``error`` output (the traceback) in the
cell that was running. The result opens in JupyterLab like any executed notebook (what jupyter-scheduler
users get from a notebook job), and the MLflow run gets it as an artifact (:mod:`.tracking`).

The ``.cells`` files are the job's (hostile until read): read through no link, regular files with one
link, at most :data:`MAX_STREAM` bytes each. The notebook is read through no link too, and only used when
its sha256 is still the job's (an edited notebook would get outputs in the wrong cells).
Called (blocking, in a worker thread) by ``JobLifecycle._finalise``; never raises.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..nofollow import UnsafePath, folder, open_regular, read_bytes
from . import outputs as O
from .store import COMPLETED, Job

CELLS = ".cells"  # in artifacts/
MAX_STREAM = 4 << 20
MAX_NOTEBOOK = 64 << 20
_FILE = re.compile(r"^(\d{1,6})\.(stdout|stderr)$")
_TRACEBACK = "Traceback (most recent call last):"
log = logging.getLogger(__name__)


def executed_name(job: Job) -> str | None:
    """``<notebook name>.ipynb`` in the job's folder, or None for a script job."""
    return Path(job.notebook).name if job.notebook else None


def _streams(out_dir: str) -> dict[int, dict[str, str]]:
    """{cell: {"stdout": text, "stderr": text}} from ``artifacts/.cells``."""
    found: dict[int, dict[str, str]] = {}
    try:
        with folder(Path(out_dir) / O.ARTIFACTS / CELLS) as dfd, os.scandir(dfd) as entries:
            names = [e.name for e in entries if _FILE.match(e.name)]
            for name in sorted(names)[:4000]:
                match = _FILE.match(name)
                assert match is not None
                try:
                    f = os.fdopen(open_regular(dfd, name, name), "rb")
                except (OSError, UnsafePath):
                    continue
                with f:
                    if os.fstat(f.fileno()).st_nlink != 1:
                        continue
                    data = f.read(MAX_STREAM + 1)
                text = data[:MAX_STREAM].decode("utf-8", "replace")
                if len(data) > MAX_STREAM:
                    text += f"\n[jupyter-ptcuda: cut at {MAX_STREAM >> 20} MiB; job.log has all of it]\n"
                found.setdefault(int(match.group(1)), {})[match.group(2)] = text
    except (OSError, UnsafePath):
        return {}
    return found


def _error(stderr: str) -> tuple[str, dict[str, Any] | None]:
    """(stderr before the traceback, an nbformat error output) of a cell whose stderr ends in a traceback."""
    at = stderr.rfind(_TRACEBACK)
    if at < 0:
        return stderr, None
    lines = stderr[at:].rstrip("\n").splitlines()
    last = lines[-1] if lines else ""
    ename, _, evalue = last.partition(": ")
    import nbformat

    return stderr[:at], nbformat.v4.new_output("error", ename=ename.strip() or "Error", evalue=evalue.strip(),
                                               traceback=lines)


def _figures(job: Job) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for fig in O.list_figures(job):
        try:
            with O.open_figure(job, fig["name"]) as f:
                data = f.read(O.MAX_FIGURE_BYTES + 1)
        except Exception:  # noqa: BLE001 - a figure that cannot be read is left out
            continue
        out.setdefault(fig["cell"], []).append(base64.b64encode(data).decode("ascii"))
    return out


def build(job: Job, source: bytes) -> Any:
    """The executed notebook (an nbformat node) from the job's notebook ``source`` and its cell files."""
    import nbformat

    nb = nbformat.reads(source.decode("utf-8"), as_version=4)
    streams = _streams(job.output_dir)
    figures = _figures(job)
    ran = sorted(set(streams) | set(figures))
    failing = ran[-1] if ran and job.state != COMPLETED else None
    count = 0
    for n, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        outputs: list[Any] = []
        parts = streams.get(n, {})
        if parts.get("stdout"):
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=parts["stdout"]))
        stderr, error = parts.get("stderr", ""), None
        if n == failing:
            stderr, error = _error(stderr)
        if stderr:
            outputs.append(nbformat.v4.new_output("stream", name="stderr", text=stderr))
        for png in figures.get(n, []):
            outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png}))
        if error is not None:
            outputs.append(error)
        cell.outputs = outputs
        if n in ran:
            count += 1
            cell.execution_count = count
        else:
            cell.execution_count = None
    nb.metadata["jupyter_ptcuda"] = {"job_id": job.id, "state": job.state, "exit_code": job.exit_code,
                                     "image_digest": job.image_digest, "parameters": job.parameters}
    return nb


def write_executed(job: Job) -> str | None:
    """Write ``outputs/<job>/<name>.ipynb``; its path, or None (a script job, an edited notebook, an error)."""
    name = executed_name(job)
    if not name or not job.output_dir or not job.notebook:
        return None
    try:
        source = read_bytes(job.notebook)
        if len(source) > MAX_NOTEBOOK:
            return None
        if job.notebook_sha256 and hashlib.sha256(source).hexdigest() != job.notebook_sha256:
            log.info("jupyter-ptcuda: job %s: %s changed since the job started; no executed notebook", job.id, name)
            return None
        import nbformat

        text = nbformat.writes(build(job, source))
        path = os.path.join(job.output_dir, name)
        O.write_atomic(path, text.encode("utf-8"), server_folder=True)
        return path
    except Exception as exc:  # noqa: BLE001 - the job's outcome is recorded either way
        log.warning("jupyter-ptcuda: job %s: no executed notebook: %s", job.id, str(exc).splitlines()[0][:300])
        return None
