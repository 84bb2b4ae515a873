"""Error messages in replies are bounded (400 characters) but keep what to do: a long message loses its
middle, never its last sentence (issue 26: a refusal cut "… (38 more characters)" lost its fix)."""

from __future__ import annotations

from jupyter_ptcuda.server.base import MAX_MESSAGE, truncate


def test_a_long_refusal_keeps_its_fix():
    holders = ", ".join(f"kernel {i:02d} of alice/project-{i}/notebook.ipynb" for i in range(12))
    text = f"2 GPU(s) requested but only 0 of 2 are free: held by {holders}. Stop one of those, or ask for fewer GPUs."
    assert len(text) > MAX_MESSAGE
    out = truncate(text)
    assert len(out) <= MAX_MESSAGE
    assert out.startswith("2 GPU(s) requested but only 0 of 2 are free")
    assert out.endswith(" … Stop one of those, or ask for fewer GPUs.")


def test_short_messages_are_kept_and_endless_ones_cut():
    assert truncate("no such job") == "no such job"
    blob = "x" * 5000  # user input echoed back, no sentence to keep
    out = truncate(blob)
    assert len(out) == MAX_MESSAGE and out.endswith("…")
    one_long_tail = "start. " + "y" * 900
    assert len(truncate(one_long_tail)) <= MAX_MESSAGE
