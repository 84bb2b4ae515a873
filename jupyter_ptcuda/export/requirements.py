"""``!pip install ...`` / ``%pip install ...``: not run by the script, listed as requirements.

``magics.py`` asks :func:`pip_install` whether a shell command (or ``%pip`` argument) is a pip
install and turns it into a :func:`pip_translation`; the specs end up in
``ExportResult.requirements``, which the jobs code installs into the image (or reports).
Options that are valid in a requirements file (``-r``, ``-e``, ``--index-url`` ...) are kept
with their value; other options (``-q``, ``-U``, ``--target DIR`` ...) are dropped.
"""

from __future__ import annotations

import ast
import os
import shlex

from jupyter_ptcuda.export.context import ExportContext, Translation

_PIP_KEEP = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-i", "--index-url",
             "--extra-index-url", "-f", "--find-links", "--trusted-host"}
_PIP_SKIP_VALUE = {"-t", "--target", "--prefix", "--root", "--platform", "--python-version",
                   "--implementation", "--abi", "--upgrade-strategy", "--progress-bar", "--src",
                   "--only-binary", "--no-binary", "-C", "--config-settings", "--global-option",
                   "--log", "--cache-dir", "--timeout", "--retries", "--proxy", "--python", "--report"}


def pip_install(cmd: str) -> tuple[list[str], str] | None:
    """``(specs, rest)`` when ``cmd`` is ``pip install ...`` (``pip3``, ``python -m pip``,
    ``{sys.executable} -m pip``); ``rest`` is what follows a shell operator (``&& ...``)."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    name = os.path.basename(words[0]) if words else ""
    if name == "pip" or (name.startswith("pip") and name[3:].replace(".", "").isdigit()):
        start = 1
    elif words[1:3] == ["-m", "pip"]:
        start = 3
    else:
        return None
    if words[start : start + 1] != ["install"]:
        return None
    specs: list[str] = []
    rest = ""
    items = iter(words[start + 1 :])
    for word in items:
        if word and all(c in "();<>|&" for c in word):
            rest = " ".join([word, *items])
            break
        if word.startswith("-"):
            option, eq, value = word.partition("=")
            if option in _PIP_KEEP:
                specs.append(f"{option} {value if eq else next(items, '')}".strip())
            elif option in _PIP_SKIP_VALUE and not eq:
                next(items, None)
            continue
        specs.append(word)
    return specs, rest


def pip_translation(specs: list[str], rest: str, ctx: ExportContext, source: str, empty: ast.expr) -> Translation:
    """The pip line dropped from the script; ``empty`` is its value for ``x = !pip install ...``."""
    for spec in specs:
        ctx.add_requirement(spec)
        if "{" in spec or "$" in spec:
            ctx.warn(f"{source}: requirement {spec!r} is listed as written (not expanded)")
    if rest:
        ctx.warn(f"{source}: {rest!r} after the pip command is not run either")
    action = "not run; listed in requirements: " + (", ".join(specs) or "(nothing)")
    return Translation("pip", source, action, text="", expr=empty)
