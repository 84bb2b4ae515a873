"""GET gpus under load, and event-loop stalls during a health check.

    python bench/gpus_poll_bench.py [--clients 50] [--seconds 10] [--gpus 4] [--image jupyter-ptcuda-test:cpu]

Starts a real Jupyter server with the extension and the fake NVML (``--gpus`` GPUs, history filled at
20 Hz), then:
1. ``--clients`` concurrent clients poll ``GET /jupyter-ptcuda/gpus`` for ``--seconds``: p50/p99 latency
   (goal: p99 <= 10 ms on a 2-core machine; clients poll every ``--interval`` s like the panel) beside ``GET /api/status`` under the same load (baseline);
2. a probe requests ``/api/status`` every 10 ms, first idle, then while a health check of ``--image`` runs
   (a real container): the largest response time in each phase, and their ratio, bound the event-loop
   stall the health check causes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def poll(url: str, token: str, clients: int, seconds: float, interval: float,
               incremental: bool = False) -> list[float]:
    """Each client polls every ``interval`` s (random phase), as a panel does; 0 = back to back.
    ``incremental``: after the first full response, ask only for samples ``since`` the last one seen
    (what the labextension's model does)."""
    import random
    import urllib.parse

    http = AsyncHTTPClient(max_clients=clients)
    lat: list[float] = []
    stop = time.monotonic() + seconds

    async def one() -> None:
        since = None
        await asyncio.sleep(random.random() * interval)
        while time.monotonic() < stop:
            target = url + (f"?{urllib.parse.urlencode({'since': since})}" if since else "")
            t = time.perf_counter()
            r = await http.fetch(HTTPRequest(target, headers={"Authorization": f"token {token}"}))
            lat.append(time.perf_counter() - t)
            if incremental:
                since = json.loads(r.body)["snapshot"].get("sampled_at") or since
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t)))

    await asyncio.gather(*(one() for _ in range(clients)))
    return lat


async def probe(base: str, token: str, until: asyncio.Future) -> list[float]:
    http = AsyncHTTPClient()
    lat = []
    while not until.done():
        t = time.perf_counter()
        await http.fetch(HTTPRequest(base + "api/status", headers={"Authorization": f"token {token}"}))
        lat.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)
    return lat


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--fill", type=float, default=30, help="seconds of 20 Hz sampling before measuring (600 points)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between one client's polls (0: back to back)")
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    args = ap.parse_args()

    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "JUPYTER_PTCUDA_FAKE_NVML": str(args.gpus)}
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
             "--PtcudaExtension.sample_interval=0.05", f"--PtcudaExtension.history_seconds={args.fill}",
             "--ServerApp.log_level=WARN"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            http = AsyncHTTPClient()
            hdr = {"Authorization": f"token {token}"}
            for _ in range(100):
                try:
                    await http.fetch(HTTPRequest(base + "jupyter-ptcuda/gpus", headers=hdr))
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    await asyncio.sleep(0.2)
            await asyncio.sleep(args.fill)  # a full history: the response a panel gets after an hour at 1 Hz
            body = json.loads((await http.fetch(HTTPRequest(base + "jupyter-ptcuda/gpus", headers=hdr))).body)
            points = len(next(iter(body["history"].values()))["t"])

            gl = await poll(base + "jupyter-ptcuda/gpus", token, args.clients, args.seconds, args.interval)
            il = await poll(base + "jupyter-ptcuda/gpus", token, args.clients, args.seconds, args.interval,
                            incremental=True)
            sl = await poll(base + "api/status", token, args.clients, args.seconds, args.interval)
            print(f"{args.clients} clients polling every {args.interval} s for {args.seconds:.0f} s, {args.gpus} GPUs, "
                  f"{points} history points per GPU")
            print(f"{'':26}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}")
            print(f"{'GET gpus (full history)':26}{len(gl):9d}{pct(gl, .5):9.2f}{pct(gl, .99):9.2f}")
            print(f"{'GET gpus?since= (panel)':26}{len(il):9d}{pct(il, .5):9.2f}{pct(il, .99):9.2f}")
            print(f"{'GET api/status':26}{len(sl):9d}{pct(sl, .5):9.2f}{pct(sl, .99):9.2f}   (baseline)")
            for name, lat in (("full", gl), ("panel", il)):
                print(f"ratio {name}/status: p50 {pct(lat, .5) / pct(sl, .5):.2f}x, p99 {pct(lat, .99) / pct(sl, .99):.2f}x "
                      f"(goal p99 <= 10 ms: {'met' if pct(lat, .99) <= 10 else 'NOT met'})")

            idle_done: asyncio.Future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(5, idle_done.set_result, None)
            idle = await probe(base, token, idle_done)
            r = await http.fetch(HTTPRequest(base + "jupyter-ptcuda/health", method="POST", headers=hdr,
                                             body=json.dumps({"image": args.image, "gpus": "none"})))
            hid = json.loads(r.body)["id"]
            done: asyncio.Future = asyncio.get_running_loop().create_future()

            async def watch() -> None:
                while True:
                    st = json.loads((await http.fetch(HTTPRequest(base + f"jupyter-ptcuda/health/{hid}", headers=hdr))).body)
                    if st["state"] != "running":
                        done.set_result(st["state"])
                        return
                    await asyncio.sleep(0.2)

            t0 = time.perf_counter()
            busy, _ = await asyncio.gather(probe(base, token, done), watch())
            print(f"\nevent-loop probe (GET api/status every 10 ms): idle max {max(idle) * 1000:.1f} ms, during the "
                  f"health check ({time.perf_counter() - t0:.1f} s, {done.result()}) max {max(busy) * 1000:.1f} ms; "
                  f"ratio {max(busy) / max(idle):.2f}x")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
