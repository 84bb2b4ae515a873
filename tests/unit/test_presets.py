"""`jupyter ptcuda image build --preset datasci`: what the build installs, and which torchvision pairs with
the image's torch (a wheel of the same series, the same build label, a torch pin the image satisfies)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from jupyter_ptcuda import images
from jupyter_ptcuda.cli import build_parser
from jupyter_ptcuda.errors import PtcudaError
from jupyter_ptcuda.presets import (
    PRESETS,
    add_torchvision,
    install_list,
    project_name,
    torchvision_candidates,
    torchvision_mismatch,
    torchvision_series,
    wheel_metadata,
)

DATASCI = ["matplotlib", "pandas", "scikit-learn", "tqdm", "ipywidgets"]


def test_datasci_preset_is_the_packages_notebooks_import():
    assert list(PRESETS["datasci"].packages) == DATASCI and PRESETS["datasci"].torchvision


def test_install_list_of_a_pytorch_base_and_of_debian():
    assert install_list(debian=False, preset="datasci") == ["ipykernel", *DATASCI]
    assert install_list(debian=True, torch="torch==2.13.0", preset="datasci") == [
        "torch==2.13.0", "numpy", "ipykernel", *DATASCI]
    assert install_list(debian=False) == ["ipykernel"]


def test_an_extra_naming_a_preset_package_replaces_it():
    got = install_list(debian=False, preset="datasci", extra=["Pandas<3", "opencv-python", "scikit_learn==1.5"])
    assert got == ["ipykernel", "matplotlib", "tqdm", "ipywidgets", "Pandas<3", "opencv-python", "scikit_learn==1.5"]
    assert project_name("Scikit_Learn[all]>=1") == "scikit-learn"


def test_cli_takes_the_preset():
    args = build_parser().parse_args(["image", "build", "--base", "debian", "--preset", "datasci", "--extra", "x"])
    assert (args.preset, args.extra) == ("datasci", ["x"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["image", "build", "--preset", "nope"])


class FakeEngine:
    def run_sync(self, fn, *args, **kwargs):
        return fn(self)

    def inspect_image(self, ref):
        return {"Id": "sha256:" + "1" * 64}

    def remove_image(self, ref, noprune=False):
        pass


def test_the_build_installs_the_preset(monkeypatch, tmp_path):
    """The one ``pip install`` layer gets the base's requirements, the preset's and the extras, plus the
    torchvision that pairs (here: one the fake index has for torch 2.13.0+cpu)."""
    downloads: list[list[str]] = []
    dockerfiles: list[str] = []

    def download(dest, reqs, python, machine, progress, options=(), step="wheelhouse"):
        downloads.append(list(reqs))
        if reqs == ["torchvision==0.28.*"]:
            wheel(dest, "torchvision", "0.28.0+cpu", ["torch (==2.13.0)", "numpy", "pillow (>=5.3.0)"])

    async def probe(service, image):
        return {"python": "3.11", "machine": "x86_64", "torch": "2.13.0+cpu", "cuda": "", "ipykernel": "7.0"}

    async def modules(service, image, names=None, python="python"):
        return ["matplotlib", "pandas", "sklearn", "torch"]

    monkeypatch.setattr(images, "download_wheels", download)
    monkeypatch.setattr(images, "probe_image", probe)
    monkeypatch.setattr(images, "probe_modules", modules)
    monkeypatch.setattr(images, "_docker_build", lambda engine, dockerfile, tag, step, progress, files=None:
                        dockerfiles.append(dockerfile) or tag)
    lines: list[str] = []
    result = images.build_image(FakeEngine(), base="torch-base:1", tag="t:datasci", preset="datasci",
                                extra=["einops"], progress=lines.append, sbom=False)
    assert downloads[0] == ["ipykernel", *DATASCI, "einops"]
    assert result["installed"] == ["ipykernel", *DATASCI, "einops", "torchvision==0.28.0+cpu"]
    install = dockerfiles[0].splitlines()[1]
    assert install.endswith("ipykernel matplotlib pandas scikit-learn tqdm ipywidgets einops torchvision==0.28.0+cpu")
    assert ["numpy", "pillow (>=5.3.0)"] in downloads  # torchvision's own dependencies, not torch
    assert result["labels"][images.L_MODULES] == "matplotlib pandas sklearn torch"
    assert result["labels"][images.L_PRESET] == "datasci"
    assert any("[torchvision] 0.28.0+cpu pairs with torch 2.13.0+cpu: added" in line for line in lines)


def wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = Path(folder) / f"{name}-{version}-cp311-cp311-manylinux_2_28_x86_64.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires) + "Requires-Dist: scipy ; extra == 'scipy'\n\nlong description\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_wheel_metadata(tmp_path):
    meta = wheel_metadata(wheel(tmp_path, "torchvision", "0.28.0", ["numpy", "torch (==2.13.0)"]))
    assert meta == {"name": "torchvision", "version": "0.28.0", "requires": ["numpy", "torch (==2.13.0)"]}


@pytest.mark.parametrize(("torch", "series"), [("2.13.0+cpu", "0.28"), ("2.5.1", "0.20"), ("2.0.0", "0.15"),
                                               ("1.13.1", None), ("nightly", None)])
def test_torchvision_series(torch, series):
    assert torchvision_series(torch) == series


@pytest.mark.parametrize(("tv", "pin", "torch", "why"), [
    ("0.28.0", "torch (==2.13.0)", "2.13.0", None),
    ("0.28.0+cpu", "torch (==2.13.0)", "2.13.0+cpu", None),
    ("0.28.0", "torch (==2.13.0)", "2.13.0+cpu", "is a default (CUDA) build; torch 2.13.0+cpu needs +cpu"),
    ("0.28.0+cu124", "torch==2.13.0", "2.13.0+cpu", "is a +cu124 build"),
    ("0.28.1", "torch (==2.13.1)", "2.13.0", "requires torch==2.13.1"),
    ("0.29.0", "torch (==2.14.0)", "2.13.0", "is not of the 0.28 series"),
])
def test_torchvision_mismatch(tv, pin, torch, why):
    got = torchvision_mismatch({"version": tv, "requires": ["numpy", pin]}, torch)
    assert got is None if why is None else why in got


def test_torchvision_candidates():
    assert torchvision_candidates("2.13.0+cpu") == ["torchvision==0.28.*"]
    assert torchvision_candidates("2.13.0+cpu", found="0.28.1") == ["torchvision==0.28.1+cpu", "torchvision==0.28.0+cpu"]
    assert torchvision_candidates("2.13.0", found="0.28.1+cpu") == ["torchvision===0.28.1", "torchvision===0.28.0"]
    assert torchvision_candidates("1.13.0") == []


class FakeIndex:
    """``fetch`` for add_torchvision: {(index or "", requirement): (version, torch pin)}."""

    def __init__(self, wheels: dict[tuple[str, str], tuple[str, str]]) -> None:
        self.wheels = wheels
        self.asked: list[tuple[str, str]] = []

    def __call__(self, dest: Path, reqs: list[str], options: tuple[str, ...]) -> None:
        index = options[options.index("--extra-index-url") + 1] if "--extra-index-url" in options else ""
        for req in reqs:
            self.asked.append((index, req))
            if req.startswith("torchvision"):
                if (index, req) not in self.wheels:
                    raise PtcudaError(f"no {req}")
                version, pin = self.wheels[(index, req)]
                wheel(dest, "torchvision", version, [pin, "numpy", "pillow"])


def run(tmp_path: Path, torch: str, index: Any, probe: dict | None = None) -> tuple[str | None, list[str]]:
    lines: list[str] = []
    got = add_torchvision(tmp_path, torch, {"python": "3.11", **(probe or {})}, lines.append, fetch=index)
    return got, lines


def test_torchvision_from_the_host_index(tmp_path):
    index = FakeIndex({("", "torchvision==0.28.*"): ("0.28.0", "torch (==2.13.0)")})
    got, lines = run(tmp_path, "2.13.0", index)
    assert got == "torchvision==0.28.0" and (tmp_path / "torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl").exists()
    assert ("", "numpy") in index.asked and ("", "pillow") in index.asked
    assert lines == ["[torchvision] 0.28.0 pairs with torch 2.13.0: added"]


def test_a_cpu_torch_gets_the_cpu_torchvision_from_the_pytorch_index(tmp_path):
    cpu = "https://download.pytorch.org/whl/cpu"
    index = FakeIndex({("", "torchvision==0.28.*"): ("0.28.0", "torch (==2.13.0)"),  # a CUDA build on PyPI
                       (cpu, "torchvision==0.28.0+cpu"): ("0.28.0+cpu", "torch (==2.13.0)")})
    got, _ = run(tmp_path, "2.13.0+cpu", index)
    assert got == "torchvision==0.28.0+cpu"
    assert [w.name.split("-")[1] for w in tmp_path.glob("torchvision-*.whl")] == ["0.28.0+cpu"]


def test_torchvision_is_left_out_when_none_pairs_and_the_build_says_why(tmp_path):
    index = FakeIndex({("", "torchvision==0.28.*"): ("0.28.0", "torch (==2.13.0)")})
    got, lines = run(tmp_path, "2.13.0+cpu", index)
    assert got is None and not list(tmp_path.glob("*.whl"))
    assert "LEFT OUT: none pairs with torch 2.13.0+cpu" in lines[-1]
    assert "is a default (CUDA) build; torch 2.13.0+cpu needs +cpu" in lines[-1]
    assert "no wheel for torchvision==0.28.0+cpu on https://download.pytorch.org/whl/cpu" in lines[-1]


def test_an_older_patch_pairs_with_an_older_torch(tmp_path):
    index = FakeIndex({("", "torchvision==0.20.*"): ("0.20.1", "torch (==2.5.1)"),
                       ("", "torchvision===0.20.0"): ("0.20.0", "torch (==2.5.0)")})
    assert run(tmp_path, "2.5.0", index)[0] == "torchvision==0.20.0"


def test_torchvision_already_in_the_base_or_unknown_torch(tmp_path):
    assert run(tmp_path, "2.5.1", FakeIndex({}), {"torchvision": "0.20.1"}) == (
        None, ["[torchvision] 0.20.1 is already in the base: kept"])
    got, lines = run(tmp_path, "1.13.1", FakeIndex({}))
    assert got is None and "no torchvision is known to pair with torch 1.13.1" in lines[0]


def test_torchvision_from_a_given_wheelhouse(tmp_path):
    wheel(tmp_path, "torchvision", "0.29.0", ["torch (==2.14.0)"])
    assert run(tmp_path, "2.13.0", None)[0] is None
    wheel(tmp_path, "torchvision", "0.28.0", ["torch (==2.13.0)"])
    assert run(tmp_path, "2.13.0", None)[0] == "torchvision==0.28.0"


def test_serve_preset_is_what_mlflow_logging_and_its_scoring_server_need():
    assert install_list(debian=False, preset="serve") == ["ipykernel", "mlflow-skinny", "pandas"]
    assert not PRESETS["serve"].torchvision
