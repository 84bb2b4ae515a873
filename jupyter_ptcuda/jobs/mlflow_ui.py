"""The MLflow UI inside JupyterLab: a jupyter-server-proxy server (a launcher item), on the jobs' store.

``pip install "jupyter-ptcuda[mlflow]"`` brings jupyter-server-proxy, which finds :func:`setup_mlflow_ui`
through the ``jupyter_serverproxy_servers`` entry point: a *MLflow* item in JupyterLab's launcher opens
``{base_url}mlflow/``, an authenticated route of the Jupyter server to ``mlflow ui`` on 127.0.0.1 (started
on first use, by the proxy, as the server's user). The UI shows the store jobs are tracked in
(``c.JobManager.mlflow_tracking_uri``, read from the running server's job manager; else
``$MLFLOW_TRACKING_URI`` or the default SQLite file). A team's tracking server (http/https) has a UI of its
own: open it directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .tracking import default_uri, sqlite_path


def store_uri() -> str:
    """The tracking URI of the running server's job manager (config included), else the default one."""
    try:
        from jupyter_server.serverapp import ServerApp

        if ServerApp.initialized():
            state = ServerApp.instance().web_app.settings.get("jupyter_ptcuda_state")
            if state is not None and state.jobs is not None:
                return str(state.jobs.tracker.uri)
    except Exception:  # noqa: BLE001 - no server here: the default
        pass
    from jupyter_core.paths import jupyter_data_dir

    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(jupyter_data_dir())


def command(port: int) -> list[str]:
    """``mlflow ui`` on 127.0.0.1:``port`` for the jobs' store (called by jupyter-server-proxy on first use),
    under :func:`main`, which ends it (and the processes it starts) with the proxy's process or the server."""
    return [sys.executable, "-m", "jupyter_ptcuda.jobs.mlflow_ui", "--", *mlflow_args(port)]


def mlflow_args(port: int) -> list[str]:
    uri = store_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"jobs are tracked in {uri}, which has its own MLflow UI: open it there.")
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    db = sqlite_path(uri)
    if db:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        args += ["--default-artifact-root", (Path(db).resolve().parent / "mlartifacts").as_uri()]
    return args


def setup_mlflow_ui() -> dict[str, Any]:
    """jupyter-server-proxy's description of the MLflow UI server (entry point ``mlflow``)."""
    return {"command": command, "timeout": 120, "absolute_url": False, "new_browser_tab": True,
            "launcher_entry": {"enabled": True, "title": "MLflow", "category": "Other"}}


def main(argv: list[str] | None = None) -> int:
    """``python -m jupyter_ptcuda.jobs.mlflow_ui -- CMD...``: run CMD (``mlflow ui``) in a process group of its
    own; on SIGTERM/SIGINT, or when the Jupyter server that started this is gone, end the whole group
    (``mlflow ui`` starts uvicorn workers that would outlive it). MLflow's job runner is off: the UI only reads."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m jupyter_ptcuda.jobs.mlflow_ui -- mlflow ui ...", file=sys.stderr)
        return 2
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    child = subprocess.Popen(args, start_new_session=True, env=env)
    parent = os.getppid()

    def stop(*_: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while child.poll() is None:
        if os.getppid() != parent:
            stop()
        time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    return child.returncode or 0


if __name__ == "__main__":
    raise SystemExit(main())
