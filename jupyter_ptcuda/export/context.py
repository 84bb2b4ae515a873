"""State shared by one export: options, what was rewritten, which runtime helpers are needed.

:func:`jupyter_ptcuda.export.notebook.export_notebook` makes one :class:`ExportContext` per
notebook and sets :attr:`ExportContext.cell` before it hands each cell to
:func:`jupyter_ptcuda.export.cells.render_code`. The rewriter (``transform.py``) and the magic
translators (``magics.py``) record what they did through :meth:`ExportContext.note`, ask for
runtime helpers with :meth:`ExportContext.use`, and signal a magic they cannot translate by
raising :class:`Unsupported` (the rewriter turns it into an ``ExportError`` or, with
``lenient``, into a comment).
"""

from __future__ import annotations

import ast
import builtins
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field

BUILTIN_NAMES = frozenset(dir(builtins))


class Unsupported(Exception):
    """A magic or IPython construct with no plain-Python translation.

    ``source`` is the line as the user wrote it (``%who``), when known.
    """

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source


@dataclass
class Translation:
    """What a magic becomes.

    ``text`` is the statement form (Python source, may span lines; ``""`` drops the magic),
    ``expr`` the value form for ``x = %magic``/``x = !cmd`` (``None``: no value form).
    ``source`` is the magic as the user wrote it; ``kind``/``action`` go into the report.
    """

    kind: str
    source: str
    action: str
    text: str | None = None
    expr: ast.expr | None = None


@dataclass
class ExportContext:
    """Options and accumulated results of one notebook export."""

    lenient: bool = False
    echo_outputs: bool = False
    #: Names bound anywhere in the notebook (assignments, imports, defs, loop targets ...).
    bound: frozenset[str] = frozenset()
    #: Renders a nested body (``%%time`` cell, ``%time`` code) to Python source: (source, echo) -> text.
    render: Callable[[str, bool], str] | None = None
    cell: int = 0
    helpers: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    report: list[dict[str, object]] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    futures: list[str] = field(default_factory=list)

    def use(self, *helpers: str) -> None:
        """Ask for runtime helpers (names from ``runtime.HELPERS``) in the script's prelude."""
        self.helpers.update(helpers)

    def need(self, *modules: str) -> None:
        """Ask for ``import MODULE`` at the top of the script (generated code uses it directly)."""
        self.modules.update(modules)

    def note(self, kind: str, source: str, action: str) -> None:
        """Add one report entry for the current cell."""
        self.report.append({"cell": self.cell, "kind": kind, "source": source, "action": action})

    def warn(self, message: str) -> None:
        """Add a warning about the current cell (shown by the CLI and the REST API)."""
        text = f"cell {self.cell}: {message}"
        if text not in self.warnings:
            self.warnings.append(text)

    def is_bound(self, name: str) -> bool:
        """Would ``name`` resolve when the script runs (defined by the notebook, or a builtin)?"""
        return name in self.bound or name in BUILTIN_NAMES

    def add_requirement(self, spec: str) -> None:
        if spec not in self.requirements:
            self.requirements.append(spec)


def split_lines(text: str) -> list[str]:
    """Lines ending in ``\\n`` (kept), as Python's tokenizer and ``ast`` line numbers count them.

    Not ``str.splitlines``, which also splits at form feeds and other separators."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def indent_code(text: str, prefix: str) -> str:
    """Indent Python source by ``prefix``, leaving the inside of multi-line strings alone.

    ``textwrap.indent`` would change the value of a triple-quoted string; ``tokenize`` tells
    which lines are continuation lines of a string token. Blank lines stay blank.
    """
    lines = split_lines(text)
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.start[0] < token.end[0] and token.type not in (tokenize.NEWLINE, tokenize.NL):
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return "".join(
        line if number in inside or not line.strip() else prefix + line
        for number, line in enumerate(lines, 1)
    )


def block(text: str) -> str:
    """``text`` indented as the body of a ``with``/``def``, with ``pass`` if it has no statement
    (a body of only dropped magics is only comments)."""
    if not ast.parse(text).body:
        text = (text.rstrip("\n") + "\npass\n").lstrip("\n")
    return indent_code(text.rstrip("\n") + "\n", "    ")
