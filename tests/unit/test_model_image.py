"""`image build --model`'s build context (jobs/model_image.py) and the refusals that need no engine: only the
model's regular files and folders go in (a link or a FIFO the download left is left out), owned by root with
read-only modes; the Dockerfile runs nothing, ends as a non-root user and starts the scoring server."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from jupyter_ptcuda.cli import main
from jupyter_ptcuda.jobs.model_image import USER, _dockerfile, _write_context


def test_the_context_holds_the_models_files_only_read_only_and_root_owned(tmp_path):
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "data" / "model.pth").write_bytes(b"\0" * 1000)
    secret = tmp_path / "secret"
    secret.write_text("not the model's")
    os.symlink(secret, model / "leak.txt")
    os.symlink(tmp_path, model / "linked_dir")
    os.mkfifo(model / "pipe")
    seen = {}

    def dockerfile(sha256: str) -> str:
        seen["sha256"] = sha256
        return _dockerfile("base:tag", {"io.jupyter-ptcuda.model.sha256": sha256}, "python")

    out = io.BytesIO()
    _write_context(out, str(model), dockerfile)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["Dockerfile", "model", "model/MLmodel", "model/data", "model/data/model.pth"]
        assert all(m.uid == 0 and m.gid == 0 for m in members.values())
        assert members["model/MLmodel"].mode == 0o644 and members["model/data"].mode == 0o755
        text = tar.extractfile("Dockerfile").read().decode()
    assert "RUN" not in text and f"\nUSER {USER}\n" in text and not USER.startswith("0")
    assert "COPY --chown=0:0 model/ /opt/ptcuda-model/" in text and seen["sha256"] in text
    assert text.rstrip().endswith('"--env-manager", "local", "-h", "0.0.0.0", "-p", "5000"]')

    again = io.BytesIO()
    os.unlink(model / "leak.txt")  # what is left out does not count
    _write_context(again, str(model), lambda sha: seen.setdefault("again", sha))
    assert seen["again"] == seen["sha256"]


@pytest.mark.parametrize("argv, says", [
    (["--model", "models:/linear/1", "--tag", "x:1", "--preset", "serve"], "leave out --preset"),
    (["--model", "models:/linear/1"], "give the inference image's --tag"),
    (["--model", "linear", "--tag", "x:1"], "models:/NAME/VERSION"),
])
def test_bad_requests_are_refused_before_anything_is_built(argv, says, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "mlflow.db"))
    monkeypatch.setenv("JUPYTER_PTCUDA_JOBS_DB", str(tmp_path / "jobs.sqlite"))
    assert main(["image", "build", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jupyter ptcuda: error: ") and says in err and "Traceback" not in err
