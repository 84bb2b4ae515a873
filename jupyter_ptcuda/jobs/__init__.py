"""Batch jobs: a notebook (exported to ``train.py``) or a script, run to completion in a container.

``jupyter ptcuda run train.py --wait``, ``jupyter ptcuda jobs list|logs|cancel``, and the REST API
``{base_url}/jupyter-ptcuda/jobs``. Modules:

- :mod:`.request` — what a submission asks for, and the command line it becomes (pure).
- :mod:`.manager` — ``JobManager``: config, submit (export, pin the image, claim GPUs, start).
- :mod:`.lifecycle` — watch, finalise, cancel, reconcile, read/follow the output.
- :mod:`.store` — the SQLite job store. :mod:`.outputs` — ``outputs/<job-id>/`` files, path checks.
- :mod:`.cli` — the commands.
- :mod:`.tracking` — every job an MLflow run (``jupyter-ptcuda[mlflow]``), ``jobs register``;
  :mod:`.runstore` — reading the MLflow file store a job writes in its folder (no link, bounded);
  :mod:`.executed` — the executed notebook ``outputs/<job>/<name>.ipynb``; :mod:`.mlflow_ui` — the MLflow UI
  behind jupyter-server-proxy.

Containers (a job's spec, ``--from-kernel``, launching, logs) are the container service's
(:mod:`jupyter_ptcuda.containers`).
"""

from .request import JobRequest
from .store import Job, JobStore

__all__ = ["Job", "JobRequest", "JobStore"]
