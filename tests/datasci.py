"""The data-science test image: the CPU test image plus ``--preset datasci`` (matplotlib, pandas,
scikit-learn, tqdm, ipywidgets; torchvision is left out for the test image's +cpu torch, as no +cpu
torchvision wheel is reachable here). Built once, by the first test that needs it, when absent: about 45 s
on the CI machine (wheels from the host's index, one pip install layer). Used by the figure and import
check tests, through a session fixture ``datasci_image`` in each module that calls :func:`ensure_datasci_image`."""

from __future__ import annotations

import os
import subprocess
import time

DATASCI_IMAGE = os.environ.get("JUPYTER_PTCUDA_DATASCI_IMAGE", "jupyter-ptcuda-test:datasci")


def present(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def ensure_datasci_image(engine, base: str) -> str:
    """``jupyter ptcuda image build --base <base> --preset datasci --tag jupyter-ptcuda-test:datasci``,
    unless it exists (each test module's session fixture ``datasci_image`` calls this)."""
    if not present(DATASCI_IMAGE):
        from jupyter_ptcuda.images import build_image

        lines: list[str] = []
        start = time.monotonic()
        try:
            build_image(engine, base=base, preset="datasci", tag=DATASCI_IMAGE, progress=lines.append)
        except Exception:
            print("\n".join(lines[-60:]))
            raise
        print(f"built {DATASCI_IMAGE} in {time.monotonic() - start:.0f} s")
    return DATASCI_IMAGE


def containers_created(engine, since: float) -> list[str]:
    """The kinds (label io.jupyter-ptcuda.kind) of the containers created on the engine since ``since``."""
    until = time.time() + 1
    events = engine.run_sync(lambda api: list(api.events(since=int(since) - 1, until=int(until) + 1, decode=True,
                                                         filters={"type": "container", "event": "create"})))
    return [(e.get("Actor") or {}).get("Attributes", {}).get("io.jupyter-ptcuda.kind", "?") for e in events
            if e.get("time", 0) >= int(since)]
