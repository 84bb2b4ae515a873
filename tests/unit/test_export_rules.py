"""The export rules, one row each: a cell in, the Python the user reads in train.py out.

Behaviour (what the script does when run) is in ``test_export_run.py``.
"""

from __future__ import annotations

import ast

import pytest

from jupyter_ptcuda.errors import ExportError
from tests.unit.test_export_support import cell_code, export

# (id, cells, expected lines in the code of the LAST cell)
REWRITES = [
    # display-only line magics are dropped, with a note of what they were
    ("matplotlib", ["%matplotlib inline"], ["# %matplotlib inline  (dropped: the script sets MPLBACKEND=Agg instead)"]),
    ("load_ext autoreload", ["%load_ext autoreload"], ["# %load_ext autoreload  (dropped: display only)"]),
    ("autoreload", ["%autoreload 2"], ["# %autoreload 2  (dropped: display only)"]),
    ("config", ["%config InlineBackend.figure_format = 'retina'"],
     ["# %config InlineBackend.figure_format = 'retina'  (dropped: display only)"]),
    ("help ?", ["len?"], ["# len?  (dropped: display only)"]),
    ("help ??", ["len??"], ["# len??  (dropped: display only)"]),
    ("html cell", ["%%html\n<b>hi</b>"], ["# %%html  (dropped: display only)"]),
    # translated line magics
    ("cd", ["%cd /data"], ["os.chdir(os.path.expanduser('/data'))"]),
    ("cd home", ["%cd"], ["os.chdir(os.path.expanduser('~'))"]),
    ("cd expands {expr}", ["d = 'x'", "%cd {d}/sub"], ["os.chdir(os.path.expanduser(f'{d}/sub'))"]),
    ("env set", ["%env CUDA_VISIBLE_DEVICES=0"],
     ["os.environ['CUDA_VISIBLE_DEVICES'] = '0'", "print('env: CUDA_VISIBLE_DEVICES=' + os.environ['CUDA_VISIBLE_DEVICES'])"]),
    ("env set with space", ["%env MODE batch"], ["os.environ['MODE'] = 'batch'"]),
    ("env get", ["home = %env HOME"], ["home = os.environ['HOME']"]),
    ("pwd", ["here = %pwd"], ["here = os.getcwd()"]),
    ("run", ["%run prep.py --n 2"], ["globals().update(_run('prep.py --n 2'))"]),
    ("run -m", ["%run -m pkg.tool -v"], ["globals().update(_run('pkg.tool -v', module=True))"]),
    ("time", ["%time y = sum(range(3))"], ["with _time():", "    y = sum(range(3))"]),
    ("time as value", ["y = %time sum(range(3))"], ["y = _timed(lambda: sum(range(3)))"]),
    ("timeit", ["%timeit -n 5 -r 2 sum(range(3))"], ["_timeit(lambda: sum(range(3)), number=5, repeat=2)"]),
    ("timeit statement", ["%timeit x = 1"], ["def _timeit_stmt():", "    x = 1", "_timeit(_timeit_stmt)"]),
    ("magic inside a block", ["for i in range(2):\n    %time f(i)"], ["for i in range(2):", "    with _time():", "        f(i)"]),
    # cell magics
    ("%%time keeps its body and comments", ["%%time\n# train\nloss = 1"],
     ["with _time():", "    # train", "    loss = 1"]),
    ("%%capture keeps its body", ["%%capture\nprint('noisy')"], ["# %%capture", "print('noisy')"]),
    ("%%capture into a name", ["%%capture out --no-stderr\nprint('x')"],
     ["with _capture(stderr=False) as out:", "    print('x')"]),
    ("%%writefile", ["%%writefile cfg.yaml\nlr: 0.1\nepochs: 2\n"],
     ["_writefile('cfg.yaml', '''\\", "lr: 0.1", "epochs: 2", "''')"]),
    ("%%writefile -a", ["%%writefile -a log.txt\nline\n"], ["_writefile('log.txt', 'line\\n', append=True)"]),
    ("%%bash", ["%%bash\nset -e\nmake data\n"], ["_sh('''\\", "set -e", "make data", "''', shell='bash')"]),
    ("%%sh", ["%%sh\necho hi\n"], ["_sh('echo hi\\n', shell='sh')"]),
    ("%%bash --no-raise-error", ["%%bash --no-raise-error\nfalse\n"], ["_sh('false\\n', shell='bash', check=False)"]),
    # shell commands
    ("!cmd", ["!ls -l"], ["# !ls -l", "_sh('ls -l')"]),
    ("x = !cmd", ["files = !ls"], ["files = _sh_lines('ls')"]),
    ("!! is output lines", ["!!ls"], ["_sh_lines('ls')"]),
    ("%sx", ["files = %sx ls"], ["files = _sh_lines('ls')"]),
    ("{expr} and $name are quoted", ["n, name = 2, 'a b'", "!echo {n + 1} $name"], ["_sh(f'echo {_q(n + 1)} {_q(name)}')"]),
    ("quoting follows shell quotes", ["x = 'v'", "!echo \"{x}\" '{x}'"], ["_sh(f\"\"\"echo \"{_q_dq(x)}\" '{_q_sq(x)}'\"\"\")"]),
    ("$ENV not defined in Python goes to the shell", ["!echo $HOME"], ["_sh('echo $HOME')"]),
    ("$$ escapes", ["x = 1", "!echo $$x {x}"], ["_sh(f'echo $x {_q(x)}')"]),
    ("awk braces go to the shell", ["!awk '{print $1}' data.txt"], ["_sh(\"awk '{print $1}' data.txt\")"]),
    ("$name in single quotes is not expanded", ["x = 1", "!echo '$x'"], ["_sh(\"echo '$x'\")"]),
    ("shell command in a function", ["def f(path):\n    !ls {path}\n"], ["def f(path):", "    _sh(f'ls {_q(path)}')"]),
    ("alias magic", ["%mkdir -p out"], ["_sh('mkdir -p out')"]),
    # automagic (a one-line cell, as IPython runs it)
    ("automagic cd", ["cd /tmp"], ["os.chdir(os.path.expanduser('/tmp'))"]),
    ("assignment is not automagic", ["ls = 3"], ["ls = 3"]),
    ("shadowed name is not automagic", ["import time", "time"], ["time"]),
    # misc
    ("__future__ import is moved to the top", ["from __future__ import annotations\nx: int = 1"],
     ["# from __future__ import annotations  (moved to the top of the script)", "x: int = 1"]),
    ("display() stand-in", ["display(1)"], ["display(1)"]),
    ("user comments survive", ["# load data\nx = 1  # one\n!ls\ny = 2  # two"],
     ["# load data", "x = 1  # one", "y = 2  # two"]),
]


@pytest.mark.parametrize(("cells", "expected"), [r[1:] for r in REWRITES], ids=[r[0] for r in REWRITES])
def test_rewrite(cells: list[str], expected: list[str]) -> None:
    result = export(*cells)
    code = cell_code(result, len(cells))
    for line in expected:
        assert line in code.splitlines(), f"{line!r} not in:\n{code}"
    assert "get_ipython" not in result.script


def test_backend_is_set_before_any_cell() -> None:
    script = export("%matplotlib inline\nimport matplotlib.pyplot as plt").script
    assert script.index('os.environ["MPLBACKEND"] = "Agg"') < script.index("# %% cell 1")


def test_future_import_is_first_statement() -> None:
    script = export("x = 1", "from __future__ import annotations").script
    first = next(line for line in script.splitlines() if line and not line.startswith("#"))
    assert first == "from __future__ import annotations"


def test_helpers_only_when_used() -> None:
    plain = export("x = 1").script
    shell = export("!ls").script
    assert "def _sh(" not in plain and "def _q(" not in plain and "import subprocess" not in plain
    assert "def _sh(" in shell and "import subprocess" in shell
    assert "def display(" in export("display(1)").script
    assert export("def display(x):\n    pass", "display(1)").script.count("def display(") == 1


def test_script_imports_no_ipython() -> None:
    script = export("%time x = 1", "!echo hi", "x = !ls", "%%bash\necho\n", "%cd /tmp", "%%capture c\n1",
                    "%run x.py", "%timeit 1", "%%writefile f\nx", "%env A=1", ("a = 1", ["parameters"])).script
    tree = ast.parse(script)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and not {m for m in imported if m.split(".")[0] in ("IPython", "ipykernel")}
    assert "get_ipython" not in script


@pytest.mark.parametrize(
    ("cell", "requirements"),
    [
        ("!pip install torch==2.1 'numpy<2' -q", ["torch==2.1", "numpy<2"]),
        ("%pip install -U einops", ["einops"]),
        ("!python -m pip install -r requirements.txt --index-url https://x/simple", [
            "-r requirements.txt", "--index-url https://x/simple"]),
        ("!{sys.executable} -m pip install tqdm", ["tqdm"]),
        ("!pip3 install --target /opt/x rich", ["rich"]),
        ("pip install timm", ["timm"]),  # automagic
    ],
)
def test_pip_install_is_listed_not_run(cell: str, requirements: list[str]) -> None:
    result = export(cell)
    assert result.requirements == requirements
    assert "_sh(" not in cell_code(result) and "(not run: listed in the requirements)" in cell_code(result)
    assert [e["kind"] for e in result.report] == ["pip"]


def test_pip_other_commands_still_run() -> None:
    assert "_sh('pip list')" in cell_code(export("!pip list"))
    assert export("!pip list").requirements == []


def test_pip_followed_by_another_command_warns() -> None:
    result = export("!pip install torch && python setup.py")
    assert result.requirements == ["torch"]
    assert any("python setup.py" in w and "not run" in w for w in result.warnings)


def test_skip_export_cell_is_left_out() -> None:
    result = export("x = 1", ("raise SystemExit('notebook only')", ["skip-export"]), "y = 2")
    assert "notebook only" not in result.script
    assert "# %% cell 2 (left out: tagged skip-export)" in result.script
    assert [(e["cell"], e["kind"]) for e in result.report] == [(1, "parameters"), (2, "skipped"), (3, "parameters")]
    assert {"cell": 2, "kind": "skipped"}.items() <= result.report[1].items()


def test_cells_are_numbered_like_the_notebook_markdown_included() -> None:
    from jupyter_ptcuda.export import export_notebook
    from tests.unit.test_export_support import notebook

    nb = notebook("# Title\ntext", "x = 1", "## Part 2", "%load_ext tensorboard", markdown=(0, 2))
    with pytest.raises(ExportError) as err:
        export_notebook(nb)
    assert err.value.cell == 4 and str(err.value).startswith("cell 4:")
    script = export_notebook(nb, lenient=True).script
    assert "# %% [markdown] cell 1\n# # Title\n# text" in script
    assert "# %% cell 2\nx = 1" in script and "# %% cell 4" in script


@pytest.mark.parametrize(
    ("cells", "cell", "message", "line"),
    [
        (["x = 1", "%load_ext tensorboard"], 2, "%load_ext has no plain-Python equivalent", "%load_ext tensorboard"),
        (["%%script python\nprint(1)"], 1, "%%script has no plain-Python equivalent", "%%script python"),
        (["%store x"], 1, "%store has no plain-Python equivalent", "%store x"),
        (["if True:\n    %who_ls"], 1, "%who_ls has no plain-Python equivalent", "%who_ls"),
        (["%cd -"], 1, "directory history", "%cd -"),
        (["%%bash --bg\nsleep 1"], 1, "only --no-raise-error", "%%bash --bg"),
        (["%run notebook.ipynb"], 1, "running a notebook is not supported", "%run notebook.ipynb"),
        (["ip = get_ipython()"], 1, "get_ipython() exists only inside IPython", "ip = get_ipython()"),
        (["def f(:\n    pass"], 1, "syntax error", "def f(:"),
        (["x = 1", "await asyncio.sleep(1)"], 2, "top-level await", "await asyncio.sleep(1)"),
        (["for i in range(3):\n    pass", "break"], 2, "'break' outside loop", "break"),
    ],
)
def test_export_error_names_cell_and_line(cells: list[str], cell: int, message: str, line: str) -> None:
    with pytest.raises(ExportError) as err:
        export(*cells)
    assert err.value.cell == cell
    assert str(err.value).startswith(f"cell {cell}: ") and message in str(err.value)
    assert err.value.line == line


def test_unsupported_error_says_how_to_get_past_it() -> None:
    with pytest.raises(ExportError, match="skip-export.*--lenient"):
        export("%load_ext tensorboard")


def test_lenient_comments_out_with_a_warning() -> None:
    result = export("x = 1\n%load_ext tensorboard\nif x:\n    %tensorboard --logdir runs\n", lenient=True)
    code = cell_code(result)
    assert "# %load_ext tensorboard  (commented out by --lenient: %load_ext has no plain-Python equivalent)" in code
    assert "    # %tensorboard --logdir runs  (commented out" in code and "    pass" in code
    assert [e["kind"] for e in result.report] == ["commented", "commented", "parameters"]  # x = 1 is a flag
    assert result.warnings[0].startswith("cell 1: %load_ext tensorboard: commented out")


def test_shared_line_falls_back_to_the_whole_cell() -> None:
    code = cell_code(export("x = 1; get_ipython().system('ls')  # both"))
    assert "# !ls" in code and "x = 1\nx = _params.get('x', x)  # --x\n_sh('ls')" in code


@pytest.mark.parametrize(
    ("cell", "echoed"),
    [
        ("x = 2\nx * 3", "_echo(x * 3)"),
        ("files = !ls\nfiles", "_echo(files)"),
        ("!!ls", "_echo(_sh_lines('ls'))"),
        ("%%time\ny = 1\ny", "    _echo(y)"),
    ],
)
def test_echo_outputs_wraps_last_expression(cell: str, echoed: str) -> None:
    assert echoed in cell_code(export(cell, echo_outputs=True)).splitlines()
    assert "_echo(" not in export(cell).script


@pytest.mark.parametrize(
    ("cell", "echoed"),
    [("x = 2\nx;", False), ("print(1)", False), ("x = 1", False), ("!ls", False), ("x = 1\nx  # comment;", True)],
)
def test_echo_outputs_semicolon_and_statements(cell: str, echoed: bool) -> None:
    assert ("_echo(" in cell_code(export(cell, echo_outputs=True))) is echoed
