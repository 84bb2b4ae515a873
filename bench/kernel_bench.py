"""Container kernel vs local kernel, side by side: start time and execute round trip.

    python bench/kernel_bench.py [--n 5] [--cells 500] [--image jupyter-ptcuda-test:cpu] [--network bridge|host]

Starts N kernels with jupyter_client's LocalProvisioner (ipykernel in this environment) and N with
ours, alternating, and prints the medians of: start (start_kernel → kernel_info reply), the round
trip of a tiny cell (over --cells executions per kernel), restart (restart_kernel → kernel_info
reply, as JupyterLab's "Restart kernel" does) and shutdown (shutdown_kernel, the polite way), and
container/local ratios. Targets: start ≤ 1.45×, round trip ≤ 1.0×, restart and shutdown ≤ 1.0×.
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

FIELDS = ("start", "rtt", "restart", "shutdown")


async def one(kernel_name: str, cells: int, cwd: str) -> dict[str, float]:
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
    t = time.perf_counter()
    await km.restart_kernel(now=False)
    await kc.wait_for_ready(timeout=120)
    restart = time.perf_counter() - t
    await kc.execute_interactive("x = 1", timeout=30)
    kc.stop_channels()
    t = time.perf_counter()
    await km.shutdown_kernel(now=False)
    shutdown = time.perf_counter() - t
    return {"start": start, "rtt": statistics.median(rtts), "restart": restart, "shutdown": shutdown}


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
        res: dict[str, list[dict[str, float]]] = {"local": [], "container": []}
        for _ in range(args.n):
            res["local"].append(await one("bench-local", args.cells, str(cwd)))
            res["container"].append(await one("bench-container", args.cells, str(cwd)))

    if args.network == "shared":
        from jupyter_ptcuda.containers.netns import remove_holder

        from jupyter_ptcuda.containers.factory import get_service

        await remove_holder(get_service())
    med = {k: {f: statistics.median(r[f] for r in v) for f in FIELDS} for k, v in res.items()}
    print(f"{'':12}{'start (s)':>12}{'round trip (ms)':>18}{'restart (s)':>14}{'shutdown (s)':>14}"
          f"   (median of {args.n} kernels, {args.cells} cells each)")
    for k in ("local", "container"):
        m = med[k]
        print(f"{k:12}{m['start']:12.3f}{m['rtt'] * 1000:18.3f}{m['restart']:14.3f}{m['shutdown']:14.3f}")
    ratio = {f: med["container"][f] / med["local"][f] for f in FIELDS}
    transport = "ipc" if args.network == "shared" else args.transport
    print(f"{'ratio':12}{ratio['start']:11.2f}x{ratio['rtt']:17.2f}x{ratio['restart']:13.2f}x{ratio['shutdown']:13.2f}x"
          f"   (targets: start <= 1.45x, round trip <= 1.0x, restart and shutdown <= 1.0x; network={args.network}, "
          f"transport={transport})")
    if args.json:
        Path(args.json).write_text(json.dumps({"median": med, "ratio": ratio}, indent=2))

if __name__ == "__main__":
    asyncio.run(main())
