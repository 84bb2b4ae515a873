"""The notices a server keeps for JupyterLab (GET jupyter-ptcuda/notices): one per (at, kernel), a change
is seen by a client polling since its last read, and a kernel's pending notice speaks only when it waited."""

from __future__ import annotations

from jupyter_ptcuda import notices as N


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_changed_notice_replaces_the_old_one_and_a_client_polling_since_its_last_read_sees_it():
    clock = Clock()
    board = N.Notices(keep=3, clock=clock)
    first = board.post({"kind": "kernel_pending", "state": "waiting", "kernel_id": "k1", "at": 1.0, "message": "a"})
    last_read = max(n["updated"] for n in board.since(0))
    # the same clock reading: the change still counts as after the client's last read
    board.post({"kind": "kernel_pending", "state": "started", "kernel_id": "k1", "at": 1.0, "message": "b"})
    changed, = board.since(last_read)
    assert changed["state"] == "started" and changed["updated"] > first["updated"]
    assert [n["state"] for n in board.since(0)] == ["started"]  # one notice per (at, kernel), not two
    for i in range(5):
        clock.t += 1
        board.post({"kind": "idle_gpu_kernel", "state": "requested", "kernel_id": f"k{i + 2}", "at": 2.0 + i})
    assert [n["kernel_id"] for n in board.since(0)] == ["k4", "k5", "k6"]  # the newest `keep`


def test_a_kernel_that_never_waited_posts_nothing_and_one_that_did_is_told_started_or_failed(monkeypatch):
    clock = Clock()
    board = N.Notices(clock=clock)
    monkeypatch.setattr(N, "_active", board)
    quick = N.PendingKernel("abcdef0123", "train.ipynb", 300, clock=clock)
    quick.started()
    quick.failed("boom")
    assert board.since() == []
    slow = N.PendingKernel("abcdef0123", "/home/u/proj/train.ipynb", 300, clock=clock)
    slow.waiting("FailedScheduling: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu")
    told, = board.since()
    assert told["message"] == ("The kernel for train.ipynb is waiting for a node: FailedScheduling: 0/2 nodes "
                               "are available: 2 Insufficient nvidia.com/gpu. It is given up after 300 s (ask for "
                               "fewer GPUs or less memory, or wait for a free node).")
    clock.t += 42
    slow.started()
    told, = board.since()
    assert told["state"] == "started" and told["message"] == (
        "The kernel for train.ipynb started after waiting 42 s for a node.")
    monkeypatch.setattr(N, "_active", None)
    N.PendingKernel("k", None, 1).waiting("x")  # no server in this process: nothing to post to, no error


def test_the_notice_s_notebook_is_what_jupyterlab_opens_relative_to_the_server_s_root():
    from jupyter_ptcuda.server.handlers import _relative_notebook

    notice = {"kind": "kernel_pending", "notebook": "/srv/notebooks/sub/train.ipynb"}
    assert _relative_notebook(notice, "/srv/notebooks")["notebook"] == "sub/train.ipynb"  # "Open notebook" opens it
    assert _relative_notebook(notice, "/srv/other")["notebook"] is None  # outside the root: no button, no path
    assert _relative_notebook({"notebook": "train.ipynb"}, "/srv")["notebook"] == "train.ipynb"
    assert _relative_notebook({"notebook": None}, "/srv")["notebook"] is None
