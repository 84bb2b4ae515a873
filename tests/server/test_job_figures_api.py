"""Through a real Jupyter server (auth on) and the real engine, with the datasci test image: a notebook
job's matplotlib figures are saved per cell, listed in manifest.json and served; a notebook importing what
the image lacks is refused at submit (400) with the build command, and nothing of the job is left."""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from tests.datasci import containers_created, ensure_datasci_image
from tests.server.helpers import job_environment, wait_for
from tests.server.openapi_check import validate_response

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def datasci_image(engine, test_image):
    return ensure_datasci_image(engine, test_image)


@pytest.fixture
def jp_server_config(jp_server_config):
    return {**jp_server_config, "JobManager": {"cancel_grace": 2.0, "poll_interval": 0.5}}


@pytest.fixture(autouse=True)
def job_env(tmp_path, monkeypatch, jp_root_dir, datasci_image):
    """A private job store, the datasci image as the jobs' default, nb/ owned by the job user; no leftovers."""
    with job_environment(tmp_path, monkeypatch, jp_root_dir, datasci_image):
        yield


def write_notebook(root, rel: str, cells: list[tuple[str, str]]) -> str:
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nbformat.write(nbformat.v4.new_notebook(cells=[make[kind](src) for kind, src in cells]), root / rel)
    return rel


def terminal(status, body):
    return status == 200 and body["state"] not in ("queued", "running")


PLOTS = [
    ("code", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('loss')"),
    ("markdown", "## The second figure"),
    ("code", "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 1])\nplt.show()\nprint('plotted')"),
]


async def test_figures_of_two_cells_are_in_the_manifest_and_served(api, jp_fetch, jp_root_dir):
    rel = write_notebook(jp_root_dir, "nb/plots.ipynb", PLOTS)
    status, job, _ = await api("POST", "jobs", {"path": rel, "gpus": "none"})
    assert status == 201, job
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=180)
    status, log, _ = await api("GET", f"jobs/{job['id']}/log")
    assert (done["state"], done["exit_code"]) == ("completed", 0), log
    assert "<Figure saved: figures/cell-3-1.png>" in log and "plotted" in log

    names = ["cell-1-1.png", "cell-3-1.png"]
    folder = jp_root_dir / "nb" / "outputs" / job["id"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["name"] for f in manifest["figures"]] == names
    assert [f["path"] for f in manifest["figures"]] == [f"artifacts/figures/{n}" for n in names]
    for name in names:
        assert (folder / "artifacts" / "figures" / name).read_bytes().startswith(PNG)

    status, listed, resp = await api("GET", f"jobs/{job['id']}/figures")
    assert status == 200 and resp.headers["X-Ptcuda-Job-State"] == "completed"
    assert [(f["name"], f["cell"], f["index"]) for f in listed] == [("cell-1-1.png", 1, 1), ("cell-3-1.png", 3, 1)]
    assert listed[0]["path"] == f"nb/outputs/{job['id']}/artifacts/figures/cell-1-1.png"
    for name in names:
        r = await jp_fetch("jupyter-ptcuda", "jobs", job["id"], "figures", name)
        validate_response("GET", f"jobs/{job['id']}/figures/{name}", r.code, r.headers["Content-Type"], None)
        assert r.headers["Content-Type"] == "image/png" and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.body == (folder / "artifacts" / "figures" / name).read_bytes() and r.body.startswith(PNG)
    status, body, _ = await api("GET", f"jobs/{job['id']}/figures/cell-2-1.png")
    assert status == 404


async def test_a_notebook_importing_what_the_image_lacks_is_refused_at_submit(api, engine, jp_root_dir,
                                                                             datasci_image):
    rel = write_notebook(jp_root_dir, "nb/cv.ipynb", [("code", "import numpy as np\nimport pandas as pd"),
                                                      ("code", "import cv2\nimport seaborn as sns")])
    since = time.time()
    status, body, _ = await api("POST", "jobs", {"path": rel, "gpus": "none"})
    assert status == 400 and body["reason"] == "ConfigError"
    command = (f"jupyter ptcuda image build --base {datasci_image} --extra opencv-python --extra seaborn "
               f"--tag {datasci_image}")
    assert "opencv-python (import cv2, cell 2), seaborn (cell 2)" in body["message"]
    assert f"`{command}`" in body["message"]
    assert body["details"] == {"missing": "opencv-python seaborn", "command": command}
    assert "job" not in containers_created(engine, since)  # at most the one probe that asked the image
    assert (await api("GET", "jobs"))[1] == [] and not (jp_root_dir / "nb" / "outputs").exists()

    status, job, _ = await api("POST", "jobs", {"path": rel, "gpus": "none", "import_check": False})
    assert status == 201  # asked to skip the check: it runs, and fails as it would have
    done = await wait_for(api, f"jobs/{job['id']}", terminal, timeout=120)
    status, log, _ = await api("GET", f"jobs/{job['id']}/log")
    assert done["state"] == "failed" and "No module named 'cv2'" in log
