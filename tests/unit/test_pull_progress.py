"""A pull's progress from Docker's event stream (:mod:`jupyter_ptcuda.containers.progress`): bytes of the
layers to fetch (not those the engine has), a share that never goes back when a waiting layer starts, the
unpacking after the download, and a throttle with an injected clock."""

from __future__ import annotations

from jupyter_ptcuda.containers.progress import PullProgress, PullState, Throttle, format_bytes

MB = 10**6


def ev(status, layer="", current=None, total=None):
    out = {"status": status, "id": layer}
    if current is not None:
        out["progressDetail"] = {"current": current, "total": total}
    return out


def test_bytes_of_the_layers_to_fetch_and_a_share_that_never_goes_back():
    p = PullProgress()
    assert p.feed(ev("Pulling from ml/torch", "2")).layers == 0  # the tag's line is no layer
    p.feed(ev("Already exists", "base"))
    p.feed(ev("Pulling fs layer", "a"))
    p.feed(ev("Pulling fs layer", "b"))
    p.feed(ev("Waiting", "b"))
    s = p.feed(ev("Downloading", "a", 300 * MB, 1000 * MB))
    assert (s.done, s.total, s.percent, s.layers, s.waiting) == (300 * MB, 1000 * MB, 30, 2, 1)
    assert s.describe() == "30% (0.3 of 1.0 GB), 1 more layer to come"
    s = p.feed(ev("Downloading", "b", 10 * MB, 1000 * MB))  # the total doubles: the true share drops to 15%
    assert s.percent == 30 and s.total == 2000 * MB
    p.feed(ev("Download complete", "a"))
    s = p.feed(ev("Downloading", "b", 400 * MB, 1000 * MB))
    assert s.percent == 70 and s.describe() == "70% (1.4 of 2.0 GB)"
    s = p.feed(ev("Verifying Checksum", "b"))
    assert s.downloaded and s.percent == 100
    assert p.feed(ev("Extracting", "a", 5, 10)).describe() == "100% (2.0 GB), unpacking layer 1 of 2"
    p.feed(ev("Pull complete", "a"))
    assert p.feed(ev("Extracting", "b", 5, 10)).describe() == "100% (2.0 GB), unpacking layer 2 of 2"
    s = p.feed(ev("Pull complete", "b"))
    assert s.extracted == 2 and s.describe() == "100% (2.0 GB)"
    assert p.feed(ev("Digest: sha256:" + "0" * 64)) == s
    assert s.to_json() == {"done": 2000 * MB, "total": 2000 * MB, "percent": 100, "layers": 2, "waiting": 0,
                           "extracted": 2}


def test_a_layer_too_small_to_report_its_download_and_an_image_already_there():
    p = PullProgress()
    p.feed(ev("Pulling fs layer", "tiny"))
    s = p.feed(ev("Download complete", "tiny"))
    assert s.downloaded and s.percent == 100 and s.total == 0
    q = PullProgress()
    assert q.feed(ev("Already exists", "base")) == PullState() and q.state.describe() == "starting"


def test_units():
    assert format_bytes(1_234_000_000) == "1.2 GB"
    assert format_bytes(340 * MB) == "340 MB"
    assert format_bytes(12_300) == "12.3 kB"
    assert format_bytes(7) == "7 B"
    assert format_bytes(250 * MB, 2_800_000_000) == "0.2"


def test_throttle():
    now = [100.0]
    t = Throttle(0.5, clock=lambda: now[0])
    assert t.ready() and not t.ready()
    now[0] += 0.49
    assert not t.ready()
    now[0] += 0.02
    assert t.ready()
