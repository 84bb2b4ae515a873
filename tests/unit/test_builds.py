"""Build status files (:mod:`jupyter_ptcuda.builds`): steps read from the build's own progress lines, writes
throttled (the step's change always written), finished builds listed for a while then forgotten."""

from __future__ import annotations

import json
import os

from jupyter_ptcuda.builds import KEEP_S, BuildStatus, building, read_builds, same_image


def test_steps_from_the_progress_lines_and_throttled_writes(tmp_path):
    now = [1000.0]
    s = BuildStatus("me/kernel:1", directory=tmp_path, interval=0.5, clock=lambda: now[0])
    on_disk = lambda: json.loads(s.path.read_text())  # noqa: E731
    assert on_disk()["state"] == "running" and on_disk()["steps"] == 6 and on_disk()["step"] == 0
    assert oct(s.path.stat().st_mode & 0o777) == "0o600" and oct(tmp_path.stat().st_mode & 0o777) != "0o777"
    s.line("[debian-base] reusing jupyter-ptcuda/debian-base:bookworm")
    assert (on_disk()["step"], on_disk()["step_name"]) == (1, "getting the base image")
    s.line("[wheelhouse] Collecting torch")
    now[0] += 0.1
    s.line("[torchvision] torchvision 0.26.0 pairs with torch 2.11.0")  # the same step: not written yet
    assert on_disk()["last_line"] == "[wheelhouse] Collecting torch"
    now[0] += 0.5
    s.line("[torchvision] downloading")
    assert (on_disk()["step"], on_disk()["last_line"]) == (3, "[torchvision] downloading")
    s.line("[install] Step 2/2 : RUN pip install torch")
    assert on_disk()["step"] == 4 and on_disk()["step_name"] == "installing packages"
    assert read_builds(tmp_path, now=now[0])[0]["message"] == "building me/kernel:1: step 4/6 installing packages"
    assert building("me/kernel:1", tmp_path)["id"] == s.data["id"]
    s.finish()
    assert on_disk()["state"] == "built" and building("me/kernel:1", tmp_path) is None
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary file left


def test_finished_builds_are_listed_for_a_while_then_forgotten(tmp_path):
    now = [1000.0]
    ok = BuildStatus("a:1", directory=tmp_path, clock=lambda: now[0])
    ok.finish()
    bad = BuildStatus("b:1", steps=("probe", "install"), directory=tmp_path, clock=lambda: now[0])
    bad.finish(error="image build failed at step 'probe': no torch")
    listed = read_builds(tmp_path, now=now[0] + 1)
    assert {b["tag"]: b["message"] for b in listed} == {
        "a:1": "built a:1", "b:1": "the build of b:1 failed: image build failed at step 'probe': no torch"}
    assert read_builds(tmp_path, now=now[0] + KEEP_S + 1) == []
    assert len(os.listdir(tmp_path)) == 2
    read_builds(tmp_path, now=now[0] + 2 * 86400)
    assert os.listdir(tmp_path) == []  # forgotten after a day
    (tmp_path / "junk.json").write_text("{not json")
    assert read_builds(tmp_path) == [] and read_builds(tmp_path / "none") == []


def test_same_image():
    assert same_image("img", "img:latest") and same_image("reg:5000/img", "reg:5000/img:latest")
    assert not same_image("img:1", "img:2") and not same_image("reg:5000/img", "reg:5000/other")


def test_the_steps_of_a_model_image_build(tmp_path):
    from jupyter_ptcuda.builds import MODEL_STEPS

    s = BuildStatus("reg/linear:1", steps=MODEL_STEPS, directory=tmp_path)
    s.line("[model] models:/linear/1 in sqlite:///mlflow.db")
    s.line("[download] model/MLmodel")
    assert read_builds(tmp_path)[0]["message"] == "building reg/linear:1: step 3/4 downloading the model"
