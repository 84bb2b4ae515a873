"""What ``jupyter ptcuda image build`` installs: the requirement list, presets, and the torchvision rule.

:func:`install_list` is the whole list the build's one ``pip install`` layer gets (base requirements,
then the preset's packages, then each ``--extra``; an ``--extra`` naming a preset package replaces it,
so ``--extra 'pandas<2'`` pins it). A preset that asks for torchvision gets it only when a wheel pairs
with the image's torch (:func:`torchvision_series`, :func:`torchvision_mismatch`): the same release
series, the same build (``+cpu``, ``+cu124`` or none, as torch has) and a ``torch==`` pin that the
image's torch satisfies. ``images.build_image`` looks the wheel up (``pip download --no-deps`` on the
host) and says in the build output what it added, or why it left torchvision out.

All pure but :func:`wheel_metadata` (reads a wheel) and :func:`add_torchvision` (the build step, which
downloads through the ``fetch`` it is given).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PtcudaError

#: ``fetch(dest, requirements, pip options)``: pip download for the image's platform (see add_torchvision).
Fetch = Callable[[Path, list[str], tuple[str, ...]], None]


@dataclasses.dataclass(frozen=True)
class Preset:
    """Packages a preset adds, and whether it adds the torchvision that pairs with the image's torch."""

    packages: tuple[str, ...]
    torchvision: bool = False
    help: str = ""


#: ``--preset NAME``. datasci: what most notebooks import beside torch.
PRESETS: dict[str, Preset] = {
    "datasci": Preset(("matplotlib", "pandas", "scikit-learn", "tqdm", "ipywidgets"), torchvision=True,
                      help="matplotlib, pandas, scikit-learn, tqdm, ipywidgets, and torchvision when one "
                           "matches the image's torch"),
    # MLflow's scoring server (`mlflow models serve --env-manager local`: uvicorn + FastAPI, in mlflow-skinny)
    # and pandas, which mlflow.pyfunc and mlflow.pytorch import; also what a job needs to log to MLflow.
    "serve": Preset(("mlflow-skinny", "pandas"),
                    help="mlflow-skinny and pandas: MLflow's scoring server (/invocations, /ping) for a model "
                         "trained in the image, and mlflow.log_*/mlflow.pytorch.log_model in jobs"),
}
#: PyTorch's own wheel index, per build label (``+cpu`` wheels are published there, not on PyPI).
PYTORCH_INDEX = "https://download.pytorch.org/whl/{label}"
_NAME_END = re.compile(r"[\s\[<>=!~;@(]")
_LABEL = re.compile(r"^(cpu|cu\d+|rocm[\d.]+|xpu)$")


def project_name(requirement: str) -> str:
    """The normalised project name of a requirement (``Scikit_Learn>=1`` → ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", _NAME_END.split(requirement.strip(), 1)[0]).lower()


def install_list(*, debian: bool, torch: str = "torch", preset: str | None = None,
                 extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The requirements of the build's ``pip install`` (torchvision, when it pairs, comes on top).

    ``debian``: the base has no torch yet, so torch and numpy come first. An unknown preset raises
    KeyError (the CLI refuses it first: ``choices``).
    """
    wanted = ([torch, "numpy"] if debian else []) + ["ipykernel"]
    wanted += list(PRESETS[preset].packages) if preset else []
    for req in extra:
        name = project_name(req)
        wanted = [w for w in wanted if project_name(w) != name]
        wanted.append(req)
    return wanted


def split_version(version: str) -> tuple[str, str]:
    """``("2.13.0", "cpu")`` for ``2.13.0+cpu``; the label is ``""`` for a plain version."""
    public, _, label = version.strip().partition("+")
    return public, label


def torchvision_series(torch_version: str) -> str | None:
    """The torchvision release series that pairs with a torch version: torch 2.N ↔ torchvision 0.(N+15)
    (2.0 ↔ 0.15 … 2.5 ↔ 0.20 … 2.13 ↔ 0.28). None for a torch this rule does not know (1.x, 3.x)."""
    match = re.match(r"^(\d+)\.(\d+)", torch_version)
    if not match or match.group(1) != "2":
        return None
    return f"0.{int(match.group(2)) + 15}"


def pytorch_label(torch_version: str) -> str | None:
    """The build label when it names one of PyTorch's own indexes (cpu, cu124, rocm6.2, xpu), else None."""
    label = split_version(torch_version)[1]
    return label if _LABEL.match(label) else None


def wheel_metadata(path: str | Path) -> dict[str, object]:
    """``{"name", "version", "requires"}`` from a wheel's METADATA (``requires`` without extras-only ones)."""
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = wheel.read(name).decode("utf-8", "replace")
    fields: dict[str, object] = {"name": "", "version": "", "requires": []}
    requires: list[str] = []
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(": ")
        if key in ("Name", "Version"):
            fields[key.lower()] = value.strip()
        elif key == "Requires-Dist" and "extra ==" not in value:
            requires.append(value.split(";", 1)[0].strip())
    fields["requires"] = requires
    return fields


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else []


def torch_pin(requires: list[str]) -> str | None:
    """The version a ``torch (==X)`` / ``torch==X`` requirement pins, or None (no exact pin)."""
    for req in requires:
        if project_name(req) == "torch":
            match = re.search(r"==\s*([^,;)\s]+)", req)
            return match.group(1) if match else None
    return None


def torchvision_mismatch(metadata: dict[str, object], torch_version: str) -> str | None:
    """Why a torchvision wheel does not pair with ``torch_version`` (None: it does)."""
    version = str(metadata.get("version") or "")
    series = torchvision_series(torch_version)
    public, label = split_version(torch_version)
    tv_public, tv_label = split_version(version)
    if series is None or not (tv_public == series or tv_public.startswith(series + ".")):
        return f"torchvision {version} is not of the {series or '?'} series that pairs with torch {torch_version}"
    if tv_label != label:
        build = f"a +{tv_label} build" if tv_label else "a default (CUDA) build"
        want = f"+{label}" if label else "a default (CUDA) build"
        return f"torchvision {version} is {build}; torch {torch_version} needs {want}"
    pin = torch_pin(_strings(metadata.get("requires")))
    if pin is not None and split_version(pin)[0] != public:
        return f"torchvision {version} requires torch=={pin}, the image has {torch_version}"
    return None


def torchvision_candidates(torch_version: str, found: str | None = None) -> list[str]:
    """Requirements to try, in order, for the torchvision of ``torch_version``.

    First the series (``torchvision==0.28.*``: pip takes the newest). After a wheel ``found`` that did
    not pair: the same version in torch's build (``==0.28.1+cpu``; for a torch without a label
    ``===0.28.1``, so that no ``+cpu`` wheel is taken for it), then the older patch releases of the
    series (a torch x.y.0 pins torchvision x.y.0).
    """
    series = torchvision_series(torch_version)
    if series is None:
        return []
    if found is None:
        return [f"torchvision=={series}.*"]
    label = split_version(torch_version)[1]
    suffix, op = (f"+{label}", "==") if label else ("", "===")
    public = split_version(found)[0]
    parts = public.split(".")
    patches = [int(parts[2])] if len(parts) > 2 and parts[2].isdigit() else [0]
    patches += list(range(patches[0] - 1, -1, -1))[:4]
    return [f"torchvision{op}{series}.{p}{suffix}" for p in patches]


def add_torchvision(wheels: Path, torch_version: str | None, probe: dict[str, Any],
                    progress: Callable[[str], None], *, fetch: Fetch | None) -> str | None:
    """The build's step *torchvision*: put the torchvision that pairs with ``torch_version`` (and its
    dependencies) in the wheelhouse and return its requirement; or say why there is none, return None.

    ``fetch(dest, requirements, pip_options)`` is ``images.download_wheels`` for the image's platform
    (raises ImageBuildError when pip finds nothing). Looked up where pip finds packages on the host (a
    Debian build's torch came from there), then, for a torch of a PyTorch index build (``+cpu``,
    ``+cu124`` ...), on that index. ``fetch=None`` (``--wheelhouse``): only a wheel already in the folder.
    """
    say = lambda text: progress(f"[torchvision] {text}")  # noqa: E731
    if probe.get("torchvision"):
        say(f"{probe['torchvision']} is already in the base: kept")
        return None
    if not torch_version or torchvision_series(torch_version) is None:
        say(f"left out: no torchvision is known to pair with torch {torch_version or '(none)'}")
        return None
    if fetch is None:
        for wheel in sorted(wheels.glob("torchvision-*.whl"), reverse=True):
            meta = wheel_metadata(wheel)
            if torchvision_mismatch(meta, torch_version) is None:
                say(f"{meta['version']} (from the wheelhouse) pairs with torch {torch_version}: added")
                return f"torchvision=={meta['version']}"
        say(f"left out: no torchvision wheel in the wheelhouse pairs with torch {torch_version}")
        return None
    label = pytorch_label(torch_version)
    indexes: list[tuple[str, ...]] = [()]
    if label:
        indexes.append(("--extra-index-url", PYTORCH_INDEX.format(label=label), "--timeout", "15", "--retries", "1"))
    reasons: list[str] = []
    found: str | None = None  # the first wheel pip picked that did not pair: its exact build is next
    with tempfile.TemporaryDirectory(prefix="ptcuda-torchvision-") as tmp:
        for index in indexes:
            queue, tried = torchvision_candidates(torch_version, found), set()
            while queue:
                req = queue.pop(0)
                if req in tried or (found and req.endswith(("==" + found, "===" + found))):
                    continue
                tried.add(req)
                got = Path(tempfile.mkdtemp(dir=tmp))
                try:
                    fetch(got, [req], ("--no-deps", *index))
                except PtcudaError:
                    reasons.append(f"no wheel for {req}" + (f" on {index[1]}" if index else ""))
                    continue
                wheel = next(got.glob("torchvision-*.whl"))
                meta = wheel_metadata(wheel)
                why = torchvision_mismatch(meta, torch_version)
                if why is None:
                    deps = [r for r in _strings(meta["requires"]) if project_name(r) != "torch"]
                    try:
                        if deps:
                            fetch(wheels, deps, ())
                    except PtcudaError as exc:
                        reasons.append(f"its dependencies {', '.join(deps)} cannot be downloaded ({exc.message[:80]})")
                        break
                    shutil.move(str(wheel), wheels / wheel.name)
                    say(f"{meta['version']} pairs with torch {torch_version}: added")
                    return f"torchvision=={meta['version']}"
                reasons.append(why)
                if found is None:
                    found = str(meta["version"])
                    queue = torchvision_candidates(torch_version, found)
    seen = list(dict.fromkeys(reasons))
    say(f"LEFT OUT: none pairs with torch {torch_version} ({'; '.join(seen)}). The image is built without "
        f"it; to add one yourself: --extra 'torchvision==VERSION' with a wheel index that has it.")
    return None
