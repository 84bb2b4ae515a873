"""What each IPython magic, ``!cmd`` and ``x = !cmd`` becomes in the script.

``transform.MagicRewriter`` finds the ``get_ipython().<method>(...)`` calls that IPython's
``TransformerManager`` writes for magic syntax and calls :func:`translate` on each. A
translator returns a :class:`~jupyter_ptcuda.export.context.Translation` or raises
:class:`~jupyter_ptcuda.export.context.Unsupported`. Bodies that stay Python (``%%time``,
``%time CODE``, ``%%capture``, ``%%timeit``) are rendered through ``ctx.render``, so
magics inside them are translated too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from IPython.core.alias import default_aliases

from jupyter_ptcuda.export.context import ExportContext, Translation, Unsupported, block
from jupyter_ptcuda.export.interpolate import expand
from jupyter_ptcuda.export.requirements import pip_install, pip_translation

#: Line magics that only change what Jupyter displays: dropped from the script.
DISPLAY_ONLY = frozenset(
    "matplotlib config autoreload aimport pinfo pinfo2 psearch pdef pdoc psource pfile "
    "who whos lsmagic magic quickref xmode colors pprint precision page".split()
)
#: Cell magics that only display their body (HTML, JS, ...): dropped.
DISPLAY_CELLS = frozenset("html javascript js latex markdown svg".split())
#: IPython's default shell aliases (``%ls``, ``%mkdir`` ...): name -> command template.
ALIASES = dict(default_aliases())


def magic_source(method: str, args: list[str]) -> str:
    """The magic as the user typed it, rebuilt from the call TransformerManager wrote."""
    if method in ("system", "getoutput"):
        return "!" + args[0]
    if method == "run_cell_magic":
        return f"%%{args[0]} {args[1]}".rstrip()
    name, arg = args[0], args[1]
    if name in ("pinfo", "pinfo2", "psearch"):
        return arg + ("??" if name == "pinfo2" else "?")
    return f"%{name} {arg}".rstrip()


def translate(method: str, args: list[str], ctx: ExportContext, *, statement: bool) -> Translation:
    """Translate one ``get_ipython().method(*args)`` call; ``statement``: it is a whole statement."""
    source = magic_source(method, args)
    if method in ("system", "getoutput"):
        return shell(args[0], ctx, source, lines=method == "getoutput")
    if method == "run_line_magic":
        name, arg = args
        if name in DISPLAY_ONLY or (name in ("load_ext", "reload_ext") and arg.strip() == "autoreload"):
            why = "the script sets MPLBACKEND=Agg instead" if name == "matplotlib" else "display only"
            return Translation("dropped", source, f"dropped: {why}", text="", expr=ast.Constant(None))
        if name.startswith("%"):
            raise Unsupported(f"%{name} is a cell magic only on the first line of a cell", source)
        handler = _LINE.get(name)
        if handler is None and name in ALIASES:
            return alias(name, arg, ctx, source)
        if handler is None:
            raise Unsupported(f"%{name} has no plain-Python equivalent", source)
        return handler(arg, ctx, source, statement)
    name, line, body = args
    if name in DISPLAY_CELLS:
        return Translation("dropped", source, "dropped: display only", text="", expr=ast.Constant(None))
    cell_handler = _CELL.get(name)
    if cell_handler is None:
        raise Unsupported(f"%%{name} has no plain-Python equivalent", source)
    if not statement:
        raise Unsupported(f"{source} cannot be used as a value", source)
    return cell_handler(line, body, ctx, source)


def _dotted(name: str) -> ast.expr:
    """``a.b.c`` as an expression."""
    node: ast.expr = ast.Name(name.split(".")[0], ast.Load())
    for attr in name.split(".")[1:]:
        node = ast.Attribute(node, attr, ast.Load())
    return node


def _call(name: str, *args: ast.expr, **kwargs: ast.expr) -> ast.Call:
    return ast.Call(_dotted(name), list(args), [ast.keyword(k, v) for k, v in kwargs.items()])


def str_literal(text: str) -> str:
    """``text`` as a Python literal; multi-line text as a readable ``'''\\`` block."""
    if "\n" not in text.rstrip("\n") or any(c < " " and c not in "\n\t" for c in text):
        return repr(text)
    quote = "'''" if "'''" not in text else '"""' if '"""' not in text else None
    if quote is None:
        return repr(text)
    body = text.replace("\\", "\\\\")
    if body.endswith(quote[0]):
        body = body[:-1] + "\\" + quote[0]
    return quote + "\\\n" + body + quote


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _options(arg: str, spec: str, source: str) -> tuple[dict[str, str], str]:
    """Leading getopt-style options (``spec`` like ``"n:r:q"``) and the rest, as IPython parses them."""
    opts: dict[str, str] = {}
    rest = arg.strip()
    while rest.startswith("-") and len(rest) > 1 and not rest[1].isspace():
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        i = 1
        while i < len(word):
            letter = word[i]
            if letter not in spec.replace(":", ""):
                raise Unsupported(f"option -{letter} of {source.split()[0]} is not supported", source)
            if spec[spec.index(letter) + 1 : spec.index(letter) + 2] == ":":
                value = word[i + 1 :]
                if not value:
                    value, _, rest = rest.partition(" ")
                    rest = rest.lstrip()
                opts[letter] = value
                break
            opts[letter] = ""
            i += 1
    return opts, rest


# ---- shell commands and pip ---------------------------------------------------------------------

def shell(cmd: str, ctx: ExportContext, source: str, *, lines: bool) -> Translation:
    """``!cmd`` (``lines=False``) or ``x = !cmd`` / ``%sx cmd`` (``lines=True``)."""
    pip = pip_install(cmd)
    if pip is not None:
        return pip_translation(*pip, ctx, source, ast.List([], ast.Load()) if lines else ast.Constant(None))
    expanded = expand(cmd, ctx, shell=True)
    helper = "_sh_lines" if lines else "_sh"
    ctx.use(helper)
    action = "subprocess, list of output lines" if lines else "subprocess"
    action += "; a non-zero exit fails the script"
    if expanded.expanded:
        action += "; {...}/$name values expanded and shell-quoted"
    return Translation("shell", source, action, expr=_call(helper, expanded.node))


def alias(name: str, arg: str, ctx: ExportContext, source: str) -> Translation:
    """``%ls -l`` and IPython's other default aliases: the shell command they stand for."""
    template = ALIASES[name]
    if "%s" in template:
        raise Unsupported(f"%{name} (an alias with %s arguments) is not supported", source)
    cmd = template.replace("%l", arg) if "%l" in template else f"{template} {arg}".rstrip()
    return shell(cmd, ctx, source, lines=False)


# ---- line magics --------------------------------------------------------------------------------

LineHandler = Callable[[str, ExportContext, str, bool], Translation]


def _cd(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    rest = arg.strip()
    if rest.startswith("-q ") or rest == "-q":
        rest = rest[2:].strip()
    if rest.startswith("-"):
        raise Unsupported(f"{source}: IPython's directory history and bookmarks do not exist in a script", source)
    ctx.need("os")
    path = expand(_unquote(rest) or "~", ctx, shell=False).node
    return Translation("line_magic", source, "os.chdir", expr=_call("os.chdir", _call("os.path.expanduser", path)))


def _env(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    ctx.need("os")
    if not arg.strip():  # like IPython, hide what looks like a secret
        expr = ast.parse(
            "{k: '<hidden>' if any(s in k.lower() for s in ('key', 'token', 'secret')) else v"
            " for k, v in os.environ.items()}", mode="eval").body
        return Translation("line_magic", source, "dict(os.environ), secrets hidden", expr=expr)
    if len(arg.split("=" if "=" in arg else " ")) == 1:  # IPython's test for "get"
        key = expand(arg.strip(), ctx, shell=False).node
        return Translation("line_magic", source, "os.environ[...]",
                           expr=ast.Subscript(_dotted("os.environ"), key, ast.Load()))
    return _set_env(arg, ctx, source, statement)


def _set_env(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    split = "=" if "=" in arg else " "
    bits = arg.split(split, 1)
    if len(bits) < 2 or not bits[0].strip() or any(c.isspace() for c in bits[0].strip()):
        raise Unsupported(f"{source}: expected NAME=value or NAME value", source)
    if not statement:
        raise Unsupported(f"{source} cannot be used as a value", source)
    ctx.need("os")
    name = bits[0].strip()
    value = ast.unparse(expand(bits[1].strip(), ctx, shell=False).node)
    text = f"os.environ[{name!r}] = {value}\nprint({'env: ' + name + '='!r} + os.environ[{name!r}])"
    return Translation("line_magic", source, "os.environ[...] = ...", text=text)


def _pwd(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    ctx.need("os")
    return Translation("line_magic", source, "os.getcwd()", expr=_call("os.getcwd"))


def _sx(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    return shell(arg, ctx, source, lines=True)


def _pip_magic(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    pip = pip_install("pip " + arg)
    if pip is not None:
        return pip_translation(*pip, ctx, source, ast.Constant(None))
    ctx.need("sys")
    ctx.use("_sh", "_q")
    cmd = expand(arg, ctx, shell=True).node
    full = ast.BinOp(ast.BinOp(_call("_q", _dotted("sys.executable")), ast.Add(), ast.Constant(" -m pip ")),
                     ast.Add(), cmd)
    return Translation("shell", source, "python -m pip in a subprocess", expr=_call("_sh", full))


def _run(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    opts, rest = _options(arg, "im", source)
    if not rest:
        raise Unsupported(f"{source}: nothing to run", source)
    if "m" not in opts and rest.split()[0].endswith((".ipynb", ".ipy")):
        raise Unsupported(f"{source}: running a notebook is not supported; export it too and %run the .py", source)
    if not statement:
        raise Unsupported(f"{source} cannot be used as a value", source)
    ctx.use("_run")
    kwargs: dict[str, ast.expr] = {}
    if "m" in opts:
        kwargs["module"] = ast.Constant(True)
    if "i" in opts:
        kwargs["init_globals"] = _call("globals")
    call = _call("_run", expand(rest, ctx, shell=True).node, **kwargs)
    return Translation("line_magic", source, "runpy; its globals are merged into the script's",
                       text=f"globals().update({ast.unparse(call)})")


def _time(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    if statement:
        ctx.use("_time")
        assert ctx.render is not None
        return Translation("line_magic", source, "timed with time.perf_counter",
                           text="with _time():\n" + block(ctx.render(arg, False)))
    try:
        expr = ast.parse(arg.strip(), mode="eval").body
    except SyntaxError:
        raise Unsupported(f"{source}: as a value, %time needs an expression", source) from None
    ctx.use("_timed")
    lam = ast.Lambda(ast.arguments([], [], None, [], [], None, []), expr)
    return Translation("line_magic", source, "timed with time.perf_counter", expr=_call("_timed", lam))


def _timeit_text(code: str, opts: dict[str, str], ctx: ExportContext) -> str:
    ctx.use("_timeit")
    kwargs = "".join(
        f", {key}={int(opts[letter])}" for letter, key in (("n", "number"), ("r", "repeat")) if letter in opts
    ) + (", quiet=True" if "q" in opts else "")
    try:
        expr = ast.parse(code.strip(), mode="eval").body
        return f"_timeit(lambda: {ast.unparse(expr)}{kwargs})"
    except SyntaxError:
        assert ctx.render is not None
        return f"def _timeit_stmt():\n{block(ctx.render(code, False))}_timeit(_timeit_stmt{kwargs})"


def _timeit(arg: str, ctx: ExportContext, source: str, statement: bool) -> Translation:
    opts, code = _options(arg, "n:r:tcp:q", source)
    if not statement:
        raise Unsupported(f"{source} cannot be used as a value (-o is not supported)", source)
    for letter in "nr":
        if letter in opts and not opts[letter].isdigit():
            raise Unsupported(f"{source}: -{letter} needs a number", source)
    return Translation("line_magic", source, "timed with timeit", text=_timeit_text(code, opts, ctx))


_LINE: dict[str, LineHandler] = {
    "cd": _cd, "env": _env, "set_env": _set_env, "pwd": _pwd, "sx": _sx, "system": _sx,
    "pip": _pip_magic, "run": _run, "time": _time, "timeit": _timeit,
}


# ---- cell magics --------------------------------------------------------------------------------

CellHandler = Callable[[str, str, ExportContext, str], Translation]


def _cell_time(line: str, body: str, ctx: ExportContext, source: str) -> Translation:
    if line.strip():
        raise Unsupported(f"{source}: %%time takes no arguments", source)
    ctx.use("_time")
    assert ctx.render is not None
    return Translation("cell_magic", source, "body kept, timed with time.perf_counter",
                       text="with _time():\n" + block(ctx.render(body, ctx.echo_outputs)))


def _cell_capture(line: str, body: str, ctx: ExportContext, source: str) -> Translation:
    words = line.split()
    flags = {w for w in words if w.startswith("-")}
    names = [w for w in words if not w.startswith("-")]
    if flags - {"--no-stdout", "--no-stderr", "--no-display"} or len(names) > 1 or not all(
            n.isidentifier() for n in names):
        raise Unsupported(f"{source}: expected %%capture [--no-stdout] [--no-stderr] [--no-display] [name]", source)
    assert ctx.render is not None
    text = ctx.render(body, ctx.echo_outputs)
    if not names:
        return Translation("cell_magic", source, "body kept; its output goes to the log", text=text)
    ctx.use("_capture")
    args = ", ".join(f"{s}=False" for s in ("stdout", "stderr") if f"--no-{s}" in flags)
    return Translation("cell_magic", source, f"body kept; output captured in {names[0]}",
                       text=f"with _capture({args}) as {names[0]}:\n" + block(text))


def _cell_writefile(line: str, body: str, ctx: ExportContext, source: str) -> Translation:
    first, _, rest = line.strip().partition(" ")
    append = first in ("-a", "--append")
    path = _unquote(rest if append else line)
    if not path:
        raise Unsupported(f"{source}: no file name", source)
    ctx.use("_writefile")
    target = ast.unparse(expand(path, ctx, shell=False).node)
    return Translation("cell_magic", source, "writes the file",
                       text=f"_writefile({target}, {str_literal(body)}{', append=True' if append else ''})")


def _cell_shell(name: str) -> CellHandler:
    def handler(line: str, body: str, ctx: ExportContext, source: str) -> Translation:
        words = set(line.split())
        if words - {"--no-raise-error", "--raise-error"}:
            raise Unsupported(f"{source}: of IPython's script options only --no-raise-error is supported", source)
        ctx.use("_sh")
        check = "--no-raise-error" not in words
        action = f"runs in {name}" + ("; a non-zero exit fails the script" if check else "")
        return Translation("cell_magic", source, action,
                           text=f"_sh({str_literal(body)}, shell={name!r}{'' if check else ', check=False'})")
    return handler


def _cell_timeit(line: str, body: str, ctx: ExportContext, source: str) -> Translation:
    opts, setup = _options(line, "n:r:tcp:q", source)
    assert ctx.render is not None
    text = _timeit_text(body, opts, ctx)
    if setup.strip():
        text = ctx.render(setup, False) + "\n" + text
    return Translation("cell_magic", source, "setup runs once, body timed with timeit", text=text)


_CELL: dict[str, CellHandler] = {
    "time": _cell_time, "capture": _cell_capture, "writefile": _cell_writefile,
    "bash": _cell_shell("bash"), "sh": _cell_shell("sh"), "timeit": _cell_timeit,
}
