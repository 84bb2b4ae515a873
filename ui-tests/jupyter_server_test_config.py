"""Jupyter server for the UI tests (galata). One config for the three test servers; the
environment picks what differs (set by playwright.config.js):

- PTCUDA_UI_NAME: the server's name (gpu | binder | noext); its root dir and job store are
  ``.tmp/<name>/`` here, made fresh at each start;
- PTCUDA_UI_NVML / DOCKER_HOST: the GPUs (this config sets c.PtcudaExtension.nvml to it: the fake NVML is
  chosen by configuration only) and the Docker engine it sees;
- PTCUDA_UI_DISABLE_EXTENSION=1: run without the jupyter_ptcuda server extension.
"""

import os
import shutil
from pathlib import Path

from jupyterlab.galata import configure_jupyter_server

here = Path(__file__).resolve().parent
name = os.environ.get("PTCUDA_UI_NAME", "gpu")
base = here / ".tmp" / name
shutil.rmtree(base, ignore_errors=True)
root = base / "root"
root.mkdir(parents=True)
# Kernels and jobs run as 1000:100 in their containers: they must be able to write here.
if os.getuid() == 0:
    os.chown(root, 1000, 100)
os.environ["JUPYTERLAB_GALATA_ROOT_DIR"] = str(root)
os.environ["JUPYTER_PTCUDA_JOBS_DB"] = str(base / "jobs.sqlite")

configure_jupyter_server(c)  # noqa: F821 - `c` is the config object of jupyter's config loader

# Every job an MLflow run (when MLflow is installed) in a store of this server's own, made fresh.
c.JobManager.mlflow_tracking_uri = f"sqlite:///{base / 'mlflow.db'}"  # noqa: F821

c.ServerApp.allow_root = True  # noqa: F821
c.FileContentsManager.delete_to_trash = False  # noqa: F821
# Do not shut the kernels' containers down slowly at the end of the run.
c.ServerApp.shutdown_no_activity_timeout = 0  # noqa: F821
if os.environ.get("PTCUDA_UI_NVML"):
    c.PtcudaExtension.nvml = os.environ["PTCUDA_UI_NVML"]  # noqa: F821
if os.environ.get("PTCUDA_UI_DISABLE_EXTENSION") == "1":
    c.ServerApp.jpserver_extensions = {"jupyter_ptcuda": False}  # noqa: F821
