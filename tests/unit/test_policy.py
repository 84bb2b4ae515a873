"""The operator's policy as tables: ceilings a request can only narrow, the image allowlist, request bounds."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from jupyter_ptcuda.containers import policy as P
from jupyter_ptcuda.containers.spec import GpuRequest, parse_gpus, parse_size
from jupyter_ptcuda.errors import ConfigError, Forbidden
from jupyter_ptcuda.images import L_BASE, L_CUDA, L_IPYKERNEL, L_PYTHON, L_TORCH
from jupyter_ptcuda.jobs.request import MAX_NAME, MAX_NPROC, JobRequest

LIMIT = P.operator_limit("JobOptions", "mem_limit", "1g")
G = 1024**3


@pytest.mark.parametrize("asked, ceiling, granted", [
    ("512m", None, 512 * 1024**2),
    ("1t", None, 1024**4),
    (0, None, None),  # no ceiling: no limit may be asked for
    ("512m", "1g", 512 * 1024**2),
    ("1g", "1g", G),
    (1073741824, "1g", G),
])
def test_memory_within_the_ceiling_is_granted(asked, ceiling, granted):
    got = P.narrow_size(parse_size(asked, "mem_limit"), parse_size(ceiling, "mem_limit"), what="mem_limit",
                        asked=asked, limit=LIMIT)
    assert got == granted


@pytest.mark.parametrize("asked, words", [
    ("1t", "mem_limit '1t' is above the operator's limit c.JobOptions.mem_limit = '1g'; ask for at most 1g."),
    ("1025m", "is above the operator's limit c.JobOptions.mem_limit = '1g'"),
    (0, "mem_limit 0 asks for no limit, which is above the operator's limit c.JobOptions.mem_limit = '1g'"),
    ("none", None),  # not a size: parse_size says so (400) before the policy is asked
    ("", "asks for no limit"),
])
def test_memory_beyond_the_ceiling_is_forbidden_naming_it(asked, words):
    if words is None:
        with pytest.raises(ConfigError):
            parse_size(asked, "mem_limit")
        return
    with pytest.raises(Forbidden) as err:
        P.narrow_size(parse_size(asked, "mem_limit"), G, what="mem_limit", asked=asked, limit=LIMIT)
    assert words in err.value.message and "ask for at most 1g" in err.value.message
    assert err.value.status == 403


@pytest.mark.parametrize("n, ok", [(None, True), (6 * 1024**2, True), (1024, False), (2**60, False)])
def test_sizes_no_machine_has_are_400(n, ok):
    if ok:
        assert P.check_size(n, "mem_limit", memory=True) == n
    else:
        with pytest.raises(ConfigError):
            P.check_size(n, "mem_limit", memory=True)


GPU_TABLE = [
    # (ceiling, request, granted or "403")
    ("all", "all", GpuRequest("all")),
    ("all", 3, GpuRequest("count", count=3)),
    ("all", ["7"], GpuRequest("ids", ids=("7",))),
    ("none", "none", GpuRequest()),
    ("none", 0, GpuRequest()),
    ("none", "all", "403"),
    ("none", 1, "403"),
    ("none", ["0"], "403"),
    (2, 1, GpuRequest("count", count=1)),
    (2, 2, GpuRequest("count", count=2)),
    (2, ["0", "3"], GpuRequest("ids", ids=("0", "3"))),
    (2, 3, "403"),
    (2, ["0", "1", "2"], "403"),
    (2, "all", "403"),
    (["0", "1"], ["1"], GpuRequest("ids", ids=("1",))),
    (["0", "1"], ["0", "1"], GpuRequest("ids", ids=("0", "1"))),
    (["0", "1"], 1, GpuRequest("ids", ids=("0",))),  # a count becomes the first allowed devices
    (["0", "1"], 2, GpuRequest("ids", ids=("0", "1"))),
    (["0", "1"], 3, "403"),
    (["0", "1"], ["2"], "403"),
    (["0", "1"], ["1", "2"], "403"),
    (["0", "1"], "all", "403"),
    (["0", "1"], "none", GpuRequest()),
]


@pytest.mark.parametrize("ceiling, asked, granted", GPU_TABLE)
def test_gpu_requests_only_narrow_the_ceiling(ceiling, asked, granted):
    limit = P.operator_limit("JobOptions", "gpus", ceiling)
    if granted == "403":
        with pytest.raises(Forbidden) as err:
            P.narrow_gpus(parse_gpus(asked), parse_gpus(ceiling), asked=asked, limit=limit)
        assert f"c.JobOptions.gpus = {ceiling!r}" in err.value.message and "ask for" in err.value.message
        return
    got = P.narrow_gpus(parse_gpus(asked), parse_gpus(ceiling), asked=asked, limit=limit)
    assert got == granted
    again = P.narrow_gpus(got, parse_gpus(ceiling), asked=asked, limit=limit)  # granted is within the ceiling
    assert again == got


def test_gpu_messages_say_what_to_ask_for():
    with pytest.raises(Forbidden) as err:
        P.narrow_gpus(parse_gpus("all"), parse_gpus("none"), asked="all",
                      limit=P.operator_limit("JobOptions", "gpus", "none"))
    assert err.value.message == ("gpus 'all' asks for all GPUs, beyond the operator's limit c.JobOptions.gpus = "
                                 "'none': no GPU is allowed; leave gpus unset or ask for 'none'.")
    with pytest.raises(Forbidden) as err:
        P.narrow_gpus(parse_gpus(4), parse_gpus(2), asked=4, limit=P.operator_limit("JobOptions", "gpus", 2))
    assert "ask for at most 2 GPU(s)" in err.value.message
    with pytest.raises(Forbidden) as err:
        P.narrow_gpus(parse_gpus(["3"]), parse_gpus(["0", "1"]), asked=["3"], limit="the GPUs of kernel k (0,1)")
    assert "beyond the GPUs of kernel k (0,1) (3 not allowed); ask for some of 0, 1" in err.value.message


def test_absurd_gpu_counts_are_400_whatever_the_ceiling():
    with pytest.raises(ConfigError, match="more than any machine has"):
        P.narrow_gpus(parse_gpus(10**20), parse_gpus("all"), asked=10**20, limit="x")


BUILT = {L_BASE: "debian", L_TORCH: "2.5.1", L_CUDA: "", L_PYTHON: "3.11", L_IPYKERNEL: "6.29"}

IMAGE_TABLE = [
    # (image, configured, patterns, labels, allow_built, allowed)
    ("team/kernel:1", ["team/kernel:1"], [], None, True, True),
    ("team/kernel:1", ["team/kernel:2"], [], None, True, False),
    ("team/kernel:2", ["team/kernel:1"], ["team/*"], None, True, True),
    ("Team/kernel:2", [], ["team/*"], None, True, False),  # case-sensitive
    ("registry.example.com/ml/torch:2.5", [], ["registry.example.com/ml/*"], {}, True, True),
    ("ubuntu:22.04", ["team/kernel:1"], ["team/*"], {}, True, False),
    ("ubuntu:22.04", [], [], {"maintainer": "x"}, True, False),
    ("mine:built", [], [], BUILT, True, True),  # labels of `jupyter ptcuda image build`
    ("mine:built", [], [], BUILT, False, False),  # ... unless the operator turned that off
    ("mine:half", [], [], {**BUILT, L_IPYKERNEL: ""}, True, False),
    ("mine:half", [], [], {k: v for k, v in BUILT.items() if k != L_TORCH}, True, False),
    ("absent:1", [], [], None, True, False),  # labels unknown (not present)
]


@pytest.mark.parametrize("image, configured, patterns, labels, allow_built, allowed", IMAGE_TABLE)
def test_image_rule(image, configured, patterns, labels, allow_built, allowed):
    assert P.image_allowed(image, configured=configured, patterns=patterns, labels=labels,
                           allow_built=allow_built) is allowed


def test_policy_reads_the_operators_config_and_explains_a_refusal():
    config = Config()
    config.ContainerPolicy.allowed_images = ["team/*"]
    policy = P.ContainerPolicy(config=config)
    policy.check_image("team/x:1", configured=["default:1"], labels=None)
    assert not policy.needs_labels("team/x:1", configured=["default:1"])
    assert policy.needs_labels("other:1", configured=["default:1"])
    policy.check_image("other:1", configured=["default:1"], labels=BUILT)
    with pytest.raises(Forbidden) as err:
        policy.check_image("other:1", configured=["default:1"], labels={}, present=True)
    msg = err.value.message
    assert "image 'other:1' is not allowed" in msg and "'default:1'" in msg and "['team/*']" in msg
    assert "c.ContainerPolicy.allowed_images" in msg and "jupyter ptcuda image build" in msg
    with pytest.raises(Forbidden, match="not present on this Docker engine"):
        policy.check_image("other:1", configured=["default:1"], labels=None, present=False)

    config.ContainerPolicy.allow_built_images = False
    strict = P.ContainerPolicy(config=config)
    assert not strict.needs_labels("other:1", configured=["default:1"])
    with pytest.raises(Forbidden, match="allow_built_images is False"):
        strict.check_image("other:1", configured=["default:1"], labels=BUILT)


def test_default_policy_allows_the_configured_and_built_images_only():
    policy = P.ContainerPolicy()
    assert policy.allowed_images == [] and policy.allow_built_images is True
    assert policy.allows("cfg:1", configured=["cfg:1"], labels=None)
    assert policy.allows("built:1", configured=["cfg:1"], labels=BUILT)
    assert not policy.allows("ubuntu:22.04", configured=["cfg:1"], labels={})


def test_format_size():
    assert [P.format_size(n) for n in (None, 1024**4, G, 512 * 1024**2, 3 * 1024, 1000)] == \
        ["no limit", "1t", "1g", "512m", "3k", "1000"]


@pytest.mark.parametrize("fields, words", [
    ({"nproc_per_node": 10**20}, f"from 1 to {MAX_NPROC}"),
    ({"nproc_per_node": MAX_NPROC + 1}, f"from 1 to {MAX_NPROC}"),
    ({"nproc_per_node": 0}, "from 1 to"),
    ({"name": "x" * (MAX_NAME + 1)}, f"at most {MAX_NAME} characters"),
    ({"name": "two\nlines"}, "control characters"),
    ({"args": ["a\0b"]}, "args[0] contains a NUL byte"),
    ({"args": ["x"] * 1025}, "at most 1024"),
    ({"args": ["x" * 65537]}, "at most 65536"),
    ({"params": {"lr": "0.1\0"}}, "NUL byte"),
    ({"path": "/a\0b.py"}, "path contains a NUL byte"),
    ({"timeout": float("nan")}, "positive number of seconds"),
    ({"timeout": float("inf")}, "positive number of seconds"),
])
def test_request_bounds_are_400_naming_the_bound(fields, words):
    with pytest.raises(ConfigError) as err:
        JobRequest(**{"path": "/nb/train.py", **fields})
    assert words in err.value.message and len(err.value.message) < 300


def test_requests_within_the_bounds_are_accepted():
    req = JobRequest(path="/nb/train.py", name="x" * MAX_NAME, nproc_per_node=MAX_NPROC, args=["--a"] * 1024,
                     timeout=3600)
    assert req.timeout == 3600.0
