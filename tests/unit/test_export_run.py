"""Exported scripts, run under plain ``python -I -S`` (no site-packages, so no IPython).

What a user sees in the job log and the exit code is what is asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_ptcuda.export import export_notebook
from tests.unit.test_export_support import NOTEBOOKS, export, run_script


def test_training_notebook_runs_without_ipython(tmp_path: Path) -> None:
    result = export_notebook(NOTEBOOKS / "train_magics.ipynb")
    proc = run_script(result.script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "shell says: hello world" in out
    assert "files: ['a', 'b']" in out
    assert "bash says: 42" in out
    assert "mode: batch" in out and "env: RUN_MODE=batch" in out
    assert any(line.startswith("Wall time: ") for line in out)
    assert "total: 499500" in out
    assert "lr=0.01 epochs=3 run_name=baseline amp=False layers=[64, 32]" in out
    assert "IPython loaded: False" in out
    assert "this cell is for the notebook only" not in proc.stdout + proc.stderr
    assert (tmp_path / "config.txt").read_text() == "epochs = {epochs}\n"  # IPython does not expand the body
    assert result.requirements == ["torch>=2.1", "tqdm", "einops"]


def test_flags_override_parameters(tmp_path: Path) -> None:
    script = export_notebook(NOTEBOOKS / "train_magics.ipynb").script
    proc = run_script(script, tmp_path, "--lr", "0.5", "--amp", "--run-name", "big run", "--layers", "[1, 2, 3]")
    assert proc.returncode == 0, proc.stderr
    assert "lr=0.5 epochs=3 run_name=big run amp=True layers=[1, 2, 3]" in proc.stdout


def test_params_file_is_overridden_by_flags(tmp_path: Path) -> None:
    script = export_notebook(NOTEBOOKS / "train_magics.ipynb").script
    (tmp_path / "p.json").write_text(json.dumps({"lr": 0.2, "epochs": 7, "amp": True}))
    proc = run_script(script, tmp_path, "--params-file", "p.json", "--epochs", "9", "--no-amp")
    assert proc.returncode == 0, proc.stderr
    assert "lr=0.2 epochs=9 run_name=baseline amp=False layers=[64, 32]" in proc.stdout


def test_params_file_yaml_when_pyyaml_is_there(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    script = export_notebook(NOTEBOOKS / "train_magics.ipynb").script
    (tmp_path / "p.yaml").write_text("lr: 0.3\nlayers: [8]\n")
    with_yaml = run_script(script, tmp_path, "--params-file", "p.yaml", site=True)
    assert "lr=0.3 epochs=3 run_name=baseline amp=False layers=[8]" in with_yaml.stdout, with_yaml.stderr
    without = run_script(script, tmp_path, "--params-file", "p.yaml")
    assert without.returncode == 2 and "--params-file p.yaml: No module named 'yaml'" in without.stderr


@pytest.mark.parametrize(
    ("args", "params_file", "message"),
    [
        (["--learning-rate", "0.1"], None, "unrecognized arguments: --learning-rate 0.1"),
        (["--l", "0.1"], None, "unrecognized arguments: --l"),  # no abbreviations
        (["--epochs", "three"], None, "argument --epochs: expected int, got 'three'"),
        (["--layers", "[1,"], None, "argument --layers: not valid JSON"),
        (["--params-file", "p.json"], {"lr": 0.1, "momentum": 0.9}, "unknown parameters: momentum"),
        (["--params-file", "p.json"], {"epochs": 1.5}, "epochs: expected int, got 1.5"),
        (["--params-file", "missing.json"], None, "--params-file missing.json"),
    ],
)
def test_bad_command_line_exits_2_before_any_cell(tmp_path: Path, args: list[str], params_file: dict | None,
                                                  message: str) -> None:
    if params_file is not None:
        (tmp_path / "p.json").write_text(json.dumps(params_file))
    proc = run_script(export_notebook(NOTEBOOKS / "train_magics.ipynb").script, tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""  # no cell ran


def test_help_lists_parameters(tmp_path: Path) -> None:
    proc = run_script(export_notebook(NOTEBOOKS / "train_magics.ipynb").script, tmp_path, "--help")
    assert proc.returncode == 0
    for text in ("--lr FLOAT", "--epochs INT", "--run-name STR", "--amp", "--no-amp", "--layers JSON",
                 "--params-file FILE", "float, default 0.01", "(cell 3)"):
        assert text in proc.stdout


def test_notebook_without_parameters_rejects_flags(tmp_path: Path) -> None:
    proc = run_script(export("print('ran')").script, tmp_path, "--lr", "1")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr and "ran" not in proc.stdout


def test_none_default_takes_json_or_a_plain_string(tmp_path: Path) -> None:
    script = export(("ckpt = None\nseed = None", ["parameters"]), "print(repr(ckpt), repr(seed))").script
    proc = run_script(script, tmp_path, "--ckpt", "runs/best.pt", "--seed", "3")
    assert proc.stdout.strip() == "'runs/best.pt' 3"


def test_sys_exit_code_is_the_process_exit_code(tmp_path: Path) -> None:
    proc = run_script(export_notebook(NOTEBOOKS / "exit_code.ipynb").script, tmp_path)
    assert proc.returncode == 3
    assert "about to exit" in proc.stdout and "unreachable" not in proc.stdout


def test_exception_fails_the_script(tmp_path: Path) -> None:
    proc = run_script(export("print('start')", "1 / 0", "print('unreachable')").script, tmp_path)
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr and "unreachable" not in proc.stdout


def test_failing_bash_cell_fails_the_script(tmp_path: Path) -> None:
    proc = run_script(export_notebook(NOTEBOOKS / "bash_fails.ipynb").script, tmp_path)
    assert proc.returncode != 0
    assert "before failing" in proc.stdout and "unreachable" not in proc.stdout
    assert "returned non-zero exit status 4" in proc.stderr


@pytest.mark.parametrize("cell", ["!exit 5", "x = !exit 5", "%%sh\nexit 5\n"])
def test_failing_shell_command_fails_the_script(tmp_path: Path, cell: str) -> None:
    proc = run_script(export(cell, "print('unreachable')").script, tmp_path)
    assert proc.returncode != 0 and "exit status 5" in proc.stderr and "unreachable" not in proc.stdout


def test_bash_no_raise_error_continues(tmp_path: Path) -> None:
    proc = run_script(export("%%bash --no-raise-error\nexit 5\n", "print('went on')").script, tmp_path)
    assert proc.returncode == 0 and "went on" in proc.stdout


@pytest.mark.parametrize(
    "value",
    ["plain", "two words", "semi; echo INJECTED", "$(echo INJECTED)", "`echo INJECTED`", "it's", 'say "hi"',
     "back\\slash", "$HOME", "*"],
)
def test_interpolated_values_reach_the_command_intact(tmp_path: Path, value: str) -> None:
    cells = [f"v = {value!r}", "!printf '<%s>' {v} \"{v}\" '{v}' $v", "print()", "out = !printf '%s' {v}",
             "print(out)"]
    proc = run_script(export(*cells).script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"<{value}>" * 4, repr([value])]


def test_unbound_dollar_goes_to_the_shell(tmp_path: Path) -> None:
    proc = run_script(export("!echo home=$HOME").script, tmp_path)
    assert proc.stdout.strip() == f"home={tmp_path}"


def test_writefile_then_run_and_cd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cells = [
        "%%writefile helper.py\nimport sys\nANSWER = 42\nprint('helper argv', sys.argv[1:])\n",
        "%%writefile -a helper.py\nEXTRA = 1\n",
        "n = 7\n%run helper.py --n {n}",
        "print('answer', ANSWER, EXTRA)",
        "%cd sub\nhere = %pwd\nprint('cwd', here)",
    ]
    proc = run_script(export(*cells).script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Writing helper.py", "Appending to helper.py", "helper argv ['--n', '7']", "answer 42 1",
        f"cwd {tmp_path / 'sub'}",
    ]


def test_env_get_and_set(tmp_path: Path) -> None:
    proc = run_script(export("%env GREETING=hi there", "g = %env GREETING\nprint(g)").script, tmp_path)
    assert proc.stdout.splitlines() == ["env: GREETING=hi there", "hi there"]


def test_capture_into_a_name(tmp_path: Path) -> None:
    cells = ["%%capture cap\nprint('hidden')", "print('captured:', cap.stdout.strip())"]
    proc = run_script(export(*cells).script, tmp_path)
    assert proc.stdout.splitlines() == ["captured: hidden"]


def test_timing_magics_print_times(tmp_path: Path) -> None:
    cells = ["%time x = sum(range(10))", "%timeit -n 2 -r 3 sum(range(10))", "%%time\ny = x + 1", "print(x, y)"]
    proc = run_script(export(*cells).script, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("Wall time: ") for line in lines) == 2
    assert sum(line.startswith("CPU times: user ") for line in lines) == 2
    assert any("per loop (mean +- std. dev. of 3 runs, 2 loops each)" in line for line in lines)
    assert lines[-1] == "45 46"


def test_echo_outputs_prints_last_expressions(tmp_path: Path) -> None:
    cells = ["x = 6\nx * 7", "None", "x;", "'text'", "print('printed')"]
    proc = run_script(export(*cells, echo_outputs=True).script, tmp_path)
    assert proc.stdout.splitlines() == ["42", "'text'", "printed"]


def test_display_prints_repr(tmp_path: Path) -> None:
    proc = run_script(export("display({'a': 1}, 'x')").script, tmp_path)
    assert proc.stdout.splitlines() == ["{'a': 1}", "'x'"]


def test_matplotlib_backend_is_agg(tmp_path: Path) -> None:
    proc = run_script(export("%matplotlib inline", "import os\nprint(os.environ['MPLBACKEND'])").script, tmp_path)
    assert proc.stdout.strip() == "Agg"


def test_lenient_export_of_unsupported_magic_runs(tmp_path: Path) -> None:
    result = export_notebook(NOTEBOOKS / "unsupported_magic.ipynb", lenient=True)
    proc = run_script(result.script, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "x is 1"
    assert len(result.warnings) == 2


def test_a_notebook_without_parameters_gets_no_parameter_helpers(tmp_path: Path) -> None:
    """Only what is used is emitted: no flags, so no ~80 lines of argparse helpers; --help still answers
    and a stray flag is refused (exit 2)."""
    result = export("import math\nprint('area', round(math.pi * 2 ** 2, 2))")
    assert "_parse_params" not in result.script and "_param_value" not in result.script
    assert len(result.script.splitlines()) < 25, result.script
    proc = run_script(result.script, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "area 12.57", proc.stderr
    helped = run_script(result.script, tmp_path, "--help")
    assert helped.returncode == 0 and "exported by jupyter-ptcuda" in helped.stdout and "usage:" in helped.stdout
    stray = run_script(result.script, tmp_path, "--lr", "1")
    assert stray.returncode == 2 and "unrecognized arguments: --lr 1" in stray.stderr
