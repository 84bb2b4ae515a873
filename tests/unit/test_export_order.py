"""Notebooks saved with execution counts out of cell order: the export warns, naming the cells (CLI,
REST result, and the script's own log), because the script runs top to bottom and can fail where the
notebook did not. ``makemore_part2_mlp.ipynb`` is Karpathy's real notebook (see its LICENSE file)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_ptcuda.export import export_notebook
from jupyter_ptcuda.export.cli import main
from tests.unit.test_export_support import NOTEBOOKS, run_script

MAKEMORE = NOTEBOOKS / "makemore_part2_mlp.ipynb"
TORCH_PYTHON = os.environ.get("PTCUDA_TORCH_PYTHON", "/tmp/torchvenv/bin/python")


def counted(*cells: tuple[str, int | None]) -> dict:
    """A notebook of code cells with these execution counts."""
    return new_notebook(cells=[new_code_cell(src, execution_count=n) for src, n in cells])


def order_warnings(result) -> list[str]:
    return [w for w in result.warnings if w.startswith("cells ran out of order")]


def test_counts_in_order_give_no_warning() -> None:
    result = export_notebook(counted(("a = 1", 1), ("b = a", 2), ("print(b)", 5)))
    assert order_warnings(result) == []
    assert result.execution_order == {"out_of_order": [], "not_run": []}


def test_out_of_order_cells_are_named_with_their_counts() -> None:
    nb = counted(("x = 1", 4), ("y = x + 1", 9), ("print(y)", 3), ("z = 2", 10), ("print(z)", 10))
    nb.cells.insert(1, new_markdown_cell("# notes"))  # markdown counts in the cell numbers
    result = export_notebook(nb)
    assert result.warnings[0] == (
        "cells ran out of order: cell 4 (In [3]) is below cell 3 (In [9]) but ran before it; "
        "cell 6 (In [10]) is below cell 5 (In [10]) but has the same count as it. "
        "The script runs every cell once, top to bottom, so it can fail (or compute something else) where the "
        "notebook did not. Check with Kernel > Restart Kernel and Run All Cells, save, and export again.")
    assert result.execution_order["out_of_order"] == [
        {"cell": 4, "count": 3, "after_cell": 3, "after_count": 9},
        {"cell": 6, "count": 10, "after_cell": 5, "after_count": 10},
    ]


def test_cells_never_run_are_not_a_warning_by_themselves() -> None:
    result = export_notebook(counted(("a = 1", 1), ("b = 2", None), ("print(a, b)", 2), ("c = 3", None)))
    assert order_warnings(result) == []
    assert result.execution_order == {"out_of_order": [], "not_run": [2, 4]}
    cleared = export_notebook(counted(("a = 1", None), ("print(a)", None)))  # "Clear All Outputs"
    assert order_warnings(cleared) == [] and cleared.execution_order["not_run"] == [1, 2]


def test_never_run_cells_are_named_when_the_order_is_broken() -> None:
    result = export_notebook(counted(("a = 1", 5), ("b = 2", None), ("c = 3", None), ("print(a)", 2)))
    assert "Cells 2-3 have no execution count (never run, or output cleared)" in result.warnings[0]


def test_cells_that_do_not_run_in_the_script_are_left_out_of_the_order() -> None:
    nb = counted(("a = 1", 7), ("print('notebook only')", 9), ("# just a comment", 1), ("%matplotlib inline", 2),
                 ("print(a)", 8))
    nb.cells[1].metadata["tags"] = ["skip-export"]
    result = export_notebook(nb)
    assert order_warnings(result) == []  # 7, 8: the skipped, comment-only and display-only cells do not run


def test_many_out_of_order_cells_are_counted() -> None:
    result = export_notebook(counted(("a = 1", 100), *((f"print({i})", i) for i in range(1, 12))))
    assert "cell 9 (In [8]) is below cell 1 (In [100])" in result.warnings[0]
    assert "cell 10 (In [9])" not in result.warnings[0] and "; and 3 more cells." in result.warnings[0]
    assert len(result.execution_order["out_of_order"]) == 11


def test_cli_export_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MAKEMORE), "-o", str(tmp_path / "train.py")]) == 0
    err = capsys.readouterr().err
    assert ("warning: cells ran out of order: cell 32 (In [710]) is below cell 31 (In [798]) but ran before it."
            in err.splitlines()[-2])
    assert "Cells 1-6, 8-20 have no execution count" in err


def test_the_script_says_so_in_its_log_before_the_first_cell(tmp_path: Path) -> None:
    script = export_notebook(counted(("print('first cell')", 2), ("print('second cell')", 1))).script
    proc = run_script(script, tmp_path)
    assert proc.returncode == 0
    assert proc.stderr.startswith("warning: cells ran out of order: cell 2 (In [1]) is below cell 1 (In [2])")
    assert proc.stdout.splitlines() == ["first cell", "second cell"]
    assert "warning" not in run_script(export_notebook(counted(("print(1)", 1))).script, tmp_path).stderr
    assert run_script(script, tmp_path, "--help").stderr == ""  # --help stays clean


def test_makemore_export_report() -> None:
    result = export_notebook(MAKEMORE)
    assert result.execution_order["out_of_order"] == [{"cell": 32, "count": 710, "after_cell": 31, "after_count": 798}]
    assert result.execution_order["not_run"] == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]


def test_makemore_script_fails_where_the_notebook_showed_nothing(tmp_path: Path) -> None:
    """With torch (``$PTCUDA_TORCH_PYTHON``): cell 20 never ran in the saved notebook, and fails in train.py;
    the log says so first."""
    if not os.path.exists(TORCH_PYTHON):
        if os.environ.get("CI"):
            pytest.fail(f"CI: set PTCUDA_TORCH_PYTHON or create {TORCH_PYTHON} with pip install torch")
        pytest.skip(f"no python with CPU torch at {TORCH_PYTHON}")
    (tmp_path / "train.py").write_text(export_notebook(MAKEMORE).script)
    (tmp_path / "names.txt").write_text("emma\nolivia\nava\nisabella\nsophia\ncharlotte\n")
    (tmp_path / "matplotlib").mkdir()  # the notebook imports pyplot; the torch venv need not have it
    (tmp_path / "matplotlib" / "__init__.py").write_text("")
    (tmp_path / "matplotlib" / "pyplot.py").write_text("def __getattr__(name):\n    return lambda *a, **k: None\n")
    proc = subprocess.run([TORCH_PYTHON, "-s", "train.py", "--block-size", "4"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr.startswith("warning: cells ran out of order: cell 32 (In [710]) is below cell 31 (In [798])")
    assert "loss = -prob[torch.arange(32), Y].log().mean()" in proc.stderr and "IndexError: shape mismatch" in proc.stderr
    assert "torch.Size([27, 4]) torch.Size([27])" in proc.stdout  # --block-size 4 held in cell 7's build_dataset too
