"""The SBOM of a kernel image's Python environment, made by CycloneDX's own tool (``cyclonedx-py
environment``, package ``cyclonedx-bom``), not by us.

``cyclonedx-py environment PYTHON`` asks ``PYTHON`` for its ``sys.path`` and reads the distributions'
metadata found there (``importlib.metadata``). The image's interpreter cannot run on the host, so
:func:`image_sbom` copies what the tool reads out of the image — every ``*.dist-info/METADATA`` and
``*.egg-info/PKG-INFO`` on the image's ``sys.path``, printed by one probe container — into a folder
that mirrors the image's paths, and hands the tool a stand-in interpreter that answers with those
paths. The components, versions, licences and PURLs are the tool's.

Callers: :func:`jupyter_ptcuda.images.build_image` (the ``sbom`` step: the file goes into the image at
:data:`IMAGE_PATH`, named by label :data:`L_SBOM`, with its sha256 in :data:`L_SBOM_SHA256`, and a copy
is written next to the build).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .containers import labels as L
from .containers.base import ContainerService
from .containers.spec import ContainerSpec
from .errors import PtcudaError

#: Where ``image build`` puts the SBOM inside the image, and the labels that point at it.
IMAGE_PATH = "/usr/share/jupyter-ptcuda/sbom.cdx.json"
L_SBOM = L.PREFIX + "image.sbom"
L_SBOM_SHA256 = L.PREFIX + "image.sbom.sha256"
INSTALL_HINT = "`pip install cyclonedx-bom` in jupyter-ptcuda's environment (a dependency of it)"

#: Run in the image: its sys.path and the metadata files of every distribution on it.
METADATA_PROBE = (
    "import json, os, sys\n"
    "paths = [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p)]\n"
    "files = {}\n"
    "for p in paths:\n"
    " for name in sorted(os.listdir(p)):\n"
    "  for meta in ('METADATA', 'PKG-INFO'):\n"
    "   f = os.path.join(p, name, meta)\n"
    "   if name.endswith(('.dist-info', '.egg-info')) and os.path.isfile(f):\n"
    "    with open(f, encoding='utf-8', errors='replace') as fh: files[f] = fh.read()\n"
    "print('PTCUDA-METADATA ' + json.dumps({'path': paths, 'files': files}))\n"
)


class SbomError(PtcudaError):
    """The SBOM could not be made (no cyclonedx-py, or the tool failed); the message says what to do."""


def cyclonedx_command() -> list[str]:
    """How to run cyclonedx-py here: the console script, else ``python -m cyclonedx_py``; SbomError if absent."""
    exe = shutil.which("cyclonedx-py") or str(Path(sys.executable).with_name("cyclonedx-py"))
    if os.access(exe, os.X_OK):
        return [exe]
    try:
        import cyclonedx_py  # noqa: F401
    except ImportError:
        raise SbomError(f"no SBOM tool: cyclonedx-py is not installed; {INSTALL_HINT}.") from None
    return [sys.executable, "-m", "cyclonedx_py"]


async def image_metadata(service: ContainerService, probe: ContainerSpec) -> dict[str, Any]:
    """``{"path": [...], "files": {path: text}}`` from one probe container (``probe``: the image's probe spec
    running :data:`METADATA_PROBE`, made by the caller: :func:`jupyter_ptcuda.images.probe_spec`)."""
    image = probe.image
    code, out, _ = await service.run_once(probe, timeout=300)
    for line in out.splitlines():
        if line.startswith("PTCUDA-METADATA "):
            data: dict[str, Any] = json.loads(line[len("PTCUDA-METADATA ") :])
            return data
    raise SbomError(f"image {image!r} did not list its Python distributions (exit code {code}): {out.strip()[-300:]}")


def sbom_from_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Run ``cyclonedx-py environment`` over the copied metadata; the CycloneDX JSON document."""
    cmd = cyclonedx_command()
    with tempfile.TemporaryDirectory(prefix="ptcuda-sbom-") as tmp:
        root = Path(tmp) / "root"
        for path, text in metadata["files"].items():
            target = root / path.lstrip("/")
            if ".." in Path(path).parts:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        paths = [str(root / p.lstrip("/")) for p in metadata["path"]]
        shim = Path(tmp) / "python"  # cyclonedx-py runs it as `python [-S] -c ...` for sys.path
        shim.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(json.dumps(paths))}\n")
        shim.chmod(0o755)
        done = subprocess.run([*cmd, "environment", "--of", "JSON", "-o", "-", "--output-reproducible", str(shim)],
                              capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SbomError(f"cyclonedx-py failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def image_sbom(service: ContainerService, probe: ContainerSpec) -> dict[str, Any]:
    """The CycloneDX SBOM of the Python environment of ``probe``'s image (blocking: the build)."""
    cyclonedx_command()  # say the tool is missing before starting a container
    return sbom_from_metadata(asyncio.run(image_metadata(service, probe)))


def dumps(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def components(document: dict[str, Any]) -> dict[str, str]:
    """``{name (lower case): version}`` of the document's components."""
    return {str(c.get("name", "")).lower(): str(c.get("version", "")) for c in document.get("components") or []}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
