"""GPU health check of a PyTorch-CUDA image or kernel container.

- ``check.py`` runs INSIDE the container (standard library + torch + optional pynvml) and
  prints one JSON report; the runner sends it the text of :data:`CHECK_SCRIPT`
  (``python - [--perf] < check.py``). It must stay a single self-contained file.
- :mod:`.report` parses, validates and renders that report on the host.
- ``min_driver.json`` is the documented source of the CUDA-toolkit → minimum-driver table
  (NVIDIA's release notes); ``check.py`` embeds a copy and a unit test keeps both equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .report import HealthReportError, exit_code, parse_report, render_text

CHECK_SCRIPT = Path(__file__).with_name("check.py")
MIN_DRIVER_TABLE = Path(__file__).with_name("min_driver.json")


def check_script_source() -> str:
    """The text of ``check.py``, to pipe into ``python -`` in a container."""
    return CHECK_SCRIPT.read_text(encoding="utf-8")


def load_min_driver_table() -> dict[str, Any]:
    """``min_driver.json``: ``{"source", "minor_version_compatibility", "toolkits": [...]}``."""
    data: dict[str, Any] = json.loads(MIN_DRIVER_TABLE.read_text(encoding="utf-8"))
    return data


__all__ = [
    "CHECK_SCRIPT",
    "MIN_DRIVER_TABLE",
    "HealthReportError",
    "check_script_source",
    "exit_code",
    "load_min_driver_table",
    "parse_report",
    "render_text",
]
