"""Property tests: generated cells, IPython's own formatter as the oracle for ``{expr}``/``$name``."""

from __future__ import annotations

import ast
import subprocess

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.utils.text import DollarFormatter

from jupyter_ptcuda.errors import ExportError
from jupyter_ptcuda.export import runtime
from jupyter_ptcuda.export.context import ExportContext, indent_code
from jupyter_ptcuda.export.interpolate import expand
from jupyter_ptcuda.export.magics import str_literal
from tests.unit.test_export_support import export

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters str.splitlines() treats as line ends would split a magic line in two: not in arguments.
_arg = st.text(st.characters(codec="ascii", exclude_characters="\n\r\x00\x0b\x0c\x1c\x1d\x1e"), max_size=20)
_magic_names = st.sampled_from([
    "time", "timeit", "cd", "env", "run", "pip", "sx", "pwd", "matplotlib", "config", "autoreload",
    "load_ext", "who", "ls", "store", "bogus", "capture", "writefile", "bash", "sh", "html", "script",
])
_python = st.sampled_from([
    "x = 1", "print(x)", "y = [i for i in range(3)]", "x", "pass", "import os", "def f(a):\n    return a",
    "x += 1", "s = 'it''s'", "z = {'a': 1}", "for i in range(2):\n    print(i)", "x;",
])
_magic_line = st.builds(lambda n, a: f"%{n} {a}".rstrip(), _magic_names, _arg)
_bang_line = st.builds(lambda p, a: f"{p}!{a}", st.sampled_from(["", "x = ", "out = "]), _arg)
_line = st.one_of(_python, _magic_line, _bang_line)
_nested = st.builds(lambda head, body: head + "\n" + "\n".join("    " + b for b in body),
                    st.sampled_from(["if x:", "for i in range(2):", "def g():", "with open('f') as fh:"]),
                    st.lists(st.one_of(_python.filter(lambda s: "\n" not in s), _magic_line, _bang_line),
                             min_size=1, max_size=3))
_cell_magic = st.builds(lambda n, a, body: f"%%{n} {a}".rstrip() + "\n" + "\n".join(body),
                        _magic_names, _arg, st.lists(_line, max_size=3))
_cell = st.one_of(
    st.lists(st.one_of(_line, _nested), min_size=1, max_size=5).map("\n".join),
    _cell_magic,
    st.text(max_size=40),
)


def _check(cells: list[str], **options: object) -> None:
    try:
        result = export(*cells, **options)
    except ExportError as err:
        assert err.cell is not None and 1 <= err.cell <= len(cells)
        assert str(err).startswith(f"cell {err.cell}: ")
        return
    tree = ast.parse(result.script)
    compile(tree, "train.py", "exec")
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "get_ipython"]
    assert {entry["cell"] for entry in result.report} <= set(range(1, len(cells) + 1))


@SETTINGS
@given(st.lists(_cell, min_size=1, max_size=3))
def test_export_compiles_or_names_the_cell(cells: list[str]) -> None:
    _check(cells)


@SETTINGS
@given(st.lists(_cell, min_size=1, max_size=3), st.booleans())
def test_lenient_and_echo_exports_compile_or_name_the_cell(cells: list[str], echo: bool) -> None:
    _check(cells, lenient=True, echo_outputs=echo)


@SETTINGS
@given(st.lists(st.one_of(_python, st.builds(lambda a: f"%bogus_magic {a}".rstrip(), _arg.filter(
    lambda a: not a.rstrip().endswith(("?", "\\"))))), min_size=1,  # help (?), line continuation (\\)
                max_size=6).map("\n".join))
def test_lenient_comments_out_instead_of_failing(cell: str) -> None:
    result = export("x = 1", cell, lenient=True)
    compile(result.script, "train.py", "exec")
    assert sum(e["kind"] == "commented" for e in result.report) == cell.count("%bogus_magic")


# IPython's var_expand, the oracle: DollarFormatter, and the raw string when formatting fails.
def _ipython_expand(cmd: str, ns: dict[str, object]) -> str:
    try:
        return DollarFormatter().vformat(cmd, args=[], kwargs=ns)
    except Exception:
        return cmd


_pieces = st.lists(st.one_of(
    st.text(alphabet="xy '\"$.{}:!\\", max_size=3),
    st.sampled_from(["$a", "$b", "$c", "$$a", "$a.real", "{a}", "{a+1}", "{c}", "{{", "}}", "{a!r}", "{b:>3}",
                     "{b[0]}", "{}", "$1", "'$a'"]),
), max_size=8).map("".join)


@SETTINGS
@given(_pieces)
def test_expansion_matches_ipython(cmd: str) -> None:
    ns: dict[str, object] = {"a": 5, "b": "text"}
    node = expand(cmd, ExportContext(bound=frozenset(ns)), shell=False).node
    try:
        value = eval(compile(ast.Expression(ast.fix_missing_locations(node)), "<x>", "eval"), dict(ns))
    except Exception:  # $a.missing: the script raises where IPython passes the text on unexpanded
        assert _ipython_expand(cmd, ns) == cmd
        return
    assert value == _ipython_expand(cmd, ns)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=15),
       st.sampled_from(["printf '<%s>' {v}", "printf '<%s>' \"{v}\"", "printf '<%s>' '{v}'",
                        "printf '<%s>' pre{v}post", "printf '<%s>' \"a $v b\""]))
def test_shell_quoting_passes_any_value_as_written(value: str, template: str) -> None:
    ctx = ExportContext(bound=frozenset({"v"}))
    node = expand(template, ctx, shell=True).node
    ns = {name: getattr(runtime, name) for name in ("_q", "_q_dq", "_q_sq")} | {"v": value}
    cmd = eval(compile(ast.Expression(ast.fix_missing_locations(node)), "<x>", "eval"), ns)
    out = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, timeout=10).stdout.decode("utf-8", "replace")
    inner = template.split(" ", 2)[2].strip("'\"").replace("{v}", value).replace("$v", value)
    assert out == f"<{inner}>"


@SETTINGS
@given(st.text(st.characters(exclude_characters="\x00\r", exclude_categories=["Cs"]), max_size=30))
def test_indenting_code_keeps_multiline_string_values(text: str) -> None:
    code = f"value = {text!r}\nblock = '''\\\n" + text.replace("\\", "\\\\").replace("'", "\\'") + "'''\n"
    nested = "if True:\n" + indent_code(code, "    ")
    ns: dict[str, object] = {}
    exec(compile(nested, "<x>", "exec"), ns)
    assert ns["value"] == ns["block"] == text


@SETTINGS
@given(st.text(st.sampled_from(["a", "\n", "'", '"', "\\", "\t", " ", "\x01", "é"]), max_size=30))
def test_file_bodies_are_written_back_exactly(text: str) -> None:
    # %%writefile / %%bash bodies become string literals in the script.
    assert ast.literal_eval(str_literal(text)) == text
