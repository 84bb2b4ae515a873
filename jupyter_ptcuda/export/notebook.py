"""Notebook in, ``train.py`` out: :func:`export_notebook` and :class:`ExportResult`.

Called by the CLI (``cli.py``, ``jupyter ptcuda export``), by the jobs code that turns a
notebook into a batch job, and by the REST handler (off the event loop; it sends
:meth:`ExportResult.to_json`). Errors are :class:`~jupyter_ptcuda.errors.ExportError`
(naming the cell) or :class:`~jupyter_ptcuda.errors.NotFound` for a missing file.

Cell numbers: ``N`` in ``# %% cell N``, in the report and in errors is the cell's position in
the notebook counted from 1, markdown and raw cells included (what you count in JupyterLab).

After every cell is rewritten: with no cell tagged ``parameters``, top-level literal assignments
become the flags (``assignments.py``); the execution counts are checked against cell order
(``order.py``), and a broken order is the first warning and is printed by the script when it starts.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import nbformat

from jupyter_ptcuda.errors import ExportError, NotFound
from jupyter_ptcuda.export.assignments import infer_parameters, insert_overrides, rebinds
from jupyter_ptcuda.export.cells import cell_bound_names, parse, render_code, transform
from jupyter_ptcuda.export.context import ExportContext, split_lines
from jupyter_ptcuda.export.order import OrderCheck, check_order, order_warning
from jupyter_ptcuda.export.params import Param, check_flags, find_parameters, override_lines, parse_call
from jupyter_ptcuda.export.runtime import prelude
from jupyter_ptcuda.nofollow import read_bytes

SKIP_TAG = "skip-export"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's cell of the values of its last run


@dataclass
class ExportResult:
    """What :func:`export_notebook` produced; every field is plain JSON data.

    ``report``: one ``{"cell", "kind", "source", "action"}`` per rewrite, ``kind`` one of
    line_magic, cell_magic, shell, pip, parameters, skipped, dropped, commented.
    ``parameters``: name -> ``{"type": int|float|str|bool|json, "default": value, "cell": N,
    "inferred": bool}``; ``inferred`` when no cell is tagged parameters and the names are top-level
    assignments of literals (``assignments.py``), ``cell`` the cell of the parameters cell or assignment.
    ``execution_order``: ``{"out_of_order": [{"cell", "count", "after_cell", "after_count"}],
    "not_run": [cell, ...]}`` (``order.py``); when ``out_of_order`` is not empty the first warning
    says so, and the script prints it when it starts.
    """

    script: str
    notebook_sha256: str
    name: str
    report: list[dict[str, Any]] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    execution_order: dict[str, Any] = field(default_factory=lambda: {"out_of_order": [], "not_run": []})

    def to_json(self) -> dict[str, Any]:
        """Everything, as JSON-serialisable data (for the REST API)."""
        return asdict(self)


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def load(nb: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[nbformat.NotebookNode, bytes, str]:
    """The notebook (v4), the bytes its sha256 is taken of, and its name.

    For a file, the bytes are the file's; for an in-memory notebook, ``nbformat.writes`` plus a
    newline, which is what Jupyter saves (so the digest matches the saved file). A file is read
    through no symbolic link when we are root (:mod:`jupyter_ptcuda.nofollow`): the server checks a
    path, then exports it, and a link planted in between must not make it read another file.
    """
    if isinstance(nb, (str, os.PathLike)):
        path = Path(nb)
        try:
            raw = read_bytes(path)
        except FileNotFoundError:
            raise NotFound(f"notebook {path} does not exist") from None
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            node = nbformat.reads(raw.decode("utf-8"), as_version=4)
        except Exception as exc:
            raise ExportError(f"{path} is not a Jupyter notebook: {exc}") from None
        return node, raw, path.name
    try:
        node = nbformat.from_dict(dict(nb))
        if int(node.get("nbformat", 4)) < 4:
            node = nbformat.convert(node, 4)
        text = nbformat.writes(node, version=nbformat.NO_CONVERT)
    except Exception as exc:
        raise ExportError(f"not a Jupyter notebook: {exc}") from None
    return node, (text if text.endswith("\n") else text + "\n").encode("utf-8"), "notebook.ipynb"


def _check_language(node: nbformat.NotebookNode) -> None:
    meta = node.get("metadata") or {}
    language = (meta.get("kernelspec") or {}).get("language") or (meta.get("language_info") or {}).get("name")
    if language and str(language).lower() not in ("python", "python3"):
        raise ExportError(f"this is a {language} notebook; only Python notebooks can be exported")


def _markdown(n: int, src: str) -> str:
    body = "".join(f"# {line}".rstrip() + "\n" for line in src.strip("\n").splitlines())
    return f"# %% [markdown] cell {n}\n{body}"


def _compile_check(code: str, ctx: ExportContext) -> None:
    try:
        compile(code, f"<cell {ctx.cell}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        message = f"the exported code does not compile: {exc.msg}"
        if "await" in exc.msg:
            message = ("uses top-level await, which plain Python does not allow: "
                       "put the code in an `async def main()` and call `asyncio.run(main())`")
        lines = split_lines(code)
        text = exc.text or (lines[exc.lineno - 1] if exc.lineno and exc.lineno <= len(lines) else "")
        raise ExportError(message, cell=ctx.cell, line=text.strip() or None) from None


def _parameters(src: str, ctx: ExportContext) -> list[Param]:
    text = transform(src, ctx)
    params, skipped = find_parameters(parse(text, ctx), split_lines(text))
    check_flags(params, ctx.cell)
    for param in params:
        ctx.note("parameters", param.source, f"flag --{param.name.replace('_', '-')} ({param.kind})")
    for source, reason in skipped:
        ctx.note("parameters", source, f"not a flag: {reason}")
        ctx.warn(f"{source}: not a command-line flag ({reason})")
    return params


def export_notebook(
    nb: str | os.PathLike[str] | Mapping[str, Any],
    *,
    lenient: bool = False,
    echo_outputs: bool = False,
    name: str | None = None,
) -> ExportResult:
    """Export a notebook (path, ``NotebookNode`` or dict) to a plain-Python script.

    ``lenient``: comment out magics with no translation (with a warning) instead of raising
    ExportError. ``echo_outputs``: print each cell's last bare expression. ``name``: the
    notebook's name in the script's header and ``--help`` (default: the file name).
    """
    node, raw, default_name = load(nb)
    _check_language(node)
    sha = hashlib.sha256(raw).hexdigest()
    name = " ".join((name or default_name).split())
    ctx = ExportContext(lenient=lenient, echo_outputs=echo_outputs)
    ctx.render = lambda src, echo: render_code(src, ctx, echo)

    cells = list(node.get("cells") or [])
    code = [(n, c) for n, c in enumerate(cells, 1)
            if c.get("cell_type") == "code" and SKIP_TAG not in _tags(c) and INJECTED_TAG not in _tags(c)]
    params_cell = next((n for n, c in code if PARAMETERS_TAG in _tags(c)), None)
    bound: set[str] = set()
    for n, cell in code:
        ctx.cell = n
        bound |= cell_bound_names(_source(cell), ctx)
    ctx.bound = frozenset(bound)

    chunks: list[list[str]] = []  # [title, body] per part of the script, in notebook order
    code_parts: list[tuple[int, list[str], object]] = []  # (cell, its chunk, execution_count)
    params: list[Param] = []
    for n, cell in enumerate(cells, 1):
        ctx.cell, src, tags = n, _source(cell), _tags(cell)
        if cell.get("cell_type") == "markdown" and src.strip():
            chunks.append([_markdown(n, src), ""])
        if cell.get("cell_type") != "code":
            continue
        if SKIP_TAG in tags or INJECTED_TAG in tags:
            why = f"tagged {SKIP_TAG}" if SKIP_TAG in tags else f"papermill's {INJECTED_TAG}; flags set parameters"
            ctx.note("skipped", src.strip().splitlines()[0] if src.strip() else "", f"left out ({why})")
            chunks.append([f"# %% cell {n} (left out: {why})\n", ""])
            continue
        if not src.strip():
            continue
        if PARAMETERS_TAG in tags and n != params_cell:
            ctx.warn(f"tagged {PARAMETERS_TAG}, but cell {params_cell} is the parameters cell; exported as code")
        body = render_code(src, ctx, echo_outputs)
        if n == params_cell:
            params = _parameters(src, ctx)
            for param in params:
                param.cell = n
            body += override_lines(params)
        _compile_check(body, ctx)
        chunk = [f"# %% cell {n}" + (" (parameters)" if n == params_cell else "") + "\n", body]
        chunks.append(chunk)
        code_parts.append((n, chunk, cell.get("execution_count")))

    if params_cell is None:
        params = _inferred(code_parts, ctx)
    else:
        _rebound(params, params_cell, code_parts, ctx)
    order, order_text = _order(code_parts, ctx)
    ctx.report.sort(key=lambda entry: cast(int, entry["cell"]))  # notes added after the cells, in cell order

    ctx.cell = 0
    script = _assemble(name, sha, ctx, params, params_cell, ["".join(c) for c in chunks], order_text)
    try:
        compile(script, name, "exec", dont_inherit=True)
    except SyntaxError as exc:  # a bug here, not in the notebook
        raise ExportError(f"internal error, the script does not compile ({exc.msg}, line {exc.lineno}); "
                          "please report it with the notebook", line=exc.text) from None
    return ExportResult(
        script=script, notebook_sha256=sha, name=name, report=ctx.report, requirements=ctx.requirements,
        parameters={p.name: {"type": p.kind, "default": p.default, "cell": p.cell, "inferred": params_cell is None}
                    for p in params},
        warnings=ctx.warnings, execution_order=asdict(order),
    )


def _rebound(params: list[Param], params_cell: int, code_parts: list[tuple[int, list[str], object]],
             ctx: ExportContext) -> None:
    """Warn about a parameter set again below the parameters cell: the flag's value ends there."""
    for n, source, again in rebinds(params, [(m, c[1]) for m, c, _ in code_parts if m > params_cell]):
        ctx.cell = n
        ctx.warn(f"{source}: sets parameter {again} again, after the parameters cell (cell {params_cell}); "
                 f"from here on the script uses this value, not --{again.replace('_', '-')}'s")


def _order(code_parts: list[tuple[int, list[str], object]], ctx: ExportContext) -> tuple[OrderCheck, str | None]:
    """Check the execution counts of the cells that run in the script (``order.py``); a broken order is
    the first warning."""
    running = [(n, count) for n, chunk, count in code_parts if ast.parse(chunk[1]).body]
    order = check_order(running)
    text = order_warning(order, [n for n, _ in running])
    if text:
        ctx.warnings.insert(0, text)
    return order, text


def _inferred(code_parts: list[tuple[int, list[str], object]], ctx: ExportContext) -> list[Param]:
    """No parameters cell: top-level literal assignments become the flags (``assignments.py``); their
    override lines go into the cells' code, and the report says which names and why others are not."""
    found = infer_parameters([(n, chunk[1]) for n, chunk, _ in code_parts])
    for n, chunk, _ in code_parts:
        if n in found.inserts:
            chunk[1] = insert_overrides(chunk[1], found.inserts[n])
    for n, source, action in found.notes:
        ctx.cell = n
        ctx.note("parameters", source, action)
    return found.params


def _assemble(name: str, sha: str, ctx: ExportContext, params: list[Param], params_cell: int | None,
              chunks: list[str], order_text: str | None) -> str:
    if params_cell is None and not params:
        about = (f"{name}, exported by jupyter-ptcuda. The notebook has no cell tagged 'parameters' and no "
                 "top-level assignment of a literal value, so there are no flags.")
    elif params_cell is None:
        about = (f"{name}, exported by jupyter-ptcuda. No cell is tagged 'parameters': flags set the notebook's "
                 "top-level assignments of literal values (a flag's value replaces the assignment's); "
                 "--params-file FILE sets them from JSON, flags win.")
    else:
        about = (f"{name}, exported by jupyter-ptcuda. Flags set the variables of the parameters cell "
                 f"(cell {params_cell}); --params-file FILE sets them from JSON, flags win.")
    if params:
        ctx.use("_parse_params")
    else:  # no flags: `--help` (and a refusal of stray flags) needs argparse, not the parameter helpers
        ctx.need("argparse")
    ctx.need("os", *(["sys"] if order_text else []))
    imports, helpers = prelude(ctx.helpers, ctx.modules)
    head = [
        "#!/usr/bin/env python3",
        f"# Generated by `jupyter ptcuda export` from {name}",
        f"# notebook sha256: {sha}",
        "# '# %% cell N' marks the notebook's Nth cell (markdown cells count). `--help` lists the flags.",
    ]
    if ctx.futures:
        head.append(f"from __future__ import {', '.join(ctx.futures)}")
    prelude_parts = [
        "\n".join(imports) + '\n\nos.environ["MPLBACKEND"] = "Agg"  # no display in a batch job',
        helpers,
        (parse_call(params, about) if params else f"argparse.ArgumentParser(description={about!r}).parse_args()\n")
        + (f"print({'warning: ' + order_text!r}, file=sys.stderr)\n" if order_text else ""),
    ]
    top = "\n\n\n".join(p.strip("\n") for p in prelude_parts if p.strip())
    return "\n\n".join(["\n".join(head), top, *(c.strip("\n") for c in chunks)]) + "\n"

