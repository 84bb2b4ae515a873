"""The small helpers an exported script carries in its prelude, and the code that emits them.

Each helper below is copied *verbatim* (``inspect.getsource``) into the scripts that use it, so
they must only use the modules listed for them in :data:`HELPERS` and each other. They carry no
annotations on purpose: a script runs on whatever Python the job's image has, which may be older
than this package's. Only the helpers a script uses are emitted (:func:`prelude`, called by
``notebook.py`` after every cell has been rewritten). The tests import them directly too.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import importlib.util
import inspect
import io
import json
import math
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import threading
import time
import timeit
import types
from collections.abc import Callable
from dataclasses import dataclass


def _sh(cmd, shell=None, check=True):
    """Run ``!cmd`` (or a ``%%bash`` / ``%%sh`` cell); output goes to the log.

    IPython only prints a non-zero exit; here it raises CalledProcessError so a batch job fails
    loudly. ``check=False`` is ``%%bash --no-raise-error``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    executable = (shutil.which(shell) or shell) if shell else (os.environ.get("SHELL") or None)
    subprocess.run(cmd, shell=True, executable=executable, check=check)


def _sh_lines(cmd):
    """``x = !cmd``: the command's output as a list of lines (stderr goes to the log).

    A non-zero exit raises CalledProcessError (IPython would return the error text as lines).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    out = subprocess.run(
        cmd, shell=True, executable=os.environ.get("SHELL") or None, check=True,
        stdout=subprocess.PIPE, text=True, errors="replace",
    ).stdout
    return out.splitlines()


def _q(value):
    """An interpolated value as one shell word."""
    return shlex.quote(str(value))


def _q_dq(value):
    """An interpolated value inside "...": escape what the shell would expand."""
    return "".join("\\" + c if c in '\\"$`' else c for c in str(value))


def _q_sq(value):
    """An interpolated value inside '...'."""
    return str(value).replace("'", "'\\''")


def _echo(value):
    """``--echo-outputs``: print a cell's last bare expression, as Jupyter shows it (not None)."""
    if value is not None:
        print(repr(value))


def display(*objs, **kwargs):
    """Stand-in for IPython's ``display()``: print each object's repr to the log."""
    for obj in objs:
        print(repr(obj))


def _fmt_time(seconds):
    """A time span the way IPython's %time prints it (3 significant digits)."""
    if seconds >= 60.0:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}min {int(rest)}s"
    order = min(-int(math.floor(math.log10(seconds)) // 3), 3) if seconds > 0 else 3
    return f"{seconds * 1000 ** order:.3g} {('s', 'ms', 'us', 'ns')[order]}"


@contextlib.contextmanager
def _time():
    """``%time`` / ``%%time``: run the block, then print CPU and wall time like IPython."""
    wall, cpu = time.perf_counter(), os.times()
    yield
    now = os.times()
    user, system = now.user - cpu.user, now.system - cpu.system
    print(f"CPU times: user {_fmt_time(user)}, sys: {_fmt_time(system)}, total: {_fmt_time(user + system)}")
    print(f"Wall time: {_fmt_time(time.perf_counter() - wall)}")


def _timed(fn):
    """``x = %time expr``: time ``fn()`` and return its value."""
    with _time():
        return fn()


def _timeit(fn, number=0, repeat=7, quiet=False):
    """``%timeit`` / ``%%timeit``: best-effort IPython output (``number=0``: pick like IPython)."""
    timer = timeit.Timer(fn)
    if not number:
        number = timer.autorange()[0]
    runs = [t / number for t in timer.repeat(repeat, number)]
    mean = sum(runs) / len(runs)
    std = (sum((r - mean) ** 2 for r in runs) / len(runs)) ** 0.5
    if not quiet:
        print(f"{_fmt_time(mean)} +- {_fmt_time(std)} per loop "
              f"(mean +- std. dev. of {repeat} runs, {number} loops each)")


def _run(cmdline, module=False, init_globals=None):
    """``%run [-m] script args``: run it as ``__main__`` with its own sys.argv; return its globals.

    ``sys.exit(0)`` in the script ends only the script; a non-zero exit ends the job.
    """
    argv = shlex.split(cmdline)
    if not module and not os.path.exists(argv[0]) and os.path.exists(argv[0] + ".py"):
        argv[0] += ".py"
    saved, sys.argv = sys.argv, argv
    try:
        if module:
            return runpy.run_module(argv[0], init_globals=init_globals, run_name="__main__", alter_sys=True)
        return runpy.run_path(argv[0], init_globals=init_globals, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
        return {}
    finally:
        sys.argv = saved


def _writefile(path, text, append=False):
    """``%%writefile [-a] path``: write the cell's text, with IPython's message."""
    path = os.path.expanduser(path)
    exists = os.path.exists(path)
    print("Appending to" if append and exists else "Overwriting" if exists else "Writing", path)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def _capture(stdout=True, stderr=True):
    """``%%capture var``: the block's printed output ends up in ``var.stdout`` / ``var.stderr``."""
    out, err = io.StringIO(), io.StringIO()
    captured = types.SimpleNamespace(stdout="", stderr="", outputs=[])
    captured.show = lambda: (sys.stdout.write(captured.stdout), sys.stderr.write(captured.stderr))
    with contextlib.ExitStack() as stack:
        if stdout:
            stack.enter_context(contextlib.redirect_stdout(out))
        if stderr:
            stack.enter_context(contextlib.redirect_stderr(err))
        try:
            yield captured
        finally:
            captured.stdout, captured.stderr = out.getvalue(), err.getvalue()


def _param_value(kind, value, loose=False):
    """A parameter value of type ``kind`` from a flag (str) or a --params-file (any JSON value).

    ``loose``: a ``json`` parameter whose default is None also takes a plain string.
    """
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).lower() in ("true", "yes", "1")
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    if kind == "json":
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            if loose:
                return value
            raise argparse.ArgumentTypeError(f"not valid JSON: {value!r}") from None
    if kind == "str":
        return str(value)
    if isinstance(value, bool) or (kind == "int" and isinstance(value, float) and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"expected {kind}, got {value!r}")
    try:
        return int(value) if kind == "int" else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {value!r}") from None


def _parse_params(spec, description):
    """The command line: ``--NAME VALUE`` per parameter in ``spec`` ({name: (kind, default)}) and
    ``--params-file FILE``. Returns only the values given (file first, then flags); argparse
    exits 2 with a message on an unknown flag or a bad value.
    """
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--params-file", metavar="FILE",
                        help="JSON file of parameter values (YAML if PyYAML is installed); flags win")
    for name, (kind, default) in spec.items():
        flags = ["--" + name.replace("_", "-")] + (["--" + name] if "_" in name else [])
        text = f"{kind}, default {default!r}".replace("%", "%%")
        if kind == "bool":
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*flags, dest=name, action="store_true", default=argparse.SUPPRESS, help=text)
            group.add_argument(*["--no-" + f[2:] for f in flags], dest=name, action="store_false",
                               default=argparse.SUPPRESS)
        else:
            def convert(v, kind=kind, loose=default is None):
                return _param_value(kind, v, loose)
            parser.add_argument(*flags, dest=name, metavar=kind.upper(), type=convert,
                                default=argparse.SUPPRESS, help=text)
    args = vars(parser.parse_args())
    path, values = args.pop("params_file"), {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                if path.endswith((".yaml", ".yml")):
                    import yaml
                    data = yaml.safe_load(f)
                else:
                    data = json.load(f)
        except Exception as exc:
            parser.error(f"--params-file {path}: {exc}")
        if not isinstance(data, dict):
            parser.error(f"--params-file {path}: expected an object of parameter values")
        unknown = sorted(set(data) - set(spec))
        if unknown:
            parser.error(f"--params-file {path}: unknown parameters: {', '.join(unknown)}")
        for name, value in data.items():
            try:
                values[name] = _param_value(spec[name][0], value, spec[name][1] is None)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"--params-file {path}: {name}: {exc}")
    values.update(args)
    return values


def _new_cell(n):
    """``# %% cell N`` begins (a job's train.py): save the figures the cell before left open, as Jupyter
    shows them at the end of a cell, and remember N (a ``plt.show()`` saves under it). Figures go to
    ``$JUPYTER_PTCUDA_OUTPUT_DIR/figures/cell-<N>-<k>.png``; outside a job (no such variable) nothing.
    """
    state = _new_cell.__dict__
    if not os.environ.get("JUPYTER_PTCUDA_OUTPUT_DIR"):
        return
    if "cell" not in state:
        state["counts"] = {}
        if "matplotlib.pyplot" in sys.modules:
            _patch_show(sys.modules["matplotlib.pyplot"])
        else:
            sys.meta_path.insert(0, _PyplotShow())
    else:
        _save_figures()
    state["cell"] = n
    _cell_streams(n)


def _cell_pump(src, real, folder, name):
    """A thread of ``_cell_streams``: copy the pipe ``src`` to the real stream ``real`` (first, unchanged, so the
    job's log is as before) and each cell's part to ``<folder>/<N>.<name>``, switching at the markers that
    ``_cell_streams`` writes (they never reach the log). At most 8 MiB per cell and stream are kept."""
    start, end, limit = b"\x00\x1eptcuda-cell ", b"\x1e\x00", 8 << 20
    out, kept, pending = None, 0, b""

    def emit(chunk):
        nonlocal kept
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(real, view):]
            except OSError:
                break
        if out is not None and kept < limit and chunk:
            try:
                out.write(chunk[: limit - kept])
                out.flush()
            except OSError:
                pass
            kept += len(chunk)

    while True:
        try:
            data = os.read(src, 65536)
        except OSError:
            data = b""
        if not data:
            emit(pending)
            break
        pending += data
        while True:
            i = pending.find(start)
            j = pending.find(end, i + len(start)) if i >= 0 else -1
            if i < 0 or j < 0:
                held = i if i >= 0 and len(pending) - i < 64 else len(pending)
                for k in range(len(start) - 1, 0, -1):  # the beginning of a marker: wait for the rest
                    if i < 0 and pending.endswith(start[:k]):
                        held = len(pending) - k
                        break
                emit(pending[:held])
                pending = pending[held:]
                break
            emit(pending[:i])
            number = pending[i + len(start):j].decode("ascii", "replace")
            pending = pending[j + len(end):]
            if out is not None:
                out.close()
            out, kept = None, 0
            if number.isdigit():
                try:
                    out = open(os.path.join(folder, f"{number}.{name}"), "ab")
                except OSError:
                    out = None
    if out is not None:
        out.close()


def _cell_streams_end():
    """At exit: give the real stdout/stderr back (the pumps see the end of their pipes) and let them finish."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for fd, real, thread in _cell_streams.__dict__.get("fds", []):
        try:
            os.dup2(real, fd)
        except OSError:
            pass
        thread.join(5)


def _cell_streams(n):
    """A job's train.py from a notebook: from cell N on, what the script and its commands write to stdout and
    stderr also goes to ``$JUPYTER_PTCUDA_OUTPUT_DIR/.cells/<N>.stdout|.stderr`` (the server builds the
    executed notebook from them). File descriptors 1 and 2 become pipes that ``_cell_pump`` threads copy
    to the real ones; a marker written at each new cell says where one cell ends. Rank 0 only."""
    state = _cell_streams.__dict__
    if "fds" not in state:
        state["fds"] = []
        out_dir = os.environ.get("JUPYTER_PTCUDA_OUTPUT_DIR")
        if not out_dir or os.environ.get("RANK", "0") != "0":
            return
        folder = os.path.join(out_dir, ".cells")
        try:
            os.makedirs(folder, exist_ok=True)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                (sys.stdout if fd == 1 else sys.stderr).flush()
                real = os.dup(fd)
                src, sink = os.pipe()
                os.dup2(sink, fd)
                os.close(sink)
                thread = threading.Thread(target=_cell_pump, args=(src, real, folder, name), daemon=True)
                thread.start()
                state["fds"].append((fd, real, thread))
        except (OSError, ValueError):
            pass
        if state["fds"]:
            atexit.register(_cell_streams_end)
    for fd, _, _ in state["fds"]:
        try:
            (sys.stdout if fd == 1 else sys.stderr).flush()
            os.write(fd, b"\x00\x1eptcuda-cell %d\x1e\x00" % n)
        except (OSError, ValueError):
            pass


def _save_figures():
    """Save every open pyplot figure with something drawn in it (as IPython's inline backend shows it:
    PNG, tight bounding box), then close them all. Only rank 0 of a torchrun job saves; a figure that
    cannot be saved is reported on stderr and never ends the job."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    state = _new_cell.__dict__
    n, counts = state.get("cell", 0), state.setdefault("counts", {})
    folder = os.path.join(os.environ.get("JUPYTER_PTCUDA_OUTPUT_DIR", "."), "figures")
    try:
        numbers = list(plt.get_fignums())
        if os.environ.get("RANK", "0") != "0":
            numbers = []
        for number in numbers:
            fig = plt.figure(number)
            if not fig.axes and not fig.lines:
                continue
            counts[n] = counts.get(n, 0) + 1
            name = f"cell-{n}-{counts[n]}.png"
            try:
                os.makedirs(folder, exist_ok=True)
                fig.savefig(os.path.join(folder, name), format="png", bbox_inches="tight")
                print(f"<Figure saved: figures/{name}>", flush=True)
            except Exception as exc:
                print(f"jupyter-ptcuda: figure {number} of cell {n} not saved: {exc!r}", file=sys.stderr)
        plt.close("all")
    except Exception as exc:
        print(f"jupyter-ptcuda: the figures of cell {n} were not saved: {exc!r}", file=sys.stderr)


def _patch_show(plt):
    """``plt.show()`` saves the open figures (and closes them, as in Jupyter); so does the end of the
    script. Registered after matplotlib's own exit handler, so it runs before that closes them."""
    if getattr(plt.show, "_ptcuda", False):
        return

    def show(*args, **kwargs):
        _save_figures()

    show._ptcuda = True
    show.__doc__ = plt.show.__doc__
    plt.show = show
    atexit.register(_save_figures)


class _PyplotShow:
    """An import hook, used once: when the script imports ``matplotlib.pyplot``, patch it (_patch_show)."""

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _patch_show(module)

        loader.exec_module = exec_module
        return spec


@dataclass(frozen=True)
class Helper:
    """A runtime helper: the function to copy, the modules it imports, helpers it calls."""

    func: Callable[..., object]
    modules: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


HELPERS: dict[str, Helper] = {
    "_q": Helper(_q, ("shlex",)),
    "_q_dq": Helper(_q_dq),
    "_q_sq": Helper(_q_sq),
    "_sh": Helper(_sh, ("os", "shutil", "subprocess", "sys")),
    "_sh_lines": Helper(_sh_lines, ("os", "subprocess", "sys")),
    "_fmt_time": Helper(_fmt_time, ("math",)),
    "_time": Helper(_time, ("contextlib", "os", "time"), ("_fmt_time",)),
    "_timed": Helper(_timed, (), ("_time",)),
    "_timeit": Helper(_timeit, ("timeit",), ("_fmt_time",)),
    "_run": Helper(_run, ("os", "runpy", "shlex", "sys")),
    "_writefile": Helper(_writefile, ("os",)),
    "_capture": Helper(_capture, ("contextlib", "io", "sys", "types")),
    "_param_value": Helper(_param_value, ("argparse", "json")),
    "_parse_params": Helper(_parse_params, ("argparse", "json"), ("_param_value",)),
    "_echo": Helper(_echo),
    "display": Helper(display),
    "_save_figures": Helper(_save_figures, ("os", "sys")),
    "_patch_show": Helper(_patch_show, ("atexit",), ("_save_figures",)),
    "_PyplotShow": Helper(_PyplotShow, ("importlib.util", "sys"), ("_patch_show",)),
    "_cell_pump": Helper(_cell_pump, ("os",)),
    "_cell_streams_end": Helper(_cell_streams_end, ("os", "sys")),
    "_cell_streams": Helper(_cell_streams, ("atexit", "os", "sys", "threading"), ("_cell_pump", "_cell_streams_end")),
    "_new_cell": Helper(_new_cell, ("os", "sys"), ("_save_figures", "_patch_show", "_PyplotShow", "_cell_streams")),
}


def _closure(names: set[str]) -> list[str]:
    """``names`` plus the helpers they call, in :data:`HELPERS` order (callees first)."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(HELPERS[name].needs)
    return [name for name in HELPERS if name in seen]


def prelude(helpers: set[str], modules: set[str]) -> tuple[list[str], str]:
    """The ``import`` lines and the helper definitions for a script using ``helpers``.

    ``modules`` are imports the generated code needs directly (``os`` for ``%cd`` ...).
    """
    names = _closure(helpers)
    imports = set(modules)
    for name in names:
        imports.update(HELPERS[name].modules)
    code = "\n\n".join(inspect.getsource(HELPERS[name].func).rstrip() + "\n" for name in names)
    return [f"import {module}" for module in sorted(imports)], code


_CELL_TITLE = re.compile(r"^# %% cell (\d+)(?: \(parameters\))?\s*$")  # a code cell's title (not "left out")


def add_figure_hooks(script: str) -> str:
    """A job's ``train.py``: the exported ``script`` with ``_new_cell(N)`` after each ``# %% cell N`` title,
    and the figure helpers before the first ``# %%`` part. Called by ``JobManager.submit`` for a notebook;
    what ``jupyter ptcuda export`` writes stays as it is. Only titles at the top level count (not a comment
    inside a statement or a string); a script with no cell, or that does not parse, is returned unchanged.
    """
    try:
        tree = ast.parse(script)
    except SyntaxError:
        return script
    inside: set[int] = set()
    for node in tree.body:
        inside.update(range(node.lineno + 1, (node.end_lineno or node.lineno) + 1))
    lines = script.splitlines(keepends=True)
    top = [i for i, line in enumerate(lines) if i + 1 not in inside and line.startswith("# %% ")]
    titles = {i: m.group(1) for i in top if (m := _CELL_TITLE.match(lines[i]))}
    if not titles:
        return script
    imports, code = prelude({"_new_cell"}, set())
    out = lines[: top[0]] + ["\n".join(imports) + "\n\n\n" + code.rstrip("\n") + "\n\n\n"]
    for i, line in enumerate(lines[top[0] :], top[0]):
        out.append(line)
        if i in titles:
            out.append(f"_new_cell({titles[i]})\n")
    return "".join(out)
