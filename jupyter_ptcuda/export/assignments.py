"""Parameters from plain assignments, for notebooks with no cell tagged ``parameters``.

``notebook.export_notebook`` calls :func:`infer_parameters` with every exported code cell as the
script has it (magics already rewritten), when no cell is tagged ``parameters``; and
:func:`rebinds` to warn about a tagged parameter set again further down.

Which names become flags: a name whose *first* module-level binding in the script is a statement
``NAME = <literal>`` (or ``NAME: T = <literal>``) at the top level of a cell, where the literal is
an int, float, str, bool, None, or a list/tuple/dict of those (``-1`` and ``1e-3`` included), as
for a parameters cell. The flag's value is assigned right after that statement (``-p NAME=V``
acts as if the line read ``NAME = V``), and after every later ``NAME = <the same literal>`` (a
repeated definition, such as makemore's ``block_size = 3`` in two cells). Left out, each with a
line in the report saying why: a name bound again in any other way further down (another value,
``+=``, a loop variable, an import, a ``def``, ``global NAME`` in a function: it is state the
notebook changes, and a flag that a later line silently replaces would mislead), a statement that
shares its line with other code, a value longer than :data:`MAX_DEFAULT` characters of JSON, a
flag already taken. Left out silently: private names (``_x``), empty lists/dicts/tuples (the
accumulators ``losses = []``), and everything that is not a literal.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from jupyter_ptcuda.export.context import split_lines
from jupyter_ptcuda.export.params import RESERVED_FLAGS, Param, _plain, flags_for, kind_of

#: The longest default (as JSON) a name may have to become a flag: longer ones are data, not settings.
MAX_DEFAULT = 200

_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Inferred:
    """What :func:`infer_parameters` found: the parameters (``Param.cell`` is the cell of the
    assignment); ``inserts``: cell -> ``[(line, name)]``, the override line goes after that line of the
    cell's code; ``notes``: ``(cell, source, action)`` report lines."""

    params: list[Param] = field(default_factory=list)
    inserts: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    notes: list[tuple[int, str, str]] = field(default_factory=list)


def _module_names(stmt: ast.stmt) -> Iterator[str]:
    """Names a top-level statement binds (or deletes) in the module's namespace (iteratively: a long
    expression is deep)."""
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
            for sub in ast.walk(node):  # a function that declares `global NAME` sets it when called
                if isinstance(sub, ast.Global):
                    yield from sub.names
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, _COMPREHENSIONS):  # its own scope, but `:=` binds in the module
            for sub in ast.walk(node):
                if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                    yield sub.target.id
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            yield node.id
        elif isinstance(node, ast.alias) and node.name != "*":
            yield (node.asname or node.name).split(".")[0]
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            yield node.name
        elif isinstance(node, ast.MatchMapping) and node.rest:
            yield node.rest
        todo.extend(reversed(list(ast.iter_child_nodes(node))))


def _literal(stmt: ast.stmt) -> tuple[str, str, object] | None:
    """``(name, kind, default)`` of a ``NAME = <literal of a JSON type>`` statement, else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target, value = stmt.targets[0], stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and stmt.simple:
        target, value = stmt.target, stmt.value
    else:
        return None
    if not isinstance(target, ast.Name):
        return None
    try:
        default = ast.literal_eval(value)
        kind = kind_of(default)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return (target.id, kind, _plain(default)) if kind is not None else None


@dataclass
class _Binding:
    cell: int
    stmt: ast.stmt
    source: str
    alone: bool  # no other statement starts on the statement's last line
    literal: tuple[str, str, object] | None


def _bindings(cells: list[tuple[int, str]]) -> dict[str, list[_Binding]]:
    """Every module-level binding of each name, in script order (first binding first)."""
    found: dict[str, list[_Binding]] = {}
    for cell, code in cells:
        lines = split_lines(code)
        body = ast.parse(code).body
        for i, stmt in enumerate(body):
            end = stmt.end_lineno or stmt.lineno
            alone = i + 1 == len(body) or body[i + 1].lineno > end
            source = lines[stmt.lineno - 1].strip() if stmt.lineno <= len(lines) else ast.unparse(stmt)
            literal = _literal(stmt)
            for name in dict.fromkeys(_module_names(stmt)):
                found.setdefault(name, []).append(_Binding(cell, stmt, source, alone,
                                                           literal if literal and literal[0] == name else None))
    return found


def _same(a: tuple[str, str, object] | None, b: tuple[str, str, object] | None) -> bool:
    """The same literal (``1`` is not ``1.0`` nor ``True``)."""
    return a is not None and b is not None and a[1] == b[1] and json.dumps(a[2]) == json.dumps(b[2])


def _why_not(param: Param, first: _Binding, later: list[_Binding], owner: dict[str, str]) -> str | None:
    """Why a literal assignment does not become a flag (None: it does)."""
    again = next((b for b in later if not (_same(b.literal, first.literal) and b.alone)), None)
    if again is not None:
        where = f"cell {again.cell}" if again.cell != first.cell else "this cell"
        return f"{where} sets {param.name} again further down ({again.source})"
    if not first.alone:
        return "shares its line with other code"
    if len(json.dumps(param.default)) > MAX_DEFAULT:
        return f"its value is longer than {MAX_DEFAULT} characters"
    taken = next((f for f in flags_for(param) if owner.get(f, param.name) != param.name), None)
    return f"its flag {taken} is already used by {owner[taken]}" if taken else None


def infer_parameters(cells: list[tuple[int, str]]) -> Inferred:
    """The parameters of a notebook without a parameters cell. ``cells``: ``(cell number, code)`` of
    the exported code cells, in order, as the script has them."""
    out = Inferred()
    owner: dict[str, str] = {flag: "the script itself" for flag in RESERVED_FLAGS}
    for name, bindings in _bindings(cells).items():
        first = bindings[0]
        if first.literal is None or name.startswith("_") or first.literal[2] in ([], {}):
            continue
        _, kind, default = first.literal
        param = Param(name, kind, default, first.source, first.cell)
        why = _why_not(param, first, bindings[1:], owner)
        if why:
            out.notes.append((first.cell, first.source, f"not a flag: {why}"))
            continue
        owner.update(dict.fromkeys(flags_for(param), name))
        out.params.append(param)
        flag = flags_for(param)[0]
        out.notes.append((first.cell, first.source, f"flag {flag} ({kind}): a top-level assignment, as no cell "
                                                    "is tagged parameters"))
        for b in bindings:
            out.inserts.setdefault(b.cell, []).append((b.stmt.end_lineno or b.stmt.lineno, name))
            if b is not first:
                out.notes.append((b.cell, b.source, f"{flag} sets this too (the same value as cell {first.cell})"))
    return out


def rebinds(params: list[Param], cells: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """``(cell, source, name)`` for the first binding of each parameter in ``cells`` (the cells after the
    parameters cell): from there on the script uses that value, not the flag's."""
    names = {p.name for p in params}
    seen: set[str] = set()
    out: list[tuple[int, str, str]] = []
    for name, bindings in _bindings(cells).items():
        if name in names and name not in seen:
            seen.add(name)
            out.append((bindings[0].cell, bindings[0].source, name))
    return sorted(out, key=lambda r: r[0])


def insert_overrides(code: str, inserts: list[tuple[int, str]]) -> str:
    """``code`` with ``NAME = _params.get('NAME', NAME)`` after each ``(line, name)``."""
    lines = split_lines(code)
    for line, name in sorted(inserts, reverse=True):
        if line <= len(lines) and not lines[line - 1].endswith("\n"):
            lines[line - 1] += "\n"
        flag = "--" + name.replace("_", "-")
        lines.insert(line, f"{name} = _params.get({name!r}, {name})  # {flag}\n")
    return "".join(lines)
