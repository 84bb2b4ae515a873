"""Reading a job's MLflow file store (jobs/runstore.py): only what is complete, nothing through a link."""

from __future__ import annotations

import os

from jupyter_ptcuda.jobs.runstore import Limits, read_new, store_dir

RUN = "0123456789abcdef0123456789abcdef"


def make_run(out_dir):
    run = store_dir(out_dir) / "0" / RUN
    for sub in ("metrics", "params", "tags"):
        (run / sub).mkdir(parents=True)
    return run


def test_a_half_written_line_waits_for_the_next_pass(tmp_path):
    run = make_run(tmp_path)
    (run / "metrics" / "loss").write_text("1000 0.5 0\n2000 0.2")
    first = read_new(tmp_path, {})
    assert first.metrics == [("loss", 0.5, 1000, 0)]
    with open(run / "metrics" / "loss", "a") as f:
        f.write("5 1\n")
    second = read_new(tmp_path, first.cursor)
    assert second.metrics == [("loss", 0.25, 2000, 1)]
    assert read_new(tmp_path, second.cursor).metrics == []


def test_links_and_server_keys_are_skipped_and_limits_hold(tmp_path):
    run = make_run(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("1 42 0\n")
    os.symlink(secret, run / "metrics" / "stolen")
    os.link(secret, run / "metrics" / "hardlinked")
    (run / "metrics" / "many").write_text("".join(f"1 {i} {i}\n" for i in range(50)))
    (run / "params" / "lr").write_text("0.1")
    (run / "tags" / "jupyter_ptcuda.image_digest").write_text("sha256:forged")
    batch = read_new(tmp_path, {}, Limits(values=10))
    assert {k for k, *_ in batch.metrics} == {"many"} and len(batch.metrics) == 10
    assert batch.params == {"lr": "0.1"} and batch.tags == {}
    assert "metric values" in batch.truncated
    os.rename(store_dir(tmp_path), tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", store_dir(tmp_path))  # the whole store a link
    assert read_new(tmp_path, {}).metrics == []
