"""The syntax-tree rewrite of one cell: IPython calls out, plain Python in.

``cells.render_code`` parses a cell after IPython's ``TransformerManager`` (magic syntax is
then ``get_ipython().run_line_magic(...)`` and friends) and runs :class:`MagicRewriter` over
the tree. For every statement it changes, the rewriter keeps a :class:`Record` (the original
statement's position, the new statements, comments) so ``cells.py`` can splice the new code
into the cell's own text and keep the user's comments and layout everywhere else.

:func:`bound_names` is the first pass over the notebook: every name the notebook binds, which
decides whether ``$name`` / ``{expr}`` in a shell command would have been expanded.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from jupyter_ptcuda.errors import ExportError
from jupyter_ptcuda.export.context import ExportContext, Translation, Unsupported
from jupyter_ptcuda.export.magics import translate

#: The ``get_ipython()`` methods TransformerManager emits, with their number of arguments.
_METHODS = {"system": 1, "getoutput": 1, "run_line_magic": 2, "run_cell_magic": 3}
_IPYTHON_MODULES = ("IPython", "ipywidgets", "ipykernel")
_HOW_TO_SKIP = "remove it, tag the cell skip-export, or export with --lenient to comment it out"


def magic_call(node: ast.AST) -> tuple[str, list[str]] | None:
    """``(method, args)`` if ``node`` is ``get_ipython().method('...', ...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    owner = node.func.value
    if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "get_ipython"
            and not owner.args and not owner.keywords):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if _METHODS.get(node.func.attr) != len(args) or len(node.args) != len(args) or node.keywords:
        return None
    return node.func.attr, args


@dataclass
class Record:
    """A statement the rewriter replaced: the original ``node`` (for its position), the new
    statements, ``text`` to splice in (``None``: unparse ``nodes``), comments to put above."""

    node: ast.stmt
    nodes: list[ast.stmt]
    text: str | None = None
    comments: list[str] = field(default_factory=list)


@dataclass
class _Frame:
    dirty: bool = False
    text: str | None = None
    comments: list[str] = field(default_factory=list)


class MagicRewriter(ast.NodeTransformer):
    """Replaces IPython calls in one parsed cell; called by ``cells.render_code``.

    ``lines`` is the cell's text after TransformerManager (for messages). After ``visit``,
    :attr:`records` lists the replaced statements, innermost first.
    """

    def __init__(self, ctx: ExportContext, lines: list[str]) -> None:
        self.ctx = ctx
        self.lines = lines
        self.records: list[Record] = []
        self._frames: list[_Frame] = []

    def visit(self, node: ast.AST) -> ast.AST | list[ast.stmt] | None:
        if not isinstance(node, ast.stmt):
            return super().visit(node)
        frame = _Frame()
        self._frames.append(frame)
        try:
            result = super().visit(node)
        except Unsupported as exc:
            self._comment_out(node, exc, frame)
            result = None
        finally:
            self._frames.pop()
        if not frame.dirty:
            return result
        nodes = [] if result is None else result if isinstance(result, list) else [result]
        if not nodes and self._frames:  # a block must not end up empty
            nodes, frame.text = [ast.Pass()], "pass"
        self.records.append(Record(node, nodes, frame.text, frame.comments))
        return nodes

    def _line(self, node: ast.stmt) -> str:
        return self.lines[node.lineno - 1].strip() if node.lineno <= len(self.lines) else ast.unparse(node)

    def _comment_out(self, node: ast.stmt, exc: Unsupported, frame: _Frame) -> None:
        source = (exc.source or self._line(node)).splitlines()[0]
        if not self.ctx.lenient:
            raise ExportError(f"{exc.reason}: {_HOW_TO_SKIP}", cell=self.ctx.cell, line=source)
        frame.dirty, frame.text = True, ""
        frame.comments = [f"{source}  (commented out by --lenient: {exc.reason})"]
        self.ctx.note("commented", source, f"commented out: {exc.reason}")
        self.ctx.warn(f"{source}: commented out ({exc.reason})")

    def _apply(self, t: Translation) -> None:
        frame = self._frames[-1]
        frame.dirty = True
        first = t.source.splitlines()[0] if t.source else t.source
        if t.kind == "dropped":
            first += f"  ({t.action})"
        elif t.kind == "pip":
            first += "  (not run: listed in the requirements)"
        frame.comments.append(first)
        self.ctx.note(t.kind, t.source, t.action)

    def visit_Expr(self, node: ast.Expr) -> ast.AST | list[ast.stmt]:
        call = magic_call(node.value)
        if call is None:
            return self.generic_visit(node)
        t = translate(*call, self.ctx, statement=True)
        text = t.text if t.text is not None else ast.unparse(ast.Expr(t.expr)) if t.expr is not None else ""
        self._apply(t)
        self._frames[-1].text = text
        return ast.parse(text).body

    def visit_Call(self, node: ast.Call) -> ast.AST:
        call = magic_call(node)
        if call is None:
            return self.generic_visit(node)
        t = translate(*call, self.ctx, statement=False)
        if t.expr is None:
            raise Unsupported(f"{t.source} cannot be used as a value", t.source)
        self._apply(t)
        return t.expr

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id not in self.ctx.bound:
            if node.id == "get_ipython":
                raise Unsupported("get_ipython() exists only inside IPython; a plain script has no such function")
            if node.id == "display":
                self.ctx.use("display")
                self.ctx.warn("display() is IPython's; the script prints repr() of what it is given")
        return node

    def _check_import(self, module: str) -> None:
        if module.split(".")[0] in _IPYTHON_MODULES:
            self.ctx.warn(f"imports {module}: the script needs it installed where the job runs")

    def visit_Import(self, node: ast.Import) -> ast.AST:
        for alias in node.names:
            self._check_import(alias.name)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.stmt]:
        if node.module == "__future__" and len(self._frames) == 1:
            self.ctx.futures.extend(a.name for a in node.names if a.name not in self.ctx.futures)
            frame = self._frames[-1]
            frame.dirty, frame.text = True, ""
            frame.comments.append(f"{ast.unparse(node)}  (moved to the top of the script)")
            return []
        self._check_import(node.module or "")
        return node


# ---- first pass: names the notebook binds ----------------------------------------------------------


def bound_names(tree: ast.AST, parse_body: object = None) -> set[str]:
    """Names bound anywhere in ``tree``: assignment targets, imports, defs, loop targets, args.

    Magic calls whose bodies are Python (``%%time``, ``%time x = 1``, ``%%capture name``) are
    looked into through ``parse_body`` (source -> tree or None), which ``cells.py`` provides.
    """
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        elif callable(parse_body) and (call := magic_call(node)) is not None:
            names |= _magic_bound(*call, parse_body)
    return names


def _magic_bound(method: str, args: list[str], parse_body: object) -> set[str]:
    assert callable(parse_body)
    code = None
    if method == "run_cell_magic" and args[0] in ("time", "capture", "timeit"):
        code = args[2] if args[0] != "timeit" else args[1] + "\n" + args[2]
    elif method == "run_line_magic" and args[0] in ("time", "timeit"):
        code = args[1]
    names = {w for w in args[1].split() if w.isidentifier()} if args[:1] == ["capture"] else set()
    tree = parse_body(code) if code else None
    return names | (bound_names(tree, parse_body) if tree is not None else set())
