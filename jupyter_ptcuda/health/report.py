"""Host side of the health check: parse what ``check.py`` printed, render it, decide the exit code.

Who calls what: the health runner (it starts the container and captures its output) calls
:func:`parse_report` on the container's stdout; the CLI prints :func:`render_text` and exits
with :func:`exit_code`; the REST handler returns the parsed dict as JSON. Nothing here talks
to Docker or imports torch.

The report schema is documented in ``check.py``'s module docstring (schema 1).
"""

from __future__ import annotations

import json
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
        lines.append(f"CUDA unavailable: {cuda['reason']}")
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
