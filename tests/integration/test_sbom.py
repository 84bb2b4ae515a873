"""`image build` puts a CycloneDX SBOM (made by cyclonedx-py) of the result's Python environment in the
image, named by a label with its sha256, and writes a copy where --sbom says; the SBOM lists torch at the
version the image's torch label names. The build derives from the CPU test image with an empty
wheelhouse (its ipykernel is already there), so no download and no torch install."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import pytest

from jupyter_ptcuda import sbom as S
from jupyter_ptcuda.images import L_TORCH

pytestmark = pytest.mark.integration


def test_the_built_image_carries_an_sbom_that_lists_its_torch(engine, test_image, tmp_path):
    tag = f"jupyter-ptcuda-test:sbom-{uuid.uuid4().hex[:8]}"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    copy = tmp_path / "out" / "image.cdx.json"
    copy.parent.mkdir()
    try:
        done = subprocess.run([sys.executable, "-m", "jupyter_ptcuda.cli", "image", "build", "--base", test_image,
                               "--tag", tag, "--wheelhouse", str(wheels), "--sbom", str(copy), "--no-pull"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        labels = engine.run_sync(lambda api: api.inspect_image(tag))["Config"]["Labels"]
        assert labels[S.L_SBOM] == S.IMAGE_PATH
        inside = subprocess.run(["docker", "run", "--rm", "--entrypoint", "cat", tag, S.IMAGE_PATH],
                                capture_output=True, timeout=120)
        assert inside.returncode == 0, inside.stderr
        assert labels[S.L_SBOM_SHA256] == "sha256:" + hashlib.sha256(inside.stdout).hexdigest()
        assert copy.read_bytes() == inside.stdout
        document = json.loads(inside.stdout)
        assert document["bomFormat"] == "CycloneDX"
        assert {t["name"] for t in document["metadata"]["tools"]["components"]} >= {"cyclonedx-py"}
        found = S.components(document)
        assert found["torch"] == labels[L_TORCH] != ""
        assert "ipykernel" in found and "numpy" in found
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
