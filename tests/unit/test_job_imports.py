"""The check before a job starts: which imports count, how they are named, and what the error says."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_ptcuda.containers.types import ImageInfo
from jupyter_ptcuda.errors import ConfigError, EngineUnavailable
from jupyter_ptcuda.images import L_MODULES
from jupyter_ptcuda.jobs import imports as I
from jupyter_ptcuda.jobs.manager import JobManager

SCRIPT = '''
import os, sys
import numpy as np
import torch.nn as nn
from sklearn.model_selection import train_test_split
from . import sibling
from .pkg import x
import helpers
from mylib.sub import thing
try:
    import ujson as json
except ImportError:
    import json
try:
    import apex
except (ModuleNotFoundError, RuntimeError):
    apex = None
try:
    import must_have
finally:
    pass
if TYPE_CHECKING:
    import typing_only
if True:
    import cv2
else:
    from PIL import Image
for _ in range(1):
    import tqdm
with open(os.devnull):
    import pandas as pd
def f():
    import inside_function
class C:
    import inside_class
'''


def names(source: str, **kw) -> list[str]:
    return [i.name for i in I.script_imports(source, **kw)]


def test_top_level_imports_only():
    assert names(SCRIPT) == ["os", "sys", "numpy", "torch", "sklearn", "helpers", "mylib", "must_have", "cv2", "PIL",
                             "tqdm", "pandas"]


def test_a_script_that_does_not_parse_has_no_imports():
    assert I.script_imports("import x\ndef (:") == []


def test_cells_of_an_exported_script():
    script = "import os\n# %% cell 2\nimport numpy\n# %% [markdown] cell 3\n# text\n# %% cell 4 (parameters)\nimport cv2\n"
    got = [(i.name, i.cell, i.where) for i in I.script_imports(script, cells=True)]
    assert got == [("os", None, "line 1"), ("numpy", 2, "cell 2"), ("cv2", 4, "cell 4")]


def test_local_modules_and_stdlib_are_not_asked(tmp_path):
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "mylib").mkdir()
    (tmp_path / "fast.cpython-311-x86_64-linux-gnu.so").write_text("")
    (tmp_path / "data.csv").write_text("")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "must_have.py").write_text("")
    local = I.local_modules([str(tmp_path), str(other), str(tmp_path / "missing")])
    assert {"helpers", "mylib", "fast", "must_have"} <= local and "data" not in local
    assert I.to_ask(I.script_imports(SCRIPT), local) == ["PIL", "cv2", "numpy", "pandas", "sklearn", "torch", "tqdm"]


@pytest.mark.parametrize(("module", "dist"), [("sklearn.model_selection", "scikit-learn"), ("PIL.Image", "pillow"),
                                              ("cv2", "opencv-python"), ("yaml", "pyyaml"), ("torch_geometric", "torch-geometric"),
                                              ("google.protobuf.message", "protobuf"), ("tqdm.auto", "tqdm")])
def test_distribution_names(module, dist):
    assert I.distribution(I.Imported(module.split(".")[0], module, 1)) == dist


def test_build_command():
    assert I.build_command("jupyter-ptcuda/pytorch-kernel:latest", ["scikit-learn", "opencv-python"]) == (
        "jupyter ptcuda image build --base jupyter-ptcuda/pytorch-kernel:latest --extra scikit-learn "
        "--extra opencv-python --tag jupyter-ptcuda/pytorch-kernel:latest")
    assert I.build_command("repo/img@sha256:abc", ["x"]).endswith("--extra x --tag repo/img:extras")


class FakeService:
    """Answers probes like an image that has ``present``; counts the probe containers."""

    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.probes: list[tuple[str, ...]] = []

    async def run_once(self, spec, timeout=300):
        names = spec.command[3:]
        self.probes.append(names)
        answer = {n: n in self.present for n in names}
        import json

        return 0, "noise\nPTCUDA-MODULES " + json.dumps(answer) + "\n", None


def info(id: str, modules: str | None = None) -> ImageInfo:
    return ImageInfo(id=id, digest=id, labels={L_MODULES: modules} if modules is not None else {}, env={})


NOTEBOOK_SCRIPT = "import os\n# %% cell 2\nimport torch\nimport sklearn\n# %% cell 3\nimport cv2, tqdm\n"


def check(service, image_info, source=NOTEBOOK_SCRIPT, **kw):
    return asyncio.run(I.check_imports(service, image_info, "img:tag", source=source, what="train.ipynb",
                                       folders=[], cells=True, **kw))


def test_the_error_names_the_packages_and_the_build_command():
    service = FakeService({"torch", "tqdm"})
    with pytest.raises(ConfigError) as err:
        check(service, info("sha256:a1"))
    message = err.value.message
    assert message.startswith("train.ipynb imports what image img:tag does not have: "
                              "scikit-learn (import sklearn, cell 2), opencv-python (import cv2, cell 3).")
    command = "jupyter ptcuda image build --base img:tag --extra scikit-learn --extra opencv-python --tag img:tag"
    assert f"`{command}`" in message and len(message) <= 400  # the REST reply keeps 400 characters
    assert err.value.details == {"missing": "scikit-learn opencv-python", "command": command}
    assert err.value.status == 400


def test_the_image_is_asked_once_per_image_id():
    service = FakeService({"torch", "sklearn", "cv2", "tqdm"})
    check(service, info("sha256:b2"))
    check(service, info("sha256:b2"))
    assert service.probes == [("cv2", "sklearn", "torch", "tqdm")]
    check(service, info("sha256:b3"))  # another image (a rebuilt tag): asked again
    assert len(service.probes) == 2


def test_the_build_label_answers_without_a_probe():
    service = FakeService(set())
    check(service, info("sha256:c1", "cv2 sklearn torch tqdm numpy"))
    assert service.probes == []
    with pytest.raises(ConfigError, match="opencv-python"):  # not listed: the probe confirms it is absent
        check(service, info("sha256:c2", "sklearn torch tqdm"))
    assert service.probes == [("cv2",)]


def test_pip_lines_of_the_notebook_are_pointed_out():
    with pytest.raises(ConfigError, match="The notebook's `pip install` lines do not run in a job"):
        check(FakeService({"torch", "tqdm", "cv2"}), info("sha256:d1"), requirements=["scikit-learn>=1.4"])


def test_a_probe_that_cannot_run_does_not_block_the_job(caplog):
    class Down(FakeService):
        async def run_once(self, spec, timeout=300):
            raise EngineUnavailable("no engine")

    check(Down(set()), info("sha256:e1"))
    assert "import check of train.ipynb skipped: no engine" in caplog.text


def test_the_check_is_on_unless_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    assert JobManager(service=FakeService(set())).import_check is True
    monkeypatch.setenv("JUPYTER_PTCUDA_IMPORT_CHECK", "0")
    assert JobManager(service=FakeService(set())).import_check is False
