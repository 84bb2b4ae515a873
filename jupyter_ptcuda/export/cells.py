"""One cell's source in, plain Python source out.

``notebook.export_notebook`` calls :func:`cell_bound_names` on every exported code cell first,
then :func:`render_code` on each; ``magics.py`` reaches :func:`render_code` again (through
``ExportContext.render``) for bodies such as ``%%time``'s.

The cell goes through IPython's own ``TransformerManager`` (plus IPython's automagic rule for
one-line cells, e.g. ``pip install x``), is parsed, and rewritten by
``transform.MagicRewriter``. Rewritten statements are spliced into the cell's text by line,
so comments and formatting of everything else survive; when a rewritten statement shares a
line with other code, the whole cell is written by ``ast.unparse`` instead.
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
import warnings
from functools import cache

from IPython.core.inputtransformer2 import TransformerManager

from jupyter_ptcuda.errors import ExportError
from jupyter_ptcuda.export.context import ExportContext, indent_code, split_lines
from jupyter_ptcuda.export.magics import ALIASES
from jupyter_ptcuda.export.transform import MagicRewriter, Record, bound_names

#: Helpers whose value is always None: not worth echoing.
_NO_ECHO = frozenset({"print", "display", "_sh", "_writefile"})


@cache
def _magic_names() -> frozenset[str]:
    """IPython's built-in line magic names (for automagic), read from its magics classes."""
    from IPython.core import magics

    names: set[str] = set(ALIASES)
    for attr in dir(magics):  # IPython 9 loads its magics classes lazily: getattr, not vars()
        table = getattr(getattr(magics, attr, None), "magics", None)
        if isinstance(table, dict):
            names.update(table.get("line", {}))
    return frozenset(names)


def _automagic(line: str, ctx: ExportContext) -> bool:
    """Would IPython run this one-line cell as a magic without the ``%``? (automagic is on by
    default: ``pip install x``, ``cd data``, ``ls``). The name must not be a Python name the
    notebook defines, and the line must not be an assignment (``ls = 3``)."""
    word = ""
    for char in line:
        if not (char.isalnum() or char in "_.*"):
            break
        word += char
    rest = line[len(word):].lstrip()
    if word not in _magic_names() or rest[:1] in ("=", ","):
        return False
    return not (ctx.is_bound(word) or keyword.iskeyword(word))


def transform(src: str, ctx: ExportContext) -> str:
    """The cell as IPython would run it: magics turned into ``get_ipython()`` calls."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = TransformerManager().transform_cell(src)
            if len(text.strip().splitlines()) == 1 and _automagic(text.strip(), ctx):
                text = TransformerManager().transform_cell("%" + text.strip() + "\n")
    except (SyntaxError, ValueError, tokenize.TokenError) as exc:
        raise ExportError(f"IPython cannot read this cell: {exc}", cell=ctx.cell) from None
    return text


def parse(text: str, ctx: ExportContext) -> ast.Module:
    """Parse a transformed cell; a syntax error becomes an ExportError naming the cell."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError) as exc:
            err = exc
    line = getattr(err, "text", None)
    raise ExportError(f"syntax error: {getattr(err, 'msg', err)}", cell=ctx.cell, line=line.strip() if line else None)


def cell_bound_names(src: str, ctx: ExportContext) -> set[str]:
    """Names a cell binds, magic bodies included; cells that do not parse bind nothing here
    (:func:`render_code` reports them)."""

    def parse_body(code: str) -> ast.AST | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ast.parse(TransformerManager().transform_cell(code))
        except Exception:
            return None

    tree = parse_body(src)
    return bound_names(tree, parse_body) if tree is not None else set()


def _quiet(text: str) -> bool:
    """Does the cell end with ``;`` (Jupyter then shows no output)? Same test as IPython's."""
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER,
                                  tokenize.DEDENT, tokenize.INDENT):
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def _echo(tree: ast.Module, last: ast.stmt, records: list[Record], ctx: ExportContext) -> None:
    """Wrap the cell's last bare expression (as rewritten) in ``_echo(...)``."""
    record = next((r for r in records if r.node is last), None)
    nodes = record.nodes if record else [last]
    if len(nodes) != 1 or not isinstance(nodes[0], ast.Expr):
        return
    value = nodes[0].value
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _NO_ECHO:
        return
    ctx.use("_echo")
    new = ast.Expr(ast.Call(ast.Name("_echo", ast.Load()), [value], []))
    tree.body[tree.body.index(nodes[0])] = new
    if record:
        record.nodes, record.text = [new], None
    else:
        records.append(Record(last, [new]))


def _span(node: ast.stmt) -> tuple[int, int]:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


def _splice(lines: list[str], records: list[Record]) -> str | None:
    """The cell's text with each record's lines replaced; None if a record shares its lines."""
    kept: list[tuple[Record, list[str]]] = []
    for record in sorted(records, key=lambda r: (_span(r.node)[0], -_span(r.node)[1])):
        if kept and _span(record.node)[1] <= _span(kept[-1][0].node)[1]:
            kept[-1][1][:0] = record.comments  # nested in a rewritten statement: its comments go above
            continue
        kept.append((record, list(record.comments)))
    out = list(lines)
    for record, comments in reversed(kept):
        first, last = _span(record.node)
        head = lines[first - 1].encode()
        indent = head[: record.node.col_offset].decode(errors="replace")
        tail = lines[last - 1].encode()[record.node.end_col_offset or 0 :].decode(errors="replace").strip()
        if indent.strip() or (tail and not tail.startswith("#")):
            return None
        text = record.text if record.text is not None else "\n".join(ast.unparse(n) for n in record.nodes)
        block = "".join(f"{indent}# {c}\n" for c in comments)
        block += indent_code(text.rstrip("\n") + "\n", indent) if text else ""
        out[first - 1 : last] = [block]
    return "".join(out)


def render_code(src: str, ctx: ExportContext, echo: bool) -> str:
    """Python source for one cell (or magic body); ``echo``: print its last bare expression."""
    text = transform(src, ctx).replace("\r\n", "\n").replace("\r", "\n")
    tree = parse(text, ctx)
    last = tree.body[-1] if tree.body else None
    lines = split_lines(text)
    rewriter = MagicRewriter(ctx, lines)
    rewriter.visit(tree)
    records = rewriter.records
    if echo and isinstance(last, ast.Expr) and not _quiet(text):
        _echo(tree, last, records, ctx)
    if not records:
        return text.strip("\n") + "\n" if text.strip() else ""
    spliced = _splice(lines, records)
    if spliced is None:  # fall back to the whole cell as unparsed from the tree
        comments = [c for r in records for c in r.comments]
        spliced = "".join(f"# {c}\n" for c in comments) + ast.unparse(tree) + "\n"
    return spliced.strip("\n") + "\n" if spliced.strip() else ""
