"""IPython's ``{expr}`` / ``$name`` expansion, done at export time as an f-string.

``magics.py`` calls :func:`expand` for ``!cmd``, ``x = !cmd`` and the line magics IPython
expands (``%cd``, ``%env``, ``%run``, ``%%writefile``'s file name, alias magics).

IPython expands these strings at run time with ``DollarFormatter`` (``{expr}`` is any Python
expression, ``$name`` / ``$a.b`` a name or attribute outside single quotes, ``{{`` and ``$$``
escape), and when any field fails to evaluate it runs the string *unexpanded*: that is why
``!awk '{print $1}' f`` works. We take the same decision statically: the string is expanded
when every field parses as Python and names only things the notebook defines (or builtins);
otherwise it is passed on exactly as written, as IPython would.

In shell commands each value is quoted for where it lands: ``shlex.quote`` outside quotes,
backslash escapes inside ``"..."``, ``'\\''`` inside ``'...'`` (IPython does not quote at
all; a value with a space or ``;`` is one argument here, which is what was meant).
"""

from __future__ import annotations

import ast
import string
from dataclasses import dataclass

from jupyter_ptcuda.export.context import ExportContext

#: The helper that quotes a value for each shell quoting state (see ``runtime.py``).
QUOTE_HELPERS = {"": "_q", '"': "_q_dq", "'": "_q_sq"}


@dataclass
class Field:
    """One ``{expr}`` or ``$name`` field; ``source`` is the Python expression."""

    source: str
    conversion: str | None = None


def split_fields(text: str) -> list[str | Field] | None:
    """Split like IPython's ``DollarFormatter.parse``; ``None`` when the braces do not parse."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return None
    parts: list[str | Field] = []
    for literal, name, spec, conversion in parsed:
        parts.extend(_dollar_fields(literal))
        if name is not None:
            parts.append(Field(name + (":" + spec if spec else ""), conversion))
    return parts


def _is_word(char: str) -> bool:
    return char.isalnum() or char in "_."


def _dollar_fields(literal: str) -> list[str | Field]:
    """``$name`` fields of one literal chunk: not inside single quotes, ``$$name`` -> ``$name``."""
    parts: list[str | Field] = []
    pending, start, i = "", 0, 0
    while (i := literal.find("$", i)) >= 0:
        escaped = literal.startswith("$", i + 1)
        begin = i + 2 if escaped else i + 1
        end = begin
        while end < len(literal) and _is_word(literal[end]):
            end += 1
        # IPython ignores a $ followed by an odd number of single quotes (inside '...').
        if end == begin or literal.count("'", end) % 2:
            i += 1
            continue
        if escaped:
            pending += literal[start:i] + literal[i + 1 : end]
        else:
            parts.append(pending + literal[start:i])
            parts.append(Field(literal[begin:end]))
            pending = ""
        start = i = end
    parts.append(pending + literal[start:])
    return [p for p in parts if p != ""]


def _free_names(tree: ast.AST) -> set[str]:
    loads: set[str] = set()
    stores: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loads if isinstance(node.ctx, ast.Load) else stores).add(node.id)
        elif isinstance(node, ast.arg):
            stores.add(node.arg)
    return loads - stores


def _field_expr(item: Field, ctx: ExportContext) -> ast.expr | None:
    """The field's expression if IPython could evaluate it when the script runs, else None."""
    if item.conversion not in (None, "r", "s", "a"):
        return None
    try:
        tree = ast.parse(item.source.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    if not all(ctx.is_bound(name) for name in _free_names(tree)):
        return None
    return tree.body


def _quote_state(text: str, state: str) -> str:
    """The shell quoting state ('' / "'" / '"') after ``text``, starting in ``state``."""
    i = 0
    while i < len(text):
        char = text[i]
        if state == "'":
            state = "" if char == "'" else state
        elif char == "\\":
            i += 1
        elif state == '"':
            state = "" if char == '"' else state
        elif char in "'\"":
            state = char
        i += 1
    return state


@dataclass
class Expanded:
    """The result of :func:`expand`: a ``str`` expression and whether anything was expanded."""

    node: ast.expr
    expanded: bool


def expand(text: str, ctx: ExportContext, *, shell: bool) -> Expanded:
    """The Python expression for ``text`` after IPython's expansion.

    ``shell``: quote each value for the shell (and ask ``ctx`` for the quoting helpers).
    """
    parts = split_fields(text)
    if parts is None:
        return Expanded(ast.Constant(text), False)
    pieces: list[ast.expr | str] = []
    state = ""
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            state = _quote_state(part, state) if shell else state
            continue
        expr = _field_expr(part, ctx)
        if expr is None:  # IPython would fail to format: the string goes through as written
            return Expanded(ast.Constant(text), False)
        pieces.append(_value(expr, part.conversion, state, ctx, shell=shell))
    if all(isinstance(p, str) for p in pieces):
        return Expanded(ast.Constant("".join(p for p in pieces if isinstance(p, str))), False)
    return Expanded(_join(pieces), True)


def _value(expr: ast.expr, conversion: str | None, state: str, ctx: ExportContext, *, shell: bool) -> ast.expr:
    if conversion in ("r", "a"):
        expr = ast.Call(ast.Name("repr" if conversion == "r" else "ascii", ast.Load()), [expr], [])
    if not shell:
        return ast.Call(ast.Name("str", ast.Load()), [expr], [])
    helper = QUOTE_HELPERS[state]
    ctx.use(helper)
    return ast.Call(ast.Name(helper, ast.Load()), [expr], [])


def _join(pieces: list[ast.expr | str]) -> ast.expr:
    """An f-string of the pieces, or ``'a' + b + 'c'`` when ``ast.unparse`` cannot write
    the f-string validly (quotes inside a field, Python < 3.12)."""
    values: list[ast.expr] = []
    for piece in pieces:
        if isinstance(piece, str):
            values.append(ast.Constant(piece))
        else:
            inner = piece
            if isinstance(piece, ast.Call) and isinstance(piece.func, ast.Name) and piece.func.id == "str":
                inner = piece.args[0]  # {x} already formats with str()
            values.append(ast.FormattedValue(inner, -1, None))
    fstring = ast.JoinedStr(values)
    try:
        compile(ast.unparse(fstring), "<expanded>", "eval")
        return fstring
    except SyntaxError:
        pass
    node: ast.expr | None = None
    for piece in pieces:
        term = ast.Constant(piece) if isinstance(piece, str) else piece
        node = term if node is None else ast.BinOp(node, ast.Add(), term)
    assert node is not None
    return node
