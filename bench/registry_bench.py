"""Push and pull through a loopback registry: time and bytes, cold vs with the base layers already there.

    python bench/registry_bench.py [--image jupyter-ptcuda/pytorch-kernel:latest] [--cold-pull]

Starts Debian's docker-registry on loopback with a login (tests/registry.py; as root it installs the
package when missing), then through jupyter-ptcuda's own push/pull (the engine seam):

- **push cold**: IMAGE to an empty registry;
- **push warm**: IMAGE plus one small new layer (what a rebuild on the same base is): only that layer moves;
- **pull warm**: that derived image removed here, pulled back while IMAGE's layers are present;
- **pull cold** (``--cold-pull``): IMAGE removed from this engine (every tag) and pulled back from the
  registry (the same image id returns; its tags are put back) — leave it out on a shared engine. Layers
  another local image shares stay, and are counted as "already there".

Bytes are what the engine reported for the layers it sent or fetched (compressed sizes) and the growth of
the registry's storage. It prints each row and the ratios warm/cold. The issue's numbers are for the
6 GB default image (``--image jupyter-ptcuda/pytorch-kernel:latest``); any image works.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_ptcuda.containers.engine import get_engine  # noqa: E402
from jupyter_ptcuda.images import _docker_build  # noqa: E402
from jupyter_ptcuda.registry import Progress, push_image  # noqa: E402
from tests.registry import start_registry  # noqa: E402


def store_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in (root / "store").rglob("*") if f.is_file())


def push(engine, ref: str, reg_root: Path) -> dict:
    before, t0 = store_bytes(reg_root), time.monotonic()
    progress = Progress(ref, out=io.StringIO(), tty=False)
    engine.push_sync(ref, progress)
    seconds = time.monotonic() - t0
    reused = sum(s == "Layer already exists" for s in progress.state.values())
    return {"seconds": seconds, "sent": progress.totals[1], "stored": store_bytes(reg_root) - before,
            "layers": len(progress.state), "reused": reused}


def pull(engine, ref: str) -> dict:
    t0 = time.monotonic()
    progress = Progress(ref, verb="pulling", out=io.StringIO(), tty=False)
    engine.pull_sync(ref, progress)
    reused = sum(s == "Already exists" for s in progress.state.values())
    return {"seconds": time.monotonic() - t0, "sent": progress.totals[1], "stored": 0,
            "layers": len(progress.state), "reused": reused}


def row(name: str, r: dict) -> None:
    print(f"{name:10} {r['seconds']:9.1f} s {r['sent'] / 1e6:11.1f} MB {r['stored'] / 1e6:11.1f} MB "
          f"{r['layers']:5d} layers ({r['reused']} already there)", flush=True)


def ratio(warm: dict, cold: dict) -> str:
    if not cold["sent"]:
        return "n/a: the cold run moved no layer (every layer was already there: another image here shares them)"
    return f"time x{warm['seconds'] / cold['seconds']:.3f}, bytes x{warm['sent'] / cold['sent']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    ap.add_argument("--cold-pull", action="store_true", help="also remove IMAGE here and pull it back (see above)")
    args = ap.parse_args()
    engine = get_engine()
    info = engine.run_sync(lambda api: api.inspect_image(args.image))
    print(f"image {args.image}: {info['Size'] / 1e9:.2f} GB, {len(info['RootFS']['Layers'])} layers", flush=True)
    with tempfile.TemporaryDirectory(prefix="ptcuda-regbench-") as tmp:
        reg, proc = start_registry(Path(tmp) / "registry")
        os.environ["DOCKER_CONFIG"] = str(reg.docker_config(Path(tmp) / "docker"))
        base_ref, warm_ref = f"{reg.host}/bench/kernel:base", f"{reg.host}/bench/kernel:rebuilt"
        try:
            engine.run_sync(lambda api: api.tag(args.image, f"{reg.host}/bench/kernel", "base"))
            _docker_build(engine, f"FROM {args.image}\nCOPY marker /opt/ptcuda-bench-marker\n", warm_ref, "bench",
                          lambda line: None, {"marker": os.urandom(1 << 20)})
            print(f"{'':10} {'time':>11} {'layer bytes':>14} {'registry +':>14}  (layer bytes: the engine's "
                  "progress totals; registry +: compressed blobs stored)")
            cold = push(engine, base_ref, reg.root)
            row("push cold", cold)
            warm = push(engine, warm_ref, reg.root)
            row("push warm", warm)
            print(f"push: {ratio(warm, cold)} (warm / cold)")
            push_image(engine, warm_ref, out=io.StringIO())  # nothing new: the registry has it all
            engine.run_sync(lambda api: api.remove_image(warm_ref))
            warm_pull = pull(engine, warm_ref)
            row("pull warm", warm_pull)
            if args.cold_pull:
                tags = info.get("RepoTags") or []
                # the derived image pulled back just now holds IMAGE's layers: without removing it first the
                # "cold" pull finds them all here and moves nothing
                engine.run_sync(lambda api: api.remove_image(warm_ref))
                subprocess.run(["docker", "rmi", "-f", info["Id"]], check=True, capture_output=True)
                cold_pull = pull(engine, base_ref)
                for t in tags:
                    repo, _, tag = t.rpartition(":")
                    engine.run_sync(lambda api, repo=repo, tag=tag: api.tag(base_ref, repo, tag))
                row("pull cold", cold_pull)
                print(f"pull: {ratio(warm_pull, cold_pull)} (warm / cold)")
        finally:
            for ref in (warm_ref, base_ref):
                subprocess.run(["docker", "rmi", ref], capture_output=True)
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
