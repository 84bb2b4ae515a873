"""A notebook job's figures: the hooks in its train.py (run here against a small stand-in for
matplotlib.pyplot; the real one runs in tests/integration/test_job_figures.py), and how the server lists
and reads them from the job's artifacts/ folder without following anything the job planted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_ptcuda.errors import NotFound
from jupyter_ptcuda.export.runtime import add_figure_hooks
from jupyter_ptcuda.jobs import outputs as O
from jupyter_ptcuda.jobs.store import Job
from jupyter_ptcuda.nofollow import UnsafePath
from tests.unit.test_export_support import export

PNG = b"\x89PNG\r\n\x1a\n"
#: Enough of matplotlib.pyplot for the hooks: numbered figures, plot, show, close, and an exit handler
#: that closes every figure (as matplotlib's Gcf.destroy_all does).
PYPLOT = '''
import atexit
_figs, _cur = {}, [None]
class _Fig:
    def __init__(self, num):
        self.num, self.axes, self.lines = num, [], []
    def savefig(self, path, format=None, bbox_inches=None):
        with open(path, "wb") as f:
            f.write(b"\\x89PNG\\r\\n\\x1a\\n" + repr(self.axes).encode())
def figure(num=None):
    num = num if num is not None else max(_figs, default=0) + 1
    _figs.setdefault(num, _Fig(num))
    _cur[0] = num
    return _figs[num]
def gcf():
    return _figs[_cur[0]] if _cur[0] in _figs else figure()
def plot(*data):
    gcf().axes.append(list(data))
def get_fignums():
    return sorted(_figs)
def close(which="all"):
    _figs.clear()
    _cur[0] = None
def show():
    print("the real show")
atexit.register(close)
'''


@pytest.fixture
def fake_mpl(tmp_path):
    site = tmp_path / "site"
    (site / "matplotlib").mkdir(parents=True)
    (site / "matplotlib" / "__init__.py").write_text("")
    (site / "matplotlib" / "pyplot.py").write_text(PYPLOT)
    return site


def run_job(script: str, tmp_path: Path, site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "train.py"
    path.write_text(add_figure_hooks(script))
    out = tmp_path / "artifacts"
    out.mkdir(exist_ok=True)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site),
            "JUPYTER_PTCUDA_OUTPUT_DIR": str(out)}
    return subprocess.run([sys.executable, "-S", str(path)], cwd=tmp_path, env={**base, **env}, capture_output=True,
                          text=True, timeout=60)


def saved(tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "artifacts" / "figures"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*"))} if folder.exists() else {}


CELLS = [
    "import matplotlib.pyplot as plt\nplt.plot(1)",           # cell 1: saved when cell 2 begins
    "# a markdown cell follows",                              # cell 2: draws nothing
    "plt.plot(2)\nplt.show()\nplt.plot(3)\nplt.show()",      # cell 4: two plt.show()
    "plt.figure()\nx = 1",                                     # cell 5: an empty figure (Jupyter shows none)
    "plt.plot(5)",                                             # cell 6: saved at the end of the script
]


def notebook_script() -> str:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    from jupyter_ptcuda.export import export_notebook

    cells = [new_code_cell(CELLS[0]), new_code_cell(CELLS[1]), new_markdown_cell("# Plots"),
             *[new_code_cell(c) for c in CELLS[2:]]]
    return export_notebook(new_notebook(cells=cells)).script


def test_figures_are_saved_per_cell_at_show_and_at_cell_end(tmp_path, fake_mpl):
    proc = run_job(notebook_script(), tmp_path, fake_mpl)
    assert proc.returncode == 0, proc.stderr
    files = saved(tmp_path)
    assert list(files) == ["cell-1-1.png", "cell-4-1.png", "cell-4-2.png", "cell-6-1.png"]
    assert all(data.startswith(PNG) for data in files.values())
    assert files["cell-4-2.png"].endswith(b"[[3]]")  # show() closed the figure of plot(2)
    assert "the real show" not in proc.stdout
    assert "<Figure saved: figures/cell-4-1.png>" in proc.stdout.splitlines()


def test_a_failing_cell_still_saves_its_figures(tmp_path, fake_mpl):
    script = export("import matplotlib.pyplot as plt", "plt.plot(1)\nraise SystemExit(3)").script
    proc = run_job(script, tmp_path, fake_mpl)
    assert proc.returncode == 3 and list(saved(tmp_path)) == ["cell-2-1.png"]


def test_only_rank_0_saves_and_nothing_outside_a_job(tmp_path, fake_mpl):
    script = export("import matplotlib.pyplot as plt\nplt.plot(1)\nplt.show()").script
    assert run_job(script, tmp_path, fake_mpl, RANK="1").returncode == 0 and saved(tmp_path) == {}
    proc = run_job(script, tmp_path, fake_mpl, JUPYTER_PTCUDA_OUTPUT_DIR="")
    assert "the real show" in proc.stdout and saved(tmp_path) == {}


def test_pyplot_imported_before_the_first_cell(tmp_path, fake_mpl):
    script = "import matplotlib.pyplot as plt\n" + export("plt.plot(1)\nplt.show()").script.split("\n", 1)[1]
    assert run_job(script, tmp_path, fake_mpl).returncode == 0 and list(saved(tmp_path)) == ["cell-1-1.png"]


def test_hooks_go_after_code_cell_titles_only():
    nb_script = export("x = '''\n# %% cell 7\n'''", ("y = 1", ["skip-export"]), "z = 2").script
    hooked = add_figure_hooks(nb_script)
    assert "# %% cell 1\n_new_cell(1)\nx = '''\n# %% cell 7\n'''" in hooked
    assert "_new_cell(7)" not in hooked and "_new_cell(2)" not in hooked
    assert "# %% cell 3\n_new_cell(3)\n" in hooked
    assert hooked.index("def _new_cell(") < hooked.index("# %% cell 1")
    compile(hooked, "train.py", "exec")
    assert add_figure_hooks("print(1)\n") == "print(1)\n"


# ---- the server side: listing and reading artifacts/figures --------------------------------------


@pytest.fixture
def job(tmp_path):
    out = O.make_output_dir(str(tmp_path), "j1", "")
    (out / "artifacts" / "figures").mkdir()
    return Job(id="j1", output_dir=str(out))


def figures_dir(job: Job) -> Path:
    return Path(job.output_dir) / "artifacts" / "figures"


def test_figures_are_listed_by_cell_and_number(job):
    for name in ["cell-12-1.png", "cell-3-2.png", "cell-3-1.png", "notes.txt", "cell-x-1.png"]:
        (figures_dir(job) / name).write_bytes(PNG + b"data")
    got = O.list_figures(job)
    assert [f["name"] for f in got] == ["cell-3-1.png", "cell-3-2.png", "cell-12-1.png"]
    assert got[0] == {"name": "cell-3-1.png", "cell": 3, "index": 1, "size": 12,
                      "path": "artifacts/figures/cell-3-1.png"}
    with O.open_figure(job, "cell-12-1.png") as f:
        assert f.read() == PNG + b"data"
    O.write_manifest(job)
    manifest = json.loads((Path(job.output_dir) / "manifest.json").read_text())
    assert [f["name"] for f in manifest["figures"]] == ["cell-3-1.png", "cell-3-2.png", "cell-12-1.png"]


def test_no_figures(tmp_path):
    assert O.list_figures(Job(id="j", output_dir=str(tmp_path / "none"))) == []
    with pytest.raises(NotFound):
        O.open_figure(Job(id="j", output_dir=str(tmp_path)), "cell-1-1.png")


@pytest.mark.parametrize("name", ["../manifest.json", "cell-1-1.png/..", "job.log", "cell-1-1.PNG", "cell-1-1.png\0"])
def test_only_figure_names_are_read(job, name):
    with pytest.raises(NotFound):
        O.open_figure(job, name)


def test_what_a_job_plants_is_not_read(job, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b"secret")
    folder = figures_dir(job)
    os.symlink(secret, folder / "cell-1-1.png")  # a link
    os.link(secret, folder / "cell-2-1.png")  # a second name of another file
    (folder / "cell-3-1.png").write_bytes(b"<script>not a png</script>")
    os.mkfifo(folder / "cell-4-1.png")
    assert O.list_figures(job) == [{"name": "cell-3-1.png", "cell": 3, "index": 1, "size": 26,
                                    "path": "artifacts/figures/cell-3-1.png"}]
    for name in ["cell-1-1.png", "cell-2-1.png", "cell-3-1.png", "cell-4-1.png"]:
        with pytest.raises(UnsafePath):
            O.open_figure(job, name)


def test_a_linked_figures_folder_is_not_followed(job, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a server that is not root reads with its user's own rights, links included")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cell-1-1.png").write_bytes(PNG)
    figures_dir(job).rmdir()
    os.symlink(elsewhere, figures_dir(job))
    assert O.list_figures(job) == []
    with pytest.raises(UnsafePath):
        O.open_figure(job, "cell-1-1.png")
