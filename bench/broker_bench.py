"""Container kernels through the JupyterHub broker vs in-process, side by side (target: start <= +0.1 s).

    python bench/broker_bench.py [--n 5] [--cells 100] [--image jupyter-ptcuda-test:cpu]

Needs root and ``scripts/hub-env`` (a real JupyterHub with the broker as a managed service, from
examples/jupyterhub_config.py, as tests/hub/test_broker.py starts it). In this process, alternating,
N kernels start with the in-process container service (this host's engine) and N through the broker
(``JUPYTER_PTCUDA_BROKER_URL`` + a Hub token of user ptcuda-alice), all in alice's home; it prints the
medians of start (start_kernel -> kernel_info reply), the round trip of a tiny cell, restart and shutdown,
and the differences broker - in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.kernel_bench import FIELDS, one  # noqa: E402
from jupyter_ptcuda.containers import factory as S  # noqa: E402
from jupyter_ptcuda.kernelspec import make_kernel_json  # noqa: E402
from tests.hub import harness as H  # noqa: E402


def use(broker: str | None, token: str) -> None:
    """Switch the process-wide container service: through the broker, or this host's engine."""
    if broker:
        os.environ.update(JUPYTER_PTCUDA_BROKER_URL=broker, JUPYTERHUB_API_TOKEN=token)
    else:
        os.environ.pop("JUPYTER_PTCUDA_BROKER_URL", None)
    S._service = None


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    args = ap.parse_args()
    port = H.free_port()
    example = (Path(__file__).resolve().parents[1] / "examples" / "jupyterhub_config.py").read_text()
    extra = example.replace("http://127.0.0.1:10101", f"http://127.0.0.1:{port}") + \
        f"\nc.PtcudaBroker.images = [{args.image.split(':')[0] + ':*'!r}]\n"
    hub = H.start_hub(extra_config=extra)
    url = f"http://127.0.0.1:{port}"
    try:
        hub.wait_url(f"{url}/v1/whoami", timeout=30)
        token = hub.token(H.USERS[0], scopes=["access:services!service=ptcuda-broker"])
        cwd = hub.account(H.USERS[0]).pw_dir
        with tempfile.TemporaryDirectory() as tmp:
            kdir = Path(tmp) / "kernels" / "bench-container"
            kdir.mkdir(parents=True)
            kdir.joinpath("kernel.json").write_text(json.dumps(make_kernel_json("container", {"image": args.image, "gpus": "none"})))
            os.environ["JUPYTER_PATH"] = tmp
            res: dict[str, list[dict[str, float]]] = {"in-process": [], "broker": []}
            for mode in res:  # warm both
                use(url if mode == "broker" else None, token)
                await one("bench-container", 5, cwd)
            for _ in range(args.n):
                for mode in res:
                    use(url if mode == "broker" else None, token)
                    res[mode].append(await one("bench-container", args.cells, cwd))
    finally:
        H.cleanup(hub)
    med = {k: {f: statistics.median(r[f] for r in v) for f in FIELDS} for k, v in res.items()}
    print(f"{'':12}{'start (s)':>12}{'round trip (ms)':>18}{'restart (s)':>14}{'shutdown (s)':>14}"
          f"   (median of {args.n} kernels, {args.cells} cells each)")
    for k in res:
        m = med[k]
        print(f"{k:12}{m['start']:12.3f}{m['rtt'] * 1000:18.3f}{m['restart']:14.3f}{m['shutdown']:14.3f}")
    d = {f: med["broker"][f] - med["in-process"][f] for f in FIELDS}
    print(f"{'broker - in':12}{d['start']:+12.3f}{d['rtt'] * 1000:+18.3f}{d['restart']:+14.3f}{d['shutdown']:+14.3f}"
          f"   ratio start {med['broker']['start'] / med['in-process']['start']:.2f}x (target: start <= +0.1 s)")


if __name__ == "__main__":
    asyncio.run(main())
