"""The papermill-style ``parameters`` cell, as command-line flags of the script.

``notebook.export_notebook`` calls :func:`find_parameters` on the first code cell tagged
``parameters`` (with no such cell, ``assignments.py`` finds them in the other cells, with the
same typing rules). Each top-level ``name = <literal>`` (or ``name: T = <literal>``) becomes a flag
typed from the literal: ``--lr 0.5`` (float), ``--epochs 3`` (int), ``--name x`` (str),
``--amp/--no-amp`` (bool), ``--layers '[64, 32]'`` (list/dict/None: JSON). ``--params-file`` takes
a JSON file of values; flags given explicitly win over it. The script parses its command line
first thing (``_parse_params`` from ``runtime.py``), so ``--help`` and a bad flag (exit 2) cost
nothing; the values are assigned right after the parameters cell, as papermill injects them.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass

from jupyter_ptcuda.errors import ExportError

_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}
#: Flags the script always has.
RESERVED_FLAGS = frozenset({"-h", "--help", "--params-file"})


@dataclass
class Param:
    """One flag: the variable, its kind (int/float/str/bool/json), default, the source line, and the
    cell it is assigned in (set by ``notebook.py``, or by ``assignments.py`` with no parameters cell)."""

    name: str
    kind: str
    default: object
    source: str
    cell: int | None = None


def _plain(value: object) -> object:
    """Tuples as lists, recursively (what a JSON round trip gives back)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def kind_of(value: object) -> str | None:
    """The flag type for a literal, or None when it cannot round-trip through JSON."""
    if type(value) in _KINDS:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:  # 1e999 is inf
            return None
        return _KINDS[type(value)]
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == _plain(value)
    except (TypeError, ValueError):
        return None
    return "json" if same else None


def find_parameters(tree: ast.Module, lines: list[str]) -> tuple[list[Param], list[tuple[str, str]]]:
    """The flags of a parameters cell, and ``(source, reason)`` for assignments that are not."""
    found: dict[str, Param] = {}
    skipped: list[tuple[str, str]] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        source = lines[stmt.lineno - 1].strip() if stmt.lineno <= len(lines) else ast.unparse(stmt)
        if not isinstance(target, ast.Name):
            skipped.append((source, "not a single name"))
            continue
        if target.id.startswith("_"):
            skipped.append((source, "a private name"))
            continue
        try:
            default = ast.literal_eval(value)
            kind = kind_of(default)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            kind = None
        if kind is None:
            skipped.append((source, "not a literal of a JSON type"))
            found.pop(target.id, None)
            continue
        found[target.id] = Param(target.id, kind, _plain(default), source)
    return list(found.values()), skipped


def flags_for(param: Param) -> list[str]:
    """The option strings of a parameter (``--batch-size`` and ``--batch_size``; ``--no-...``)."""
    flags = ["--" + param.name.replace("_", "-")] + (["--" + param.name] if "_" in param.name else [])
    if param.kind == "bool":
        flags += ["--no-" + f[2:] for f in flags]
    return flags


def check_flags(params: list[Param], cell: int) -> None:
    """Fail the export when two parameters (or one and ``--params-file``) share a flag."""
    owner: dict[str, str] = {flag: "the script itself" for flag in RESERVED_FLAGS}
    for param in params:
        for flag in flags_for(param):
            if flag in owner and owner[flag] != param.name:
                raise ExportError(f"parameter {param.name}: its flag {flag} is already used by {owner[flag]}; "
                                  "rename the variable", cell=cell, line=param.source)
            owner[flag] = param.name


def parse_call(params: list[Param], description: str) -> str:
    """``_params = _parse_params({...}, description)``, one parameter per line."""
    entries = "".join(f"    {p.name!r}: ({p.kind!r}, {p.default!r}),\n" for p in params)
    spec = "{\n" + entries + "}" if entries else "{}"
    return f"_params = _parse_params({spec}, {description!r})\n"


def override_lines(params: list[Param]) -> str:
    """The assignments after the parameters cell: flag values replace the cell's defaults."""
    if not params:
        return ""
    body = "".join(f"{p.name} = _params.get({p.name!r}, {p.name})\n" for p in params)
    return "# values from the command line (--NAME / --params-file) replace the defaults above\n" + body
