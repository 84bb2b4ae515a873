"""The check before a job starts: does the image have what the script imports?

``JobManager.submit`` calls :func:`check_imports` after the export and before the job is recorded or
any of its files or containers exist (CLI ``jupyter ptcuda run`` and REST ``POST jobs`` alike). It reads
the script's top-level imports (:func:`script_imports`: ``ast``, the module's own statements and the
blocks under them, not function bodies, not an import guarded by ``except ImportError``), leaves out the
standard library, relative imports and modules that are files or packages in the notebook's folder
(or on a PYTHONPATH folder the job inherits), and asks the image about the rest:

- an image built by ``jupyter ptcuda image build`` lists its top-level modules in a label
  (``images.L_MODULES``): a name there needs no question;
- any other name is asked of the image once (``images.probe_modules``: ``importlib.util.find_spec`` in a
  one-off probe container) and the answer kept for the image id (:data:`_ANSWERS`).

What is missing is a ConfigError (400) naming the packages (import names mapped to distributions:
``sklearn`` → ``scikit-learn``, :data:`DISTRIBUTIONS`) and the ``jupyter ptcuda image build`` command that
adds them. The check is off with ``c.JobManager.import_check = False``, ``$JUPYTER_PTCUDA_IMPORT_CHECK=0``
or ``"import_check": false`` in ``POST jobs``. A probe that cannot run does not block the job (logged).

On the Kubernetes backend the check is skipped (logged): the server cannot read an image's labels there
(the nodes pull images), and a probe pod would make the submission wait for a node and an image pull
(minutes for a CUDA image) before the job's own pod waits for the same. The job's log shows the
``ModuleNotFoundError`` instead.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..containers.base import ContainerService
from ..containers.types import ImageInfo
from ..errors import ConfigError, PtcudaError
from ..images import L_MODULES, probe_modules
from ..presets import project_name

log = logging.getLogger("jupyter_ptcuda")

#: Import names whose distribution (what ``pip install`` and ``--extra`` take) is called otherwise.
DISTRIBUTIONS: dict[str, str] = {
    "sklearn": "scikit-learn", "PIL": "pillow", "cv2": "opencv-python", "yaml": "pyyaml",
    "skimage": "scikit-image", "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "attr": "attrs",
    "dotenv": "python-dotenv", "jwt": "pyjwt", "Crypto": "pycryptodome", "serial": "pyserial",
    "OpenSSL": "pyopenssl", "zmq": "pyzmq", "git": "gitpython", "Bio": "biopython", "fitz": "pymupdf",
    "docx": "python-docx", "pptx": "python-pptx", "umap": "umap-learn", "faiss": "faiss-cpu",
    "pytorch_lightning": "pytorch-lightning", "lightning": "lightning", "mpl_toolkits": "matplotlib",
    "pylab": "matplotlib", "google.protobuf": "protobuf", "tensorflow_datasets": "tensorflow-datasets",
    "magic": "python-magic", "usb": "pyusb", "MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary",
    "Levenshtein": "levenshtein", "sentence_transformers": "sentence-transformers", "jose": "python-jose",
    "kafka": "kafka-python", "telegram": "python-telegram-bot", "wx": "wxpython", "gi": "pygobject",
}
_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
_CELL = re.compile(r"^# %% cell (\d+)")
#: Answers of images without the label: image id -> {module: importable}.
_ANSWERS: dict[str, dict[str, bool]] = {}


@dataclass(frozen=True)
class Imported:
    """One top-level import: the module's top-level name, the full dotted name, where it is."""

    name: str
    dotted: str
    line: int
    cell: int | None = None

    @property
    def where(self) -> str:
        return f"cell {self.cell}" if self.cell is not None else f"line {self.line}"


def _guarded(node: ast.Try | ast.TryStar) -> bool:
    """A ``try`` whose handlers catch a failed import (``except ImportError``, ``Exception``, bare)."""
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        for t in types:
            if t is None or (isinstance(t, ast.Name) and t.id in _GUARDS) or \
                    (isinstance(t, ast.Attribute) and t.attr in _GUARDS):
                return True
    return False


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt]) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.Try | ast.TryStar):
            if not _guarded(node):
                yield from _statements(node.body)
                for handler in node.handlers:
                    yield from _statements(handler.body)
            yield from _statements(node.orelse)
            yield from _statements(node.finalbody)
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from _statements(node.body)
            yield from _statements(node.orelse)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.While | ast.With | ast.AsyncWith):
            yield from _statements(node.body)
            yield from _statements(getattr(node, "orelse", []))


def script_imports(source: str, *, cells: bool = False) -> list[Imported]:
    """The absolute imports at the top level of ``source`` (empty when it does not parse: the job's log
    will show the syntax error). ``cells``: an exported train.py, whose ``# %% cell N`` titles say the cell."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    titles: list[tuple[int, int]] = []
    if cells:
        titles = [(i, int(m.group(1))) for i, line in enumerate(source.splitlines(), 1) if (m := _CELL.match(line))]
    out: list[Imported] = []
    for node in _statements(tree.body):
        if isinstance(node, ast.ImportFrom):
            dotted = [node.module] if node.level == 0 and node.module else []
        else:
            dotted = [alias.name for alias in node.names]
        cell = next((n for line, n in reversed(titles) if line < node.lineno), None) if cells else None
        out += [Imported(d.split(".")[0], d, node.lineno, cell) for d in dotted]
    return out


def local_modules(folders: Iterable[str]) -> set[str]:
    """Module names that are files or packages in ``folders`` (``x.py``, ``x/``, ``x.cpython-311.so``)."""
    names: set[str] = set()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            stem = entry.name.split(".")[0]
            if entry.name.endswith((".py", ".pyc", ".so", ".pyd")) or entry.is_dir(follow_symlinks=False):
                names.add(stem)
    return names


def distribution(imported: Imported) -> str:
    """What to ``pip install`` for an import: :data:`DISTRIBUTIONS`, else the import name."""
    for key in (imported.dotted, *(imported.dotted.rsplit(".", i)[0] for i in range(1, imported.dotted.count(".") + 1))):
        if key in DISTRIBUTIONS:
            return DISTRIBUTIONS[key]
    return imported.name.replace("_", "-").lower()


def to_ask(imports: list[Imported], local: set[str]) -> list[str]:
    """The top-level names the image must answer for: not stdlib, not ``__future__``, not local."""
    std = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    return sorted({i.name for i in imports if i.name not in std and i.name not in local and i.name.isidentifier()})


def build_command(image: str, dists: list[str]) -> str:
    """``jupyter ptcuda image build --base IMAGE --extra D ... --tag T``: T is the image's own tag (the
    job's next run picks it up), or ``<repository>:extras`` for an image given by digest or id."""
    tag = image if "@" not in image and not image.startswith("sha256:") else image.split("@")[0] + ":extras"
    if tag.startswith("sha256:"):
        tag = "jupyter-ptcuda/kernel:extras"
    extras = " ".join(f"--extra {shlex.quote(d)}" for d in dists)
    return f"jupyter ptcuda image build --base {shlex.quote(image)} {extras} --tag {shlex.quote(tag)}"


async def image_lacks(service: ContainerService, info: ImageInfo, image: str, names: list[str],
                      python: str = "python") -> set[str]:
    """Which of ``names`` the image cannot import: the build's label first, then one probe for the rest
    (answers kept per image id). PtcudaError when the probe cannot run."""
    listed = set((info.labels.get(L_MODULES) or "").split())
    known = _ANSWERS.setdefault(info.id, {})
    ask = [n for n in names if n not in listed and n not in known]
    if ask:
        answer = await probe_modules(service, info.id or image, ask, python=python)
        known.update({n: bool(answer.get(n)) for n in ask})
    return {n for n in names if n not in listed and not known.get(n)}


async def check_imports(service: ContainerService, info: ImageInfo, image: str, *, source: str, what: str,
                        folders: list[str], cells: bool, requirements: Iterable[str] = (),
                        python: str = "python") -> None:
    """ConfigError when the script ``source`` (``what``: the notebook or script, for the message) imports
    a package ``image`` lacks. Called by ``JobManager.submit`` before anything of the job exists."""
    imports = script_imports(source, cells=cells)
    names = to_ask(imports, local_modules(folders))
    if not names:
        return
    if not info.inspected:  # Kubernetes: no labels to read, and a probe pod would wait for a node and a pull
        log.info("jupyter-ptcuda: import check of %s skipped: on the Kubernetes backend the server cannot read "
                 "image %s (the nodes pull it); a missing package shows in the job's log", what, image)
        return
    try:
        lacking = await image_lacks(service, info, image, names, python)
    except PtcudaError as exc:
        log.warning("jupyter-ptcuda: import check of %s skipped: %s", what, exc.message.splitlines()[0])
        return
    if not lacking:
        return
    missing: dict[str, list[Imported]] = {}
    for imported in imports:
        if imported.name in lacking:
            missing.setdefault(distribution(imported), []).append(imported)
    dists = list(missing)
    command = build_command(image, dists)
    listed = ", ".join(f"{d} (import {m[0].dotted}, {m[0].where})" if m[0].name != d else f"{d} ({m[0].where})"
                       for d, m in missing.items())
    pip = {project_name(r) for r in requirements}
    note = " The notebook's `pip install` lines do not run in a job." if pip & set(map(project_name, dists)) else ""
    raise ConfigError(
        f"{what} imports what image {image} does not have: {listed}. Add {'them' if len(dists) > 1 else 'it'} to the image: `{command}`, then "
        f"submit again.{note} (To skip this check: c.JobManager.import_check = False, "
        "$JUPYTER_PTCUDA_IMPORT_CHECK=0, or \"import_check\": false in POST jobs.)",
        missing=" ".join(dists), command=command)
