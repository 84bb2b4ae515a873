"""`jupyter ptcuda health --junit FILE`: the report as the JUnit XML that CI systems display.

What a CI user sees: one test per check under one suite named after the image, failed checks as
failures carrying why and how to fix, skipped checks as skipped with the reason, and the same exit
code as without --junit. A check that could not run at all is one test in error with the message.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from jupyter_ptcuda import cli
from jupyter_ptcuda.errors import ImageNotFound, PtcudaError
from jupyter_ptcuda.health import check_script_source, parse_report
from jupyter_ptcuda.health import runner as health_runner
from jupyter_ptcuda.health.report import (
    JUNIT_CLASSNAME,
    exit_code,
    render_junit,
    render_junit_error,
    write_junit,
)
from tests.unit.test_health_report import make_check, make_report

MIXED = make_report(
    make_check("torch_import", "pass", title="PyTorch imports", value="2.11.0"),
    make_check("cuda_available", "fail", title="CUDA available to PyTorch", value=False, threshold=True,
               detail="CPU-only torch build: torch 2.11.0 was built without CUDA",
               remediation="install a CUDA build of PyTorch in the image"),
    make_check("shm", "warn", title="/dev/shm size", value="64.0 MiB", threshold=">= 1 GiB",
               remediation="start the container with --shm-size=8g", detail="67108864 bytes"),
    make_check("matmul", "skip", title="Matmul on the GPU matches the CPU", detail="CUDA unavailable: CPU-only"),
)
MIXED["target"] = {"image": "pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime", "gpus": "all"}
MIXED["cuda"] = {"available": False, "reason_code": "cpu_only_build", "reason": "CPU-only torch build"}
MIXED["notes"] = ["GPUs were requested but the engine has no NVIDIA runtime"]


def parse(xml_text: str) -> tuple[ET.Element, ET.Element]:
    """(testsuites, its only testsuite), checking the envelope every JUnit consumer expects."""
    assert xml_text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(xml_text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    for key in ("tests", "failures", "errors", "skipped", "time"):
        assert root.get(key) == suites[0].get(key), key
        float(root.get(key))  # numbers, as CI tools parse them
    return root, suites[0]


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    found = suite.findall("testcase")
    for case in found:
        assert case.get("classname") == JUNIT_CLASSNAME and case.get("name") and case.get("time") == "0"
    return {c.get("name"): c for c in found}


def test_one_testcase_per_check_with_the_counts_ci_shows():
    root, suite = parse(render_junit(MIXED, timestamp=0))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "0", "1")
    assert suite.get("time") == "1.200" and suite.get("timestamp") == "1970-01-01T00:00:00"
    assert suite.get("name") == "jupyter ptcuda health image pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime (gpus all)"
    by_name = cases(suite)
    assert list(by_name) == ["torch_import: PyTorch imports", "cuda_available: CUDA available to PyTorch",
                             "shm: /dev/shm size", "matmul: Matmul on the GPU matches the CPU"]

    failure = by_name["cuda_available: CUDA available to PyTorch"].find("failure")
    assert failure is not None and failure.get("type") == "HealthCheckFailed"
    assert failure.get("message") == "CPU-only torch build: torch 2.11.0 was built without CUDA"
    assert failure.text.splitlines() == ["value: false", "want: true",
                                         "why: CPU-only torch build: torch 2.11.0 was built without CUDA",
                                         "fix: install a CUDA build of PyTorch in the image"]

    skipped = by_name["matmul: Matmul on the GPU matches the CPU"].find("skipped")
    assert skipped is not None and skipped.get("message") == "CUDA unavailable: CPU-only"

    warn = by_name["shm: /dev/shm size"]  # a warning passes, as it does not fail the gate
    assert warn.find("failure") is None and warn.find("skipped") is None
    assert warn.findtext("system-out").startswith("WARNING: value: 64.0 MiB")
    assert "fix: start the container with --shm-size=8g" in warn.findtext("system-out")

    passed = by_name["torch_import: PyTorch imports"]
    assert list(passed) == [passed.find("system-out")] and passed.findtext("system-out") == "value: 2.11.0"

    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["summary"] == "fail" and props["torch"] == "2.5.1" and props["driver"] == "550.54.15"
    assert props["gpu0"] == "NVIDIA H100 80GB HBM3 (compute capability 9.0)"
    assert props["cuda_unavailable"] == "cpu_only_build: CPU-only torch build"
    assert suite.findtext("system-out") == "GPUs were requested but the engine has no NVIDIA runtime"
    assert exit_code(MIXED) == 1  # the gate: unchanged by the JUnit file


def test_a_passing_report_has_no_failures():
    good = make_report(make_check("torch_import", "pass", value="2.11.0"), make_check("ecc", "skip", detail="no NVML"))
    _, suite = parse(render_junit(good))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    assert suite.get("name") == "jupyter ptcuda health container"  # no target: a report from elsewhere
    kernel = render_junit({**good, "target": {"kernel_id": "k-123"}})
    assert parse(kernel)[1].get("name") == "jupyter ptcuda health kernel k-123"


def test_text_xml_cannot_carry_is_replaced_and_markup_escaped():
    nasty = make_report(make_check("throttle", "fail", title="Clock throttle <reasons>", value="a&b",
                                   detail='\x1b[31mhw_slowdown\x1b[0m "bad" <now>\x00', remediation="drain & reset"))
    _, suite = parse(render_junit(nasty))
    (case,) = suite.findall("testcase")
    assert case.get("name") == "throttle: Clock throttle <reasons>"
    failure = case.find("failure")
    assert failure.get("message") == '?[31mhw_slowdown?[0m "bad" <now>?'
    assert "value: a&b" in failure.text and "fix: drain & reset" in failure.text


def test_a_check_that_could_not_run_is_one_test_in_error():
    message = "image jupyter-ptcuda/nope:1 is not present\nrun `docker pull jupyter-ptcuda/nope:1`"
    _, suite = parse(render_junit_error(message, {"image": "jupyter-ptcuda/nope:1", "gpus": "all"}))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("1", "0", "1", "0")
    (case,) = cases(suite).values()
    error = case.find("error")
    assert error.get("message") == "image jupyter-ptcuda/nope:1 is not present" and error.text == message


def test_a_real_report_from_check_py_converts():
    """check.py run by this Python (no torch): torch_import fails, the GPU checks skip with the reason."""
    proc = subprocess.run([sys.executable, "-"], input=check_script_source(), capture_output=True, text=True,
                          timeout=120)
    report = parse_report(proc.stdout)
    _, suite = parse(render_junit(report))
    by_name = cases(suite)
    assert len(by_name) == len(report["checks"])
    fails = [n for n, c in by_name.items() if c.find("failure") is not None]
    assert "torch_import: PyTorch imports" in fails and suite.get("failures") == str(len(fails))
    assert by_name["matmul: Matmul on the GPU matches the CPU"].find("skipped").get("message") == "torch did not import"


def test_write_junit_makes_folders_replaces_and_names_an_unwritable_path(tmp_path):
    path = tmp_path / "reports" / "health.xml"
    write_junit(str(path), render_junit_error("first"))
    write_junit(str(path), render_junit(MIXED))
    assert parse(path.read_text())[1].get("failures") == "1"
    assert sorted(p.name for p in path.parent.iterdir()) == ["health.xml"]  # no temporary file left
    (tmp_path / "a-file").write_text("")
    with pytest.raises(PtcudaError, match="cannot write the JUnit report to .*a-file/x.xml"):
        write_junit(str(tmp_path / "a-file" / "x.xml"), "<x/>")


# -- the CLI (the runner replaced: no engine here; tests/integration/test_ci_examples.py runs it for real) --
@pytest.fixture
def no_engine(monkeypatch):
    monkeypatch.setattr(cli, "get_service", lambda *config: object())

    async def allowed(service, image, parent=None):
        return None

    monkeypatch.setattr(health_runner, "check_allowed", allowed)
    return monkeypatch


def test_cli_junit_keeps_the_exit_code_and_the_printed_report(no_engine, tmp_path, capsys):
    async def checked(service, image, **kw):
        return MIXED

    no_engine.setattr(health_runner, "check_image", checked)
    junit = tmp_path / "out" / "health.xml"
    assert cli.main(["health", "--image", "img:1", "--junit", str(junit)]) == 1
    out, err = capsys.readouterr()
    assert "Health check: FAIL" in out and f"JUnit report: {junit} (4 checks, 1 failed)" in err
    _, suite = parse(junit.read_text())
    assert cases(suite)["cuda_available: CUDA available to PyTorch"].find("failure") is not None

    good = make_report(make_check("torch_import", "pass"))
    no_engine.setattr(health_runner, "check_image", lambda *a, **kw: _value(good))
    assert cli.main(["health", "--image", "img:1", "--json", "--junit", str(junit)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("{")  # --json stays pure JSON on stdout
    assert parse(junit.read_text())[1].get("failures") == "0"


def test_cli_junit_records_why_the_check_could_not_run(no_engine, tmp_path, capsys):
    async def missing(service, image, **kw):
        raise ImageNotFound(f"image {image} is not present: run `docker pull {image}`")

    no_engine.setattr(health_runner, "check_image", missing)
    junit = tmp_path / "health.xml"
    assert cli.main(["health", "--image", "img:404", "--junit", str(junit)]) == 1
    assert "image img:404 is not present" in capsys.readouterr().err
    _, suite = parse(junit.read_text())
    assert suite.get("errors") == "1" and suite.get("name") == "jupyter ptcuda health image img:404 (gpus all)"
    assert "docker pull img:404" in suite.find("testcase/error").get("message")


async def _value(value):
    return value
