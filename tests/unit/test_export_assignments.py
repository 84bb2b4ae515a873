"""Notebooks with no cell tagged ``parameters``: top-level literal assignments become the script's flags
(``-p NAME=VALUE`` for ``jupyter ptcuda run``, ``params`` of ``POST jobs``). What the report says, what
the script does with the flag, and the error for a name that cannot be set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat
import pytest

from jupyter_ptcuda.errors import ConfigError
from jupyter_ptcuda.export import export_notebook
from jupyter_ptcuda.export.cli import add_arguments, run
from jupyter_ptcuda.jobs.request import params_to_flags, parse_param
from tests.unit.test_export_support import NOTEBOOKS, export, notebook, run_script

TRAIN = ("import math\nmax_steps = 200000  # how long\nlr: float = -1e-3\nname = 'run'\namp = False\n"
         "layers = [64, 32]\nckpt = None\n")
SHOW = "print(max_steps, lr, name, amp, layers, ckpt)"


def notes(result) -> dict[str, str]:
    """{source: action} of the report's parameters lines."""
    return {e["source"]: e["action"] for e in result.report if e["kind"] == "parameters"}


def test_literal_assignments_become_flags() -> None:
    result = export(TRAIN, SHOW)
    assert result.parameters == {
        "max_steps": {"type": "int", "default": 200000, "cell": 1, "inferred": True},
        "lr": {"type": "float", "default": -0.001, "cell": 1, "inferred": True},
        "name": {"type": "str", "default": "run", "cell": 1, "inferred": True},
        "amp": {"type": "bool", "default": False, "cell": 1, "inferred": True},
        "layers": {"type": "json", "default": [64, 32], "cell": 1, "inferred": True},
        "ckpt": {"type": "json", "default": None, "cell": 1, "inferred": True},
    }
    assert notes(result)["max_steps = 200000  # how long"] == (
        "flag --max-steps (int): a top-level assignment, as no cell is tagged parameters")


def test_flags_set_the_assignments(tmp_path: Path) -> None:
    script = export(TRAIN, SHOW).script
    assert run_script(script, tmp_path).stdout.strip() == "200000 -0.001 run False [64, 32] None"
    proc = run_script(script, tmp_path, "--max-steps", "2000", "--lr", "0.5", "--name", "big", "--amp",
                      "--layers", "[8]", "--ckpt", "best.pt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2000 0.5 big True [8] best.pt"
    help_text = run_script(script, tmp_path, "--help").stdout
    assert "--max-steps INT" in help_text and "No cell is tagged 'parameters'" in help_text


def test_run_p_values_reach_the_script(tmp_path: Path) -> None:
    """``run -p NAME=VALUE`` as the CLI parses it, through params_to_flags, into the exported script."""
    result = export(TRAIN, SHOW)
    params = dict(parse_param(p) for p in ["max_steps=2000", "amp=true", "name=a b", "layers=[1, 2]"])
    flags = params_to_flags(params, result.parameters)
    assert flags == ["--max-steps", "2000", "--amp", "--name", "a b", "--layers", "[1, 2]"]
    assert run_script(result.script, tmp_path, *flags).stdout.strip() == "2000 -0.001 a b True [1, 2] None"


def test_unknown_name_lists_the_candidates() -> None:
    kinds = export(TRAIN, SHOW).parameters
    with pytest.raises(ConfigError) as err:
        params_to_flags({"max_step": 2000}, kinds)
    assert str(err.value) == (
        "unknown parameter(s) max_step; no cell is tagged 'parameters', so the names that can be set are the "
        "top-level assignments of literal values: max_steps (cell 1), lr (cell 1), name (cell 1), amp (cell 1), "
        "layers (cell 1), ckpt (cell 1). Did you mean max_steps?")
    with pytest.raises(ConfigError, match=r"the notebook's parameters \(cell 3\) are: lr, epochs"):
        params_to_flags({"momentum": 0.9}, export_notebook(NOTEBOOKS / "train_magics.ipynb").parameters)
    with pytest.raises(ConfigError, match="the notebook has nothing to set: no cell is tagged 'parameters'"):
        params_to_flags({"lr": 1}, export("import os\nprint(os.getcwd())").parameters)


def test_cli_run_rejects_an_unknown_name_before_any_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_ptcuda.cli import main as ptcuda

    nbformat.write(nbformat.from_dict(notebook(TRAIN, SHOW)), tmp_path / "nb.ipynb")
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # never reached
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    assert ptcuda(["run", str(tmp_path / "nb.ipynb"), "-p", "maxsteps=10"]) == 1
    err = capsys.readouterr().err
    assert "unknown parameter(s) maxsteps; no cell is tagged 'parameters'" in err
    assert "max_steps (cell 1)" in err and "Did you mean max_steps?" in err


def test_cli_export_names_the_inferred_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.from_dict(notebook(TRAIN, SHOW)), path)
    assert run(parser.parse_args([str(path), "-o", str(tmp_path / "train.py")])) == 0
    err = capsys.readouterr().err.splitlines()
    assert "cell 1: max_steps = 200000  # how long -> flag --max-steps (int): a top-level assignment, " \
           "as no cell is tagged parameters" in err
    assert ("parameters: no cell is tagged 'parameters', so these top-level assignments are the flags "
            "(`-p NAME=VALUE` / --NAME VALUE): max_steps (cell 1), lr (cell 1), name (cell 1), amp (cell 1), "
            "layers (cell 1), ckpt (cell 1)") in err


def test_a_parameters_cell_wins() -> None:
    result = export("steps = 10", ("lr = 0.1", ["parameters"]), "print(steps, lr)")
    assert list(result.parameters) == ["lr"] and result.parameters["lr"]["inferred"] is False
    assert "steps = _params" not in result.script


def test_the_first_assignment_is_the_parameter_and_a_repeat_keeps_the_flag(tmp_path: Path) -> None:
    """makemore's ``block_size = 3`` in two cells: the flag holds in both."""
    result = export("block_size = 3  # context", "print('a', block_size)", "block_size = 3", "print('b', block_size)")
    assert result.parameters["block_size"]["cell"] == 1
    assert notes(result)["block_size = 3"] == "--block-size sets this too (the same value as cell 1)"
    assert run_script(result.script, tmp_path, "--block-size", "5").stdout.splitlines() == ["a 5", "b 5"]


@pytest.mark.parametrize(
    ("cells", "why"),
    [
        (["lr = 0.1", "lr = 0.01"], "cell 2 sets lr again further down (lr = 0.01)"),
        (["lr = 1", "lr = 1.0"], "cell 2 sets lr again further down (lr = 1.0)"),  # another type
        (["lr = 0.1\nlr = lr / 2"], "this cell sets lr again further down (lr = lr / 2)"),
        (["lr = 0.1", "for lr in [1, 2]:\n    pass"], "cell 2 sets lr again further down (for lr in [1, 2]:)"),
        (["lr = 0.1", "lr += 1"], "cell 2 sets lr again further down (lr += 1)"),
        (["lr = 0.1", "def f():\n    global lr\n    lr = 2"], "cell 2 sets lr again further down (def f():)"),
        (["lr = 0.1", "import lr"], "cell 2 sets lr again further down (import lr)"),
        (["lr = 0.1", "[(lr := x) for x in (1, 2)]"], "cell 2 sets lr again further down"),
        (["lr = 0.1; print(lr)"], "shares its line with other code"),
        ([f"table = {list(range(100))}"], "its value is longer than 200 characters"),
        (["amp = True", "no_amp = 1"], "its flag --no-amp is already used by amp"),
        (["params_file = 'p.json'"], "its flag --params-file is already used by the script itself"),
    ],
)
def test_names_that_are_not_flags_are_reported(cells: list[str], why: str) -> None:
    result = export(*cells)
    actions = [a for a in notes(result).values() if a.startswith("not a flag")]
    assert len(actions) == 1 and actions[0].startswith(f"not a flag: {why}"), notes(result)


@pytest.mark.parametrize(
    "cell",
    ["_seed = 1", "losses = []", "cfg = {}", "x, y = 1, 2", "a = b = 1", "n = len('abc')", "s = {1, 2}",
     "t = b'x'", "if True:\n    k = 1", "x = float('inf')", "%time q = 1", "z = 1e999"],
)
def test_what_is_silently_not_a_parameter(cell: str) -> None:
    result = export(cell)
    assert result.parameters == {} and notes(result) == {}


def test_a_later_binding_of_a_tagged_parameter_warns() -> None:
    result = export(("lr = 0.1", ["parameters"]), "print(lr)", "lr = 0.5  # fine-tune")
    assert ("cell 3: lr = 0.5  # fine-tune: sets parameter lr again, after the parameters cell (cell 1); from here "
            "on the script uses this value, not --lr's") in result.warnings


def test_rest_result_marks_inferred_parameters() -> None:
    data = json.loads(json.dumps(export(TRAIN).to_json()))
    assert all(p["inferred"] is True and p["cell"] == 1 for p in data["parameters"].values())


def test_makemore_block_size_is_its_parameter() -> None:
    result = export_notebook(NOTEBOOKS / "makemore_part2_mlp.ipynb")
    assert result.parameters == {"block_size": {"type": "int", "default": 3, "cell": 5, "inferred": True}}
    assert [(e["cell"], e["action"]) for e in result.report if e["kind"] == "parameters"] == [
        (5, "flag --block-size (int): a top-level assignment, as no cell is tagged parameters"),
        (7, "--block-size sets this too (the same value as cell 5)"),
    ]
