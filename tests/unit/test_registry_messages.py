"""What a person reads when a registry refuses (one sentence with the fix), how references are pinned,
and the push progress a terminal and a CI log show. The engine's words are the ones dockerd and the
distribution registry send (seen against Debian's docker-registry in tests/integration/test_registry.py)."""

from __future__ import annotations

import io

import pytest

from jupyter_ptcuda.containers.engine import registry_error, registry_of
from jupyter_ptcuda.registry import Progress, pinned, split_reference

REF = "127.0.0.1:40123/team/kernel:v1"


@pytest.mark.parametrize(("said", "fix"), [
    ("unauthorized: authentication required", "run `docker login 127.0.0.1:40123`"),
    ("no basic auth credentials", "run `docker login 127.0.0.1:40123`"),
    ("denied: requested access to the resource is denied", "may not use this repository"),
    ("name unknown: repository name not known to registry", "check the repository name and tag"),
    ("manifest unknown: manifest unknown", "push it first: `jupyter ptcuda image push 127.0.0.1:40123/team/kernel:v1`"),
    ("tls: failed to verify certificate: x509: certificate signed by unknown authority",
     "/etc/docker/certs.d/127.0.0.1:40123/ca.crt"),
    ("http: server gave HTTP response to HTTPS client", "insecure-registries"),
    ('Get "http://127.0.0.1:40123/v2/": dial tcp 127.0.0.1:40123: connect: connection refused',
     "check the registry address"),
])
def test_a_registry_refusal_is_one_sentence_with_its_fix(said, fix):
    msg = registry_error(said, REF, "pushing").message
    assert fix in msg
    assert said.split(":")[0] in msg  # the engine's own words, for a search
    assert msg.count("\n") == 0 and msg.endswith(".")


def test_a_port_number_is_not_read_as_a_status():
    # 40123 holds "401": an unreachable registry on such a port must not be told to `docker login`
    msg = registry_error("dial tcp 127.0.0.1:40123: connect: connection refused", "127.0.0.1:40123/x:1").message
    assert "unreachable" in msg and "docker login" not in msg


@pytest.mark.parametrize(("ref", "registry"), [
    ("127.0.0.1:5000/a/b:1", "127.0.0.1:5000"), ("ghcr.io/org/img", "ghcr.io"), ("localhost/x", "localhost"),
    ("pytorch/pytorch:2.11.0", "docker.io"), ("ubuntu", "docker.io"),
])
def test_the_registry_a_name_names(ref, registry):
    assert registry_of(ref) == registry


@pytest.mark.parametrize(("ref", "parts"), [
    ("127.0.0.1:5000/a/b:1", ("127.0.0.1:5000/a/b", "1", "")),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", "", "")),
    ("img@sha256:abc", ("img", "", "sha256:abc")),
    ("reg:5000/img:t@sha256:abc", ("reg:5000/img", "t", "sha256:abc")),
])
def test_references_split_with_a_registry_port(ref, parts):
    assert split_reference(ref) == parts


def test_pinning_drops_the_tag():
    assert pinned("127.0.0.1:5000/a/b:1", "sha256:" + "0" * 64) == "127.0.0.1:5000/a/b@sha256:" + "0" * 64


PUSH = [
    {"status": "The push refers to repository [127.0.0.1:5000/a/b]"},
    {"status": "Preparing", "progressDetail": {}, "id": "0123456789ab"},
    {"status": "Preparing", "progressDetail": {}, "id": "ba9876543210"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "ba9876543210"},
    {"status": "Pushing", "progressDetail": {"current": 1_000_000, "total": 4_000_000}, "id": "0123456789ab"},
    {"status": "Pushing", "progressDetail": {"current": 3_000_000, "total": 4_000_000}, "id": "0123456789ab"},
    {"status": "Pushed", "progressDetail": {}, "id": "0123456789ab"},
    {"status": "1: digest: sha256:" + "0" * 64 + " size: 740"},
    {"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:" + "0" * 64, "Size": 740}},
]


def test_ci_sees_a_line_per_layer_state_not_per_chunk():
    out = io.StringIO()
    p = Progress("127.0.0.1:5000/a/b:1", out=out, tty=False)
    for event in PUSH:
        p(event)
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [ln for ln in lines if "0123456789ab" in ln] == [
        "pushing 127.0.0.1:5000/a/b:1: layer 0123456789ab preparing",
        "pushing 127.0.0.1:5000/a/b:1: layer 0123456789ab pushing",  # once, not per chunk
        "pushing 127.0.0.1:5000/a/b:1: layer 0123456789ab pushed (4.0 MB)",
    ]
    assert "pushing 127.0.0.1:5000/a/b:1: layer ba9876543210 layer already exists" in lines
    assert p.totals == (4_000_000, 4_000_000, 2, 2)


def test_a_terminal_sees_one_bar_redrawn_in_place():
    ticks = iter(range(100))
    out = io.StringIO()
    p = Progress("r/a:1", out=out, tty=True, clock=lambda: next(ticks))
    for event in PUSH:
        p(event)
    p.close()
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1  # one line, redrawn with \r
    last = text.rstrip("\n").split("\r")[-1]
    assert last == "pushing r/a:1 [##############################] 100% 4.0/4.0 MB, 2/2 layers"
