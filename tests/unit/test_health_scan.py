"""health --scan's checks: a scan that could not run is SKIPPED with its reason and the fix, never a pass;
Trivy's JSON (its report format, as `trivy image --format json` prints it) becomes counts against the
thresholds; the base's age warns past the limit, with a clock the test sets."""

from __future__ import annotations

import datetime as dt
import json

from jupyter_ptcuda.containers import labels as L
from jupyter_ptcuda.health.report import render_junit
from jupyter_ptcuda.health.scan import add_checks, base_age_check, trivy_result, vulnerability_check


def trivy_json(*severities: str) -> str:
    vulns = [{"VulnerabilityID": f"CVE-2026-{i:04d}", "PkgName": "openssl", "InstalledVersion": "3.0.11",
              "Severity": s} for i, s in enumerate(severities)]
    return json.dumps({"SchemaVersion": 2, "ArtifactName": "img:1", "Results": [
        {"Target": "img:1 (debian 12.4)", "Class": "os-pkgs", "Vulnerabilities": vulns},
        {"Target": "Python", "Class": "lang-pkgs"}]})


def test_without_trivy_the_check_is_skipped_with_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    check = vulnerability_check("img:1")
    assert check["status"] == "skip"
    assert "not on PATH" in check["detail"] and "not a pass" in check["detail"]
    assert "trivy image --download-db-only" in check["remediation"]


def test_without_a_database_the_check_is_skipped_with_the_download_command():
    said = ("2026-12-06T15:00:00Z\tFATAL\tFatal error\trun error: init error: DB error: failed to download "
            "vulnerability DB: OCI repository error: Get \"https://ghcr.io/v2/\": dial tcp: lookup ghcr.io: no such host")
    check = trivy_result(1, "", said)
    assert check["status"] == "skip" and "no vulnerability database" in check["detail"]
    assert "--download-db-only" in check["remediation"]


def test_counts_against_the_thresholds():
    assert trivy_result(0, trivy_json(), "")["status"] == "pass"
    high = trivy_result(0, trivy_json("HIGH", "HIGH"), "")
    assert high["status"] == "warn" and high["value"] == {"critical": 0, "high": 2}
    assert trivy_result(0, trivy_json("HIGH", "HIGH"), "", max_high=5)["status"] == "pass"
    assert trivy_result(0, trivy_json("HIGH", "HIGH"), "", max_high=1)["status"] == "fail"
    crit = trivy_result(0, trivy_json("CRITICAL", "HIGH"), "")
    assert crit["status"] == "fail" and "CVE-2026-0000 in openssl 3.0.11" in crit["detail"]
    assert trivy_result(0, trivy_json("CRITICAL"), "", max_critical=1)["status"] == "pass"


def test_a_skipped_scan_is_skipped_in_junit_and_does_not_pass_the_summary():
    report = {"schema": 1, "summary": "pass", "versions": {}, "env": {}, "checks": [
        {"id": "torch_import", "title": "torch imports", "status": "pass", "value": "2.13.0", "threshold": None,
         "remediation": None, "detail": None}]}
    report = add_checks(report, [trivy_result(1, "", "DB error: failed to download vulnerability DB"),
                                 trivy_result(0, trivy_json("CRITICAL"), "")])
    assert report["summary"] == "fail"
    xml = render_junit(report)
    assert '<skipped message="no vulnerability database for Trivy' in xml
    assert 'type="HealthCheckFailed"' in xml


NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def image(created: str, base: str = "", base_created: str | None = None):
    inspect = {"Created": created, "Config": {"Labels": {L.IMAGE_BASE: base} if base else {}}}
    bases = {base: {"Created": base_created, "Config": {"Labels": {}}}} if base_created else {}
    return inspect, bases.get


def test_the_base_age_comes_from_the_base_when_it_is_here():
    inspect, lookup = image("2026-12-05T10:00:00.123456789Z", "pytorch/pytorch:2.11.0", "2026-09-01T00:00:00Z")
    check = base_age_check(inspect, lookup, now=NOW)
    assert check["status"] == "warn" and check["value"] == "96 days"
    assert check["detail"].startswith("base pytorch/pytorch:2.11.0 created 2026-09-01")
    assert "docker pull pytorch/pytorch:2.11.0" in check["remediation"]
    assert base_age_check(inspect, lookup, now=NOW, max_days=100)["status"] == "pass"


def test_without_the_base_here_the_images_own_date_counts():
    inspect, lookup = image("2026-12-01T10:00:00.5Z", "debian:bookworm (debootstrap) + torch")
    check = base_age_check(inspect, lookup, now=NOW)
    assert check["status"] == "pass" and check["detail"].startswith("image created 2026-12-01")
    old, lookup = image("2026-10-01T00:00:00Z", "registry.example.org/base:1")
    check = base_age_check(old, lookup, now=NOW)
    assert check["status"] == "warn" and "is not on this engine" in check["detail"]
