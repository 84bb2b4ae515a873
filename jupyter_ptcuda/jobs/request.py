"""What a job submission asks for (:class:`JobRequest`), and the command line it becomes.

Built by the CLI (``jupyter ptcuda run``) and the REST handler (``POST jobs``), consumed by
``JobManager.submit``. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

#: Bounds of a request (each error message states its bound).
MAX_NPROC = 1024
MAX_NAME = 200
MAX_ARGS = 1024
MAX_ARG_LEN = 65536
MAX_TEXT = 4096  # path, image, kernel id


def _no_nul(what: str, value: Any) -> None:
    if isinstance(value, str) and "\0" in value:
        raise ConfigError(f"{what} contains a NUL byte (\\0), which no path, name or argument can hold; remove it.")


@dataclasses.dataclass
class JobRequest:
    """One submission. ``path``: absolute path of a notebook (exported on the fly) or a ``.py`` script.

    ``gpus``/``mem_limit``/``image`` left as None take the kernel's (``kernel_id``) or the configured
    defaults (``c.JobOptions``). ``params`` become the script's flags (``--lr 0.5``), then ``args`` are
    passed through as given. ``gpu_resource`` (Kubernetes only): the extended resource the GPUs are asked
    for as, e.g. a MIG profile ``nvidia.com/mig-1g.18gb``; None takes the kernel's or ``c.JobOptions.gpu_resource``.
    """

    path: str
    kernel_id: str | None = None
    image: str | None = None
    gpus: Any = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    args: list[str] = dataclasses.field(default_factory=list)
    nproc_per_node: int | None = None
    timeout: float | None = None
    mem_limit: Any = None
    name: str = ""
    lenient: bool = False
    owner: str = ""
    gpu_resource: str | None = None

    def __post_init__(self) -> None:
        for what in ("path", "kernel_id", "image", "gpu_resource"):
            value = getattr(self, what)
            _no_nul(what, value)
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise ConfigError(f"{what} is {len(value)} characters long; at most {MAX_TEXT} are accepted.")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME or _CONTROL_RE.search(self.name):
            raise ConfigError(f"name: give at most {MAX_NAME} characters without control characters "
                              f"(this one has {len(self.name) if isinstance(self.name, str) else 'no text'}).")
        if self.kernel_id and self.image:
            raise ConfigError("give either a kernel to copy (--from-kernel / kernel_id) or an image, not both: "
                              "a job from a kernel runs in that kernel's image.")
        if self.nproc_per_node is not None:
            if isinstance(self.nproc_per_node, bool) or not isinstance(self.nproc_per_node, int) \
                    or not 1 <= self.nproc_per_node <= MAX_NPROC:
                shown = str(self.nproc_per_node)[:20]
                raise ConfigError(f"nproc_per_node={shown}: give a positive number of processes, from 1 to {MAX_NPROC}.")
        if self.timeout is not None:
            if isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float) or self.timeout <= 0 \
                    or not math.isfinite(self.timeout):
                raise ConfigError(f"timeout={self.timeout!r}: give a positive number of seconds, or leave it unset.")
            self.timeout = float(self.timeout)
        if not isinstance(self.params, Mapping):
            raise ConfigError("params must be an object of {name: value}, e.g. {\"lr\": 0.5}.")
        for key in self.params:
            if not isinstance(key, str) or not _NAME_RE.match(key):
                raise ConfigError(f"parameter name {key!r} is not a Python identifier (e.g. lr, batch_size).")
        for key, value in self.params.items():
            _no_nul(f"params[{key!r}]", value)
        if not isinstance(self.args, list) or not all(isinstance(a, str) for a in self.args):
            raise ConfigError("args must be a list of strings, passed to the script as given.")
        if len(self.args) > MAX_ARGS:
            raise ConfigError(f"args has {len(self.args)} items; at most {MAX_ARGS} are accepted "
                              "(pass a config file for more).")
        for i, arg in enumerate(self.args):
            _no_nul(f"args[{i}]", arg)
            if len(arg) > MAX_ARG_LEN:
                raise ConfigError(f"args[{i}] is {len(arg)} characters long; at most {MAX_ARG_LEN} are accepted "
                                  "(pass a file instead).")


def parse_param(text: str) -> tuple[str, Any]:
    """``--param k=v`` → (k, value): JSON when it parses (``0.5``, ``true``, ``[64, 32]``), else the text."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--param {text!r}: write NAME=VALUE, e.g. --param lr=0.5")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def unknown_parameters(unknown: Sequence[str], kinds: Mapping[str, Mapping[str, Any]]) -> str:
    """The error for names the notebook cannot set: the names it can (the candidates), where they come
    from (a parameters cell, or top-level assignments when no cell is tagged), and the closest match."""
    text = f"unknown parameter(s) {', '.join(unknown)}"
    if not kinds:
        return (f"{text}: the notebook has nothing to set: no cell is tagged 'parameters', and no cell assigns a "
                "literal value to a name at its top level (e.g. `epochs = 3`).")
    def where(name: str) -> str:
        cell = kinds[name].get("cell")
        return f"{name} (cell {cell})" if cell is not None else name
    cells = {kinds[n].get("cell") for n in kinds}
    if any(k.get("inferred") for k in kinds.values()):
        text += ("; no cell is tagged 'parameters', so the names that can be set are the top-level assignments "
                 f"of literal values: {', '.join(where(n) for n in kinds)}")
    else:
        cell = next(iter(cells)) if len(cells) == 1 else None
        text += f"; the notebook's parameters{f' (cell {cell})' if cell is not None else ''} are: {', '.join(kinds)}"
    close = [m for name in unknown for m in difflib.get_close_matches(name, list(kinds), n=1)]
    return text + (f". Did you mean {' or '.join(dict.fromkeys(close))}?" if close else ".")


def params_to_flags(params: Mapping[str, Any], kinds: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The exported script's flags for parameter values: ``--lr 0.5``, ``--amp``/``--no-amp``, JSON for
    lists/dicts/None. ``kinds`` (the export's ``parameters``: the parameters cell's names or, with no cell
    tagged, the top-level literal assignments) lets unknown names fail here, before a container is started,
    instead of as the script's usage error (:func:`unknown_parameters`)."""
    if kinds is not None:
        unknown = [name for name in params if name not in kinds]
        if unknown:
            raise ConfigError(unknown_parameters(unknown, kinds))
    flags: list[str] = []
    for name, value in params.items():
        flag = "--" + name.replace("_", "-")
        kind = (kinds or {}).get(name, {}).get("type")
        if isinstance(value, bool) and kind in (None, "bool"):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, str) and kind != "json":
            flags += [flag, value]
        else:
            flags += [flag, json.dumps(value)]
    return flags


def job_command(python: str, script: str, args: Sequence[str], nproc_per_node: int | None) -> list[str]:
    """``python -u script args`` or, with ``nproc_per_node``, the same under ``torch.distributed.run``."""
    if nproc_per_node:
        return [python, "-u", "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node),
                script, *args]
    return [python, "-u", script, *args]
