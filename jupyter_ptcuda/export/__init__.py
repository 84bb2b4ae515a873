"""Notebook -> plain-Python ``train.py`` for batch jobs (``jupyter ptcuda export``).

Each cell goes through IPython's own input transformer, then its syntax tree is rewritten:
magics, ``!cmd`` and ``x = !cmd`` become plain Python (plus a few small helpers emitted at the
top of the script only when used), ``!pip install`` lines become ``requirements``, a cell
tagged ``parameters`` becomes command-line flags (with no such cell, top-level assignments of
literal values do), a cell tagged ``skip-export`` is left out. Execution counts out of cell order
are a warning. The script needs no IPython to run.

Modules: ``notebook`` (the entry point and result), ``cells`` (one cell), ``transform`` (the
tree rewrite), ``magics`` (what each magic becomes), ``interpolate`` (``{expr}``/``$name``),
``params`` (flags), ``assignments`` (flags without a parameters cell), ``order`` (execution
order), ``runtime`` (the helpers the script carries), ``cli``.
"""

from jupyter_ptcuda.export.notebook import ExportResult, export_notebook

__all__ = ["ExportResult", "export_notebook"]
