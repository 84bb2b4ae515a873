"""What is inside an image, as health checks: known vulnerabilities (Trivy) and the age of its base.

``jupyter ptcuda health --image IMG --scan`` adds two checks to the report (same schema as
``check.py``'s, so the JSON, text and JUnit reports carry them and the exit code gates CI):

- ``vulnerabilities``: HIGH and CRITICAL counts from ``trivy image`` (run on this host against the local
  engine's image). More CRITICAL than ``max_critical`` (default 0) or HIGH than ``max_high`` (default:
  no limit) fails; HIGH findings under no limit warn. With no Trivy on PATH, or no vulnerability
  database it can reach, the check is **skipped** with that reason and the command that fixes it —
  never a pass.
- ``base_age``: a warning when the image's base is older than ``max_base_age_days`` (default 30). The
  base is the image named by the ``io.jupyter-ptcuda.image.base`` label (``image build`` writes it) or
  ``org.opencontainers.image.base.name``, when it is on this engine; else the image's own creation date
  (a base built by debootstrap is as old as the build).

Callers: the CLI (:func:`scan_checks`, then :func:`add_checks`). Trivy is an external program; nothing
here imports it. The clock is a parameter (tests move it).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from traitlets import Float, Int, Unicode
from traitlets.config import Configurable

from ..containers import labels as L
from .report import summarize

TRIVY_INSTALL = ("install Trivy (https://trivy.dev/latest/getting-started/installation/: Aqua's apt repository "
                 "or its release binary) so that `trivy` is on PATH, then run `trivy image --download-db-only` once")
DB_HINTS = ("db", "database", "vulnerability-db", "trivy-db")


class ImageScan(Configurable):
    """Thresholds of ``health --scan`` (``c.ImageScan.*`` in a Jupyter config; CLI flags override)."""

    max_critical = Int(0, config=True, help="""CRITICAL vulnerabilities an image may have before the scan check
        fails. Default 0. Example: c.ImageScan.max_critical = 0""")
    max_high = Int(-1, config=True, help="""HIGH vulnerabilities an image may have before the scan check fails;
        -1: no limit (HIGH findings then warn). Default -1. Example: c.ImageScan.max_high = 20""")
    max_base_age_days = Int(30, config=True, help="""Days after which an image's base is old enough to rebuild
        (a warning). Default 30. Example: c.ImageScan.max_base_age_days = 45""")
    trivy = Unicode("trivy", config=True, help="""The Trivy command. Default "trivy" (on PATH).
        Example: c.ImageScan.trivy = "/opt/trivy/bin/trivy" """)
    timeout = Float(900, config=True, help="""Seconds a scan may take (the first one downloads the database).
        Default 900. Example: c.ImageScan.timeout = 1800""")


def _check(cid: str, title: str, status: str, value: Any, threshold: Any, detail: str,
           remediation: str | None = None) -> dict[str, Any]:
    return {"id": cid, "title": title, "status": status, "value": value, "threshold": threshold,
            "remediation": remediation, "detail": detail}


def vulnerability_check(image: str, *, max_critical: int = 0, max_high: int = -1, trivy: str = "trivy",
                        timeout: float = 900, run: Callable[..., subprocess.CompletedProcess] = subprocess.run
                        ) -> dict[str, Any]:
    """The ``vulnerabilities`` check of ``image`` (see the module docstring)."""
    title = "Known vulnerabilities (HIGH/CRITICAL, Trivy)"
    want = f"CRITICAL <= {max_critical}" + (f", HIGH <= {max_high}" if max_high >= 0 else "")
    exe = shutil.which(trivy)
    if exe is None:
        return _check("vulnerabilities", title, "skip", None, want,
                      f"no vulnerability scanner: {trivy!r} is not on PATH, so the image was not scanned (not a pass)",
                      TRIVY_INSTALL)
    cmd = [exe, "image", "--quiet", "--format", "json", "--scanners", "vuln", "--severity", "HIGH,CRITICAL", image]
    try:
        done = run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _check("vulnerabilities", title, "skip", None, want,
                      f"`trivy image` did not finish in {timeout:.0f} s, so the image was not scanned (not a pass)",
                      "raise c.ImageScan.timeout, or run `trivy image --download-db-only` first")
    return trivy_result(done.returncode, done.stdout, done.stderr, max_critical=max_critical, max_high=max_high)


def trivy_result(returncode: int, stdout: str, stderr: str, *, max_critical: int = 0, max_high: int = -1
                 ) -> dict[str, Any]:
    """The check from what ``trivy image --format json`` exited with and printed."""
    title = "Known vulnerabilities (HIGH/CRITICAL, Trivy)"
    want = f"CRITICAL <= {max_critical}" + (f", HIGH <= {max_high}" if max_high >= 0 else "")
    if returncode != 0:
        said = " ".join((stderr or stdout).split())[-300:]
        if any(h in said.lower() for h in DB_HINTS):
            return _check("vulnerabilities", title, "skip", None, want,
                          f"no vulnerability database for Trivy ({said}), so the image was not scanned (not a pass)",
                          "run `trivy image --download-db-only` where ghcr.io/aquasecurity/trivy-db is reachable "
                          "(or give Trivy a mirror: --db-repository REGISTRY/trivy-db), then scan again")
        return _check("vulnerabilities", title, "skip", None, want,
                      f"`trivy image` failed ({said}), so the image was not scanned (not a pass)",
                      "run `trivy image IMAGE` by hand to see why")
    try:
        results = json.loads(stdout).get("Results") or []
    except (ValueError, AttributeError):
        return _check("vulnerabilities", title, "skip", None, want,
                      "Trivy printed no JSON report, so the image was not scanned (not a pass)",
                      "run `trivy image --format json IMAGE` by hand to see why")
    counts = {"CRITICAL": 0, "HIGH": 0}
    worst: list[str] = []
    for result in results:
        for v in result.get("Vulnerabilities") or []:
            sev = str(v.get("Severity", "")).upper()
            if sev in counts:
                counts[sev] += 1
                if sev == "CRITICAL" and len(worst) < 5:
                    worst.append(f"{v.get('VulnerabilityID')} in {v.get('PkgName')} {v.get('InstalledVersion')}")
    value = {"critical": counts["CRITICAL"], "high": counts["HIGH"]}
    over = counts["CRITICAL"] > max_critical or (max_high >= 0 and counts["HIGH"] > max_high)
    detail = (f"{counts['CRITICAL']} CRITICAL, {counts['HIGH']} HIGH"
              + (f" (e.g. {'; '.join(worst)})" if worst else ""))
    fix = ("rebuild on a newer base (`docker pull BASE`, then `jupyter ptcuda image build --base BASE`), or "
           "raise c.ImageScan.max_critical / max_high if the findings are accepted")
    if over:
        return _check("vulnerabilities", title, "fail", value, want, detail, fix)
    if counts["HIGH"] and max_high < 0:
        return _check("vulnerabilities", title, "warn", value, want, detail, fix)
    return _check("vulnerabilities", title, "pass", value, want, detail)


def _created(inspect: dict[str, Any]) -> dt.datetime | None:
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    for raw in (labels.get("org.opencontainers.image.created"), inspect.get("Created")):
        if not raw:
            continue
        text = str(raw).replace("Z", "+00:00")
        if "." in text:  # Docker's nanoseconds: fromisoformat takes at most microseconds
            head, _, tail = text.partition(".")
            frac = "".join(ch for ch in tail if ch.isdigit())
            text = f"{head}.{frac[:6]}{tail[len(frac):]}"
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return None


def base_age_check(inspect: dict[str, Any], lookup: Callable[[str], dict[str, Any] | None], *,
                   max_days: int = 30, now: dt.datetime | None = None) -> dict[str, Any]:
    """The ``base_age`` check from an image's inspect; ``lookup(ref)`` inspects another image here (None
    when absent)."""
    now = now or dt.datetime.now(dt.UTC)
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    base = labels.get(L.IMAGE_BASE) or labels.get("org.opencontainers.image.base.name") or ""
    base_info = lookup(base) if base and " " not in base else None
    source, when = ("base " + base, _created(base_info)) if base_info else ("image", _created(inspect))
    title = "Age of the image's base"
    want = f"<= {max_days} days"
    if when is None:
        return _check("base_age", title, "skip", None, want, "the image records no creation date")
    days = (now - when).total_seconds() / 86400
    detail = f"{source} created {when.date().isoformat()}, {days:.0f} days ago"
    if base and " " not in base and not base_info:
        detail += f" (its base {base!r} is not on this engine: the image's own date is used)"
    if days > max_days:
        again = base if base_info else "BASE"
        return _check("base_age", title, "warn", f"{days:.0f} days", want, detail,
                      f"rebuild on a fresh base: `docker pull {again}` then `jupyter ptcuda image build --base {again}` "
                      "(security fixes arrive in new bases)")
    return _check("base_age", title, "pass", f"{days:.0f} days", want, detail)


def scan_checks(engine: Any, image: str, settings: ImageScan, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Both checks of ``image`` on the local engine (blocking: the CLI)."""
    from ..errors import NotFound

    def lookup(ref: str) -> dict[str, Any] | None:
        try:
            return dict(engine.run_sync(lambda api: api.inspect_image(ref)))
        except NotFound:
            return None

    checks = [vulnerability_check(image, max_critical=settings.max_critical, max_high=settings.max_high,
                                  trivy=settings.trivy, timeout=settings.timeout)]
    inspect = lookup(image)
    if inspect is None:
        checks.append(_check("base_age", "Age of the image's base", "skip", None,
                             f"<= {settings.max_base_age_days} days",
                             f"{image} is not on this Docker engine (on Kubernetes the nodes pull it)",
                             f"`docker pull {image}` here, then scan again"))
    else:
        checks.append(base_age_check(inspect, lookup, max_days=settings.max_base_age_days, now=now))
    return checks


def add_checks(report: dict[str, Any], checks: list[dict[str, Any]]) -> dict[str, Any]:
    """``report`` with ``checks`` appended and its summary recomputed (what the exit code reads)."""
    report["checks"] = [*report.get("checks", []), *checks]
    report["summary"] = summarize(report["checks"])
    return report
