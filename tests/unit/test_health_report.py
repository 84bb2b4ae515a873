"""Host-side parsing, rendering and exit code of health reports."""

from __future__ import annotations

import json

import pytest

from jupyter_ptcuda.errors import PtcudaError
from jupyter_ptcuda.health.report import HealthReportError, exit_code, parse_report, render_text


def make_check(cid: str, status: str, **kw) -> dict:
    return {"id": cid, "title": kw.pop("title", cid.replace("_", " ").title()), "status": status,
            "value": None, "threshold": None, "remediation": None, "detail": None, **kw}


def make_report(*checks: dict, summary: str | None = None) -> dict:
    statuses = {c["status"] for c in checks}
    derived = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
    return {"schema": 1, "summary": summary or derived, "checks": list(checks),
            "cuda": {"available": True, "reason_code": None, "reason": None},
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_total": 1}],
            "versions": {"python": "3.11.7", "torch": "2.5.1", "cuda_runtime": "12.4", "driver": "550.54.15"},
            "env": {"NVIDIA_VISIBLE_DEVICES": "all"}, "perf": False, "duration_s": 1.2}


GOOD = make_report(
    make_check("torch_import", "pass", title="PyTorch imports", value="2.5.1"),
    make_check("shm", "warn", title="/dev/shm size", value="64.0 MiB", threshold=">= 1 GiB",
               remediation="start the container with --shm-size=8g", detail="67108864 bytes"),
    make_check("ecc", "skip", title="ECC volatile uncorrected errors", detail="pynvml not installed"),
    make_check("throttle", "skip", title="Clock throttle reasons", detail="pynvml not installed"),
)


def test_parse_report_skips_banners_printed_before_it():
    banner = "\n==========\n== CUDA ==\n==========\n\nCUDA Version 12.4.1\n{not json\n"
    assert parse_report(banner + json.dumps(GOOD) + "\n") == GOOD
    assert parse_report(json.dumps(GOOD)) == GOOD


def test_parse_report_names_what_the_container_printed_instead():
    with pytest.raises(HealthReportError) as err:
        parse_report("Traceback (most recent call last):\n  File x\nSyntaxError: invalid syntax\n",
                     stderr="/bin/sh: 1: python: not found")
    message = str(err.value)
    assert "did not print a health report" in message
    assert "SyntaxError: invalid syntax" in message and "python: not found" in message
    assert isinstance(err.value, PtcudaError) and err.value.status == 502
    assert "SyntaxError" in err.value.details["output_tail"]
    with pytest.raises(HealthReportError, match="nothing"):
        parse_report("")


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda r: r.update(schema=2), "newer than this jupyter-ptcuda"),
    (lambda r: r.pop("schema"), "schema"),
    (lambda r: r.update(summary="great"), "'summary'"),
    (lambda r: r.update(checks=[]), "'checks'"),
    (lambda r: r["checks"][0].update(status="ok"), "status 'ok'"),
    (lambda r: r["checks"][0].pop("remediation"), "lacks remediation"),
    (lambda r: r.update(versions=None), "'versions'"),
    (lambda r: r.update(summary="pass"), "the checks say 'warn'"),
])
def test_parse_report_rejects_malformed_reports(mutate, words):
    report = json.loads(json.dumps(GOOD))
    mutate(report)
    with pytest.raises(HealthReportError, match="malformed") as err:
        parse_report(json.dumps(report))
    assert words in str(err.value)


def test_exit_code_fails_only_on_failed_checks():
    assert exit_code(GOOD) == 0  # a warning is not a failure
    assert exit_code(make_report(make_check("a", "pass"), make_check("b", "fail"))) == 1
    assert exit_code(make_report(make_check("a", "skip"))) == 0


def test_render_text_shows_status_value_threshold_and_what_to_do():
    text = render_text(GOOD)
    assert text.splitlines()[0].startswith("Health check: WARN")
    assert "torch 2.5.1" in text and "NVIDIA H100 80GB HBM3" in text
    pass_row = next(line for line in text.splitlines() if "PyTorch imports" in line)
    assert pass_row.startswith("✓") and "2.5.1" in pass_row
    warn_row = next(line for line in text.splitlines() if "/dev/shm size" in line)
    assert warn_row.startswith("!") and "64.0 MiB" in warn_row and "want >= 1 GiB" in warn_row
    assert "fix: start the container with --shm-size=8g" in text
    assert "why: 67108864 bytes" in text
    assert "ECC volatile uncorrected errors, Clock throttle reasons: pynvml not installed" in text


def test_render_text_cuda_unavailable_ascii_and_color():
    report = make_report(make_check("cuda_available", "fail", title="CUDA available to PyTorch", value=False,
                                    remediation="start the container with --gpus all",
                                    detail="no GPU requested"))
    report["cuda"] = {"available": False, "reason_code": "no_gpu_requested", "reason": "no GPU requested"}
    report["gpus"] = []
    text = render_text(report, unicode=False)
    assert text.isascii()
    assert "CUDA unavailable: no GPU requested" in text
    assert "XX CUDA available to PyTorch" in text and "fix: start the container with --gpus all" in text
    assert "\033[31m" in render_text(report, color=True)
    long_value = make_report(make_check("x", "pass", value="v" * 200))
    assert "v" * 39 + "…" in render_text(long_value)
