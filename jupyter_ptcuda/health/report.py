"""Host side of the health check: parse what ``check.py`` printed, render it, decide the exit code.

Who calls what: the health runner (it starts the container and captures its output) calls
:func:`parse_report` on the container's stdout; the CLI prints :func:`render_text` and exits
with :func:`exit_code`, and ``--junit FILE`` writes :func:`render_junit` (or, when the check
could not run, :func:`render_junit_error`) with :func:`write_junit`; the REST handler returns
the parsed dict as JSON. Nothing here talks to Docker or imports torch.

The report schema is documented in ``check.py``'s module docstring (schema 1).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Any

from ..errors import PtcudaError

SCHEMA = 1
STATUSES = ("pass", "warn", "fail", "skip")
SUMMARIES = ("pass", "warn", "fail")
CHECK_KEYS = ("id", "title", "status", "value", "threshold", "remediation", "detail")

_SYMBOLS = {"pass": "✓", "warn": "!", "fail": "✗", "skip": "·"}
_ASCII_SYMBOLS = {"pass": "ok", "warn": "!!", "fail": "XX", "skip": "--"}
_COLORS = {"pass": "\033[32m", "warn": "\033[33m", "fail": "\033[31m", "skip": "\033[2m"}
_RESET = "\033[0m"


class HealthReportError(PtcudaError):
    """The container did not print a usable health report (no JSON, wrong shape, newer schema).

    ``details["output_tail"]`` holds the last lines it printed.
    """

    status = 502


def _tail(text: str | None, lines: int = 12, width: int = 300) -> str:
    rows = [row[:width] for row in (text or "").rstrip().splitlines()[-lines:]]
    return "\n".join("    " + row for row in rows) if rows else "    (nothing)"


def parse_report(stdout: str, stderr: str | None = None) -> dict[str, Any]:
    """The report in ``stdout``, validated; raises :class:`HealthReportError` otherwise.

    The report is the last ``{"schema": ...}`` JSON object in the output, so banners an image's
    entrypoint prints first (the NVIDIA CUDA images print one) do not matter. The error message
    quotes the last lines of stdout (and of ``stderr`` when given), e.g. a Python traceback or
    ``python: not found``.
    """
    start = stdout.rfind('{"schema"')
    try:
        if start < 0:
            start = stdout.index("{")
        report, _ = json.JSONDecoder().raw_decode(stdout[start:])
    except ValueError:
        tail = _tail(stdout) + ("\n  stderr:\n" + _tail(stderr) if stderr else "")
        raise HealthReportError(
            "the container did not print a health report (one JSON line from check.py); is python "
            "in the image on PATH? Last lines of its output:\n" + tail,
            output_tail=tail,
        ) from None
    problem = _shape_problem(report)
    if problem:
        raise HealthReportError(f"the health report is malformed: {problem}", output_tail=_tail(stdout))
    return report


def _shape_problem(report: Any) -> str | None:
    if not isinstance(report, dict):
        return f"expected a JSON object, got {type(report).__name__}"
    schema = report.get("schema")
    if not isinstance(schema, int):
        return "no integer 'schema'"
    if schema > SCHEMA:
        return f"schema {schema} is newer than this jupyter-ptcuda understands ({SCHEMA}): upgrade jupyter-ptcuda"
    if report.get("summary") not in SUMMARIES:
        return f"'summary' is {report.get('summary')!r}, expected one of {', '.join(SUMMARIES)}"
    checks = report.get("checks")
    if not isinstance(checks, list) or not checks:
        return "'checks' is not a non-empty list"
    for i, check in enumerate(checks):
        if not isinstance(check, dict):
            return f"checks[{i}] is not an object"
        missing = [k for k in CHECK_KEYS if k not in check]
        if missing:
            return f"checks[{i}] lacks {', '.join(missing)}"
        if not isinstance(check["id"], str) or not isinstance(check["title"], str):
            return f"checks[{i}] has a non-string id or title"
        if check["status"] not in STATUSES:
            return f"checks[{i}] ({check['id']}) has status {check['status']!r}"
    for key in ("versions", "env"):
        if not isinstance(report.get(key), dict):
            return f"'{key}' is not an object"
    expected = summarize(checks)
    if report["summary"] != expected:
        return f"'summary' is {report['summary']!r} but the checks say {expected!r}"
    return None


def summarize(checks: list[dict[str, Any]]) -> str:
    """fail if any check fails, else warn if any warns, else pass (skips do not count)."""
    statuses = {c.get("status") for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def exit_code(report: dict[str, Any]) -> int:
    """1 when any check failed, else 0 (warnings do not fail the CLI)."""
    return 1 if any(c.get("status") == "fail" for c in report.get("checks", [])) else 0


def _text(value: Any, width: int) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_text(report: dict[str, Any], *, unicode: bool = True, color: bool = False) -> str:
    """A readable table for the CLI: status, title, value, threshold; then what to do.

    Warnings and failures get their detail and remediation under the row; skipped checks are
    grouped by reason after the table. ``unicode=False`` for terminals that cannot print
    ✓/✗; ``color=True`` for ANSI colours.
    """
    symbols = _SYMBOLS if unicode else _ASCII_SYMBOLS
    ellipsis = "…" if unicode else "..."

    def paint(status: str, text: str) -> str:
        return f"{_COLORS[status]}{text}{_RESET}" if color else text

    versions = report.get("versions", {})
    labels = {"torch": "torch", "cuda_runtime": "CUDA", "driver": "driver"}
    facts = [f"{label} {versions[k]}" for k, label in labels.items() if versions.get(k)]
    gpus = report.get("gpus") or []
    if gpus:
        facts.append(f"{len(gpus)} GPU: " + ", ".join(str(g.get("name")) for g in gpus))
    summary = str(report.get("summary", "?"))
    lines = [paint(summary if summary in _COLORS else "skip", f"Health check: {summary.upper()}")
             + (f"  ({'; '.join(facts)})" if facts else "")]
    cuda = report.get("cuda") or {}
    if cuda.get("available") is False and cuda.get("reason"):
        lines.append(f"{'No GPU' if cuda.get('chosen') else 'CUDA unavailable'}: {cuda['reason']}")
    lines.append("")

    checks = report.get("checks", [])
    shown = [c for c in checks if c["status"] != "skip"]
    title_w = min(44, max([len(c["title"]) for c in shown] + [5]))
    value_w = 40
    for check in shown:
        status = check["status"]
        value = _text(check.get("value"), value_w).replace("…", ellipsis)
        threshold = _text(check.get("threshold"), 50).replace("…", ellipsis)
        row = f"{paint(status, symbols[status].ljust(2))} {check['title'][:title_w].ljust(title_w)}  {value.ljust(value_w)}"
        if threshold and status != "pass":
            row += f"  (want {threshold})"
        lines.append(row.rstrip())
        if status in ("warn", "fail"):
            if check.get("detail"):
                lines.append(f"     why: {check['detail']}")
            if check.get("remediation"):
                lines.append(f"     fix: {check['remediation']}")

    skipped: dict[str, list[str]] = {}
    for check in checks:
        if check["status"] == "skip":
            skipped.setdefault(str(check.get("detail") or "no reason given"), []).append(check["title"])
    if skipped:
        lines.append("")
        lines.append(paint("skip", "Skipped:"))
        for reason, titles in skipped.items():
            lines.append(paint("skip", f"{symbols['skip']} {', '.join(titles)}: {reason}"))
    return "\n".join(lines) + "\n"


# -- JUnit XML (``jupyter ptcuda health --junit FILE``), for CI systems that display test reports --
JUNIT_CLASSNAME = "jupyter_ptcuda.health"
# Characters XML 1.0 cannot carry (ANSI escapes, NUL...) would make the whole file unreadable.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _NOT_XML.sub("?", text)


def junit_suite_name(target: dict[str, Any] | None) -> str:
    """``jupyter ptcuda health <what was checked>``: the image (and its GPUs) or the kernel."""
    target = target or {}
    if target.get("kernel_id"):
        what = f"kernel {target['kernel_id']}"
    elif target.get("image"):
        what = f"image {target['image']}" + (f" (gpus {target['gpus']})" if target.get("gpus") else "")
    else:
        what = "container"
    return f"jupyter ptcuda health {what}"


def _case_text(check: dict[str, Any]) -> str:
    why = "why" if check["status"] in ("fail", "warn") else "detail"
    rows = [("value", check.get("value")), ("want", check.get("threshold")),
            (why, check.get("detail")), ("fix", check.get("remediation"))]
    return "\n".join(f"{k}: {_xml_text(v)}" for k, v in rows if v not in (None, ""))


def _suites(suite: ET.Element, *, tests: int, failures: int, errors: int, skipped: int,
            seconds: float, timestamp: float | None) -> ET.Element:
    counts = {"tests": str(tests), "failures": str(failures), "errors": str(errors), "skipped": str(skipped),
              "time": f"{seconds:.3f}"}
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() if timestamp is None else timestamp))
    suite.attrib.update({**counts, "timestamp": when, "hostname": _xml_text(socket.gethostname())})
    root = ET.Element("testsuites", {"name": "jupyter ptcuda health", **counts})
    root.append(suite)
    return root


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def render_junit(report: dict[str, Any], *, timestamp: float | None = None) -> str:
    """The report as JUnit XML: one ``<testcase>`` per check, in the report's order.

    ``fail`` → ``<failure message=detail>`` whose text gives value, wanted threshold, why and fix;
    ``skip`` → ``<skipped message=reason>``; ``warn`` → passed (a warning does not fail the gate,
    as :func:`exit_code` says) with ``<system-out>`` starting ``WARNING:``; ``pass`` → passed with
    the value in ``<system-out>``. Test names are ``<id>: <title>`` (both fixed per check, so CI
    history tracks them), classname ``jupyter_ptcuda.health``; the suite is named after what was
    checked, carries versions and GPUs as ``<properties>`` and the report's notes as its output.
    Checks are not timed one by one: each case has ``time="0"``, the suite the whole duration.
    """
    checks = report.get("checks", [])
    suite = ET.Element("testsuite", {"name": _xml_text(junit_suite_name(report.get("target")))})
    props = ET.SubElement(suite, "properties")
    facts: dict[str, Any] = {"summary": report.get("summary")}
    facts.update({k: v for k, v in (report.get("versions") or {}).items() if v})
    for gpu in report.get("gpus") or []:
        facts[f"gpu{gpu.get('index')}"] = f"{gpu.get('name')} (compute capability {gpu.get('capability')})"
    cuda = report.get("cuda") or {}
    if cuda.get("reason_code"):
        facts["cuda_unavailable"] = f"{cuda['reason_code']}: {cuda.get('reason')}"
    for name, value in facts.items():
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(value)})
    for check in checks:
        case = ET.SubElement(suite, "testcase", {"classname": JUNIT_CLASSNAME, "time": "0",
                                                 "name": _xml_text(f"{check['id']}: {check['title']}")})
        status, text = check["status"], _case_text(check)
        if status == "fail":
            message = check.get("detail") or f"{check['title']}: {_xml_text(check.get('value'))}"
            ET.SubElement(case, "failure", {"message": _xml_text(message), "type": "HealthCheckFailed"}).text = text
        elif status == "skip":
            ET.SubElement(case, "skipped", {"message": _xml_text(check.get("detail") or "skipped")})
        elif text:
            ET.SubElement(case, "system-out").text = ("WARNING: " if status == "warn" else "") + text
    notes = [_xml_text(n) for n in report.get("notes") or []]
    if notes:
        ET.SubElement(suite, "system-out").text = "\n".join(notes)
    root = _suites(suite, tests=len(checks), failures=sum(c["status"] == "fail" for c in checks), errors=0,
                   skipped=sum(c["status"] == "skip" for c in checks),
                   seconds=float(report.get("duration_s") or 0), timestamp=timestamp)
    return _xml(root)


def render_junit_error(message: str, target: dict[str, Any] | None = None, *,
                       timestamp: float | None = None) -> str:
    """JUnit XML for a check that could not run (engine down, image missing, no report): one testcase
    ``health_check`` with an ``<error>`` carrying the message, so CI shows why the gate failed."""
    suite = ET.Element("testsuite", {"name": _xml_text(junit_suite_name(target))})
    case = ET.SubElement(suite, "testcase", {"classname": JUNIT_CLASSNAME, "time": "0",
                                             "name": "health_check: the health check ran"})
    first = message.strip().splitlines()[0] if message.strip() else "the health check did not run"
    ET.SubElement(case, "error", {"message": _xml_text(first), "type": "HealthCheckError"}).text = _xml_text(message)
    return _xml(_suites(suite, tests=1, failures=0, errors=1, skipped=0, seconds=0, timestamp=timestamp))


def write_junit(path: str, xml_text: str) -> None:
    """Write ``xml_text`` to ``path`` (folders made as needed) atomically: a CI step never reads half a
    file. Raises :class:`PtcudaError` naming the path when it cannot be written."""
    target = os.path.abspath(path)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".junit-", suffix=".xml", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(xml_text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise PtcudaError(f"cannot write the JUnit report to {path}: {exc.strerror or exc}") from None
