"""`jupyter ptcuda health --image IMG --scan` on the real engine: with no scanner (c.ImageScan.trivy names
a command that is not there) the vulnerability check is SKIPPED in the JSON and the JUnit report with the
reason and the fix, never passed; the base-age check reads the image's dates, with the threshold from
the config and from the flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.registry import tiny_kernel_image

pytestmark = pytest.mark.integration


def test_scan_without_a_scanner_is_skipped_with_the_fix_and_the_base_age_is_checked(engine, tmp_path):
    image = tiny_kernel_image(engine)
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(
        "c.ImageScan.trivy = 'trivy-not-installed-here'\nc.ImageScan.max_base_age_days = 100000\n")
    junit = tmp_path / "health.xml"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_CONFIG_PATH": str(config)}
    done = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "health", "--image", image, "--gpus", "none",
                           "--scan", "--json", "--junit", str(junit)], capture_output=True, text=True, env=env,
                          timeout=300)
    report = json.loads(done.stdout)
    checks = {c["id"]: c for c in report["checks"]}
    vulns = checks["vulnerabilities"]
    assert vulns["status"] == "skip" and "'trivy-not-installed-here' is not on PATH" in vulns["detail"]
    assert "install Trivy" in vulns["remediation"]
    assert checks["base_age"]["status"] == "pass" and checks["base_age"]["threshold"] == "<= 100000 days"
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    skipped = cases["vulnerabilities: Known vulnerabilities (HIGH/CRITICAL, Trivy)"].find("skipped")
    assert skipped is not None and "not a pass" in skipped.get("message")
    assert cases["base_age: Age of the image's base"].find("skipped") is None

    aged = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "health", "--image", image, "--gpus", "none",
                           "--scan", "--json", "--max-base-age-days", "0"], capture_output=True, text=True, env=env,
                          timeout=300)
    base_age = {c["id"]: c for c in json.loads(aged.stdout)["checks"]}["base_age"]
    assert base_age["status"] == "warn" and "jupyter ptcuda image build --base" in base_age["remediation"]
