"""Container kernel vs local kernel, side by side: start time and execute round trip.

    python bench/kernel_bench.py [--n 5] [--cells 500] [--image jupyter-ptcuda-test:cpu] [--network bridge|host]

Starts N kernels with jupyter_client's LocalProvisioner (ipykernel in this environment) and N with
ours, alternating, and prints the median start time (start_kernel → kernel_info reply), the median
round trip of a tiny cell (over --cells executions per kernel), and container/local ratios.
Targets from the issue: start ≤ 1.25×, round trip ≤ 1.1×.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_ptcuda.kernelspec import make_kernel_json  # noqa: E402


async def one(kernel_name: str, cells: int, cwd: str) -> tuple[float, float]:
    km = AsyncKernelManager(kernel_name=kernel_name)
    t0 = time.perf_counter()
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)  # sends kernel_info_request, waits for the reply
    start = time.perf_counter() - t0
    rtts = []
    for i in range(cells):
        t = time.perf_counter()
        await kc.execute_interactive(f"x = {i}", timeout=30)
        rtts.append(time.perf_counter() - t)
    kc.stop_channels()
    await km.shutdown_kernel(now=True)
    return start, statistics.median(rtts)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    ap.add_argument("--network", default="bridge", choices=["bridge", "host", "none", "shared"])
    ap.add_argument("--transport", default="ipc", choices=["tcp", "ipc"])
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        kdir = Path(tmp) / "kernels"
        for name, spec in {
            "bench-local": {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                            "display_name": "local", "language": "python"},
            "bench-container": make_kernel_json("container", {"image": args.image, "gpus": "none",
                                                               "network_mode": args.network,
                                                               "transport": args.transport}),
        }.items():
            (kdir / name).mkdir(parents=True)
            (kdir / name / "kernel.json").write_text(json.dumps(spec))
        os.environ["JUPYTER_PATH"] = tmp
        cwd = Path(tmp) / "nb"
        cwd.mkdir()
        if os.geteuid() == 0:
            os.chown(cwd, 1000, 100)
        await one("bench-container", 5, str(cwd))  # warm the page cache for both
        await one("bench-local", 5, str(cwd))
        res: dict[str, list[tuple[float, float]]] = {"local": [], "container": []}
        for _ in range(args.n):
            res["local"].append(await one("bench-local", args.cells, str(cwd)))
            res["container"].append(await one("bench-container", args.cells, str(cwd)))

    if args.network == "shared":
        from jupyter_ptcuda.containers.netns import remove_holder
        from jupyter_ptcuda.containers.service import get_service

        await remove_holder(get_service())
    med = {k: (statistics.median(s for s, _ in v), statistics.median(r for _, r in v)) for k, v in res.items()}
    print(f"{'':12}{'start (s)':>12}{'round trip (ms)':>18}   (median of {args.n} kernels, {args.cells} cells each)")
    for k in ("local", "container"):
        print(f"{k:12}{med[k][0]:12.3f}{med[k][1] * 1000:18.3f}")
    s_ratio = med["container"][0] / med["local"][0]
    r_ratio = med["container"][1] / med["local"][1]
    print(f"{'ratio':12}{s_ratio:11.2f}x{r_ratio:17.2f}x   (targets: start <= 1.25x, round trip <= 1.1x; network={args.network}, transport={'ipc' if args.network == 'shared' else args.transport})")
    if args.json:
        Path(args.json).write_text(json.dumps({"median": med, "ratio": {"start": s_ratio, "rtt": r_ratio}}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
