"""Helpers shared by the exporter tests (``from tests.unit.test_export_support import ...``), and a check
that the fixture notebooks in ``notebooks/`` are valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_ptcuda.export import ExportResult, export_notebook

NOTEBOOKS = Path(__file__).parent / "notebooks"


def notebook(*cells: str | tuple[str, list[str]], markdown: tuple[int, ...] = ()) -> dict:
    """A notebook of code cells; ``(source, tags)`` tags a cell; indexes in ``markdown`` are markdown."""
    out = []
    for i, cell in enumerate(cells):
        source, tags = (cell, []) if isinstance(cell, str) else cell
        if i in markdown:
            out.append(new_markdown_cell(source))
        else:
            out.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    return new_notebook(cells=out)


def export(*cells: str | tuple[str, list[str]], **options: object) -> ExportResult:
    return export_notebook(notebook(*cells), **options)  # type: ignore[arg-type]


def cell_code(result: ExportResult, n: int = 1) -> str:
    """The part of the script under ``# %% cell n``."""
    marker = f"# %% cell {n}"
    start = result.script.index(marker)
    end = result.script.find("\n# %% ", start + 1)
    return result.script[start:] if end < 0 else result.script[start:end]


def run_script(script: str, tmp_path: Path, *args: str, site: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a script with plain ``python -I -S``: no site-packages, so no IPython to lean on
    (``site=True``: with this venv's site-packages, for optional packages such as PyYAML)."""
    path = tmp_path / "train.py"
    path.write_text(script, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}
    flags = ["-I"] if site else ["-I", "-S"]
    return subprocess.run([sys.executable, *flags, str(path), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_fixture_notebooks_are_valid(path: Path) -> None:
    nbformat.validate(nbformat.read(path, as_version=4))
