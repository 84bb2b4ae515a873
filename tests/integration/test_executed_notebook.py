"""A notebook job yields outputs/<job>/<name>.ipynb with each cell's output in place, logged in its MLflow run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from jupyter_ptcuda.jobs.request import JobRequest
from tests.integration.test_jobs import jobs_db, jobs_manager  # noqa: F401

pytestmark = pytest.mark.integration


async def test_a_failed_notebook_job_gives_the_executed_notebook(engine, test_image, notebook_dir, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Training"),
        nbformat.v4.new_code_cell("lr = 0.01", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(f'lr={lr}')\n!echo shell says hi"),
        nbformat.v4.new_code_cell("import sys\nprint('careful', file=sys.stderr)"),
        nbformat.v4.new_code_cell("raise ValueError('boom')"),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    path = notebook_dir / "train.ipynb"
    nbformat.write(nb, path)
    store = "sqlite:///" + str(tmp_path / "mlflow.db")
    async with jobs_manager(engine, mlflow_tracking=True, mlflow_tracking_uri=store) as mgr:
        job = await mgr.submit(JobRequest(path=str(path), image=test_image, gpus="none", params={"lr": 0.1}),
                               watch=False)
        job = await mgr.watch(job.id)
    log = Path(job.log_path).read_bytes()
    assert job.state == "failed", log
    assert b"lr=0.1\nshell says hi\n" in log and b"careful" in log and b"ptcuda-cell" not in log
    done = nbformat.read(Path(job.output_dir) / "train.ipynb", as_version=4)
    cells = done.cells
    assert [(o.output_type, o.name, o.text) for o in cells[2].outputs] == [("stream", "stdout", "lr=0.1\nshell says hi\n")]
    assert [(o.output_type, o.text) for o in cells[3].outputs] == [("stream", "careful\n")]
    (error,) = [o for o in cells[4].outputs if o.output_type == "error"]
    assert (error.ename, error.evalue) == ("ValueError", "boom") and "Traceback" in error.traceback[0]
    assert cells[5].outputs == [] and cells[5].execution_count is None
    assert [c.execution_count for c in cells[1:5]] == [1, 2, 3, 4]
    assert done.metadata["jupyter_ptcuda"]["job_id"] == job.id
    client = MlflowClient(tracking_uri=store)
    run = client.get_run((await mgr.get(job.id)).meta["mlflow"]["run_id"])
    assert run.info.status == "FAILED" and run.data.params["lr"] == "0.1"
    assert client.get_experiment(run.info.experiment_id).name == "train.ipynb"
    assert "train.ipynb" in {f.path for f in client.list_artifacts(run.info.run_id)}
