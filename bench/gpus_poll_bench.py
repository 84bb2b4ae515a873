"""GET gpus under load, and event-loop stalls during a health check.

    python bench/gpus_poll_bench.py [--clients 50] [--seconds 10] [--gpus 4] [--image jupyter-ptcuda-test:cpu]
                                    [--no-gc-compare]

Starts a real Jupyter server with the extension and the fake NVML (``--gpus`` GPUs, sampled at 20 Hz so
that ``--fill`` seconds give each GPU the ~600-point history a panel gets after an hour at 1 Hz; 20 Hz
also re-encodes the response 20 times as often as a real server does), then:

1. ``--clients`` concurrent clients, each on its own keep-alive connection as a browser tab is, poll
   every ``--interval`` s (random phase): ``GET gpus`` with the full history, ``GET gpus?since=`` as the
   panel polls (full history once, then only new samples), and ``GET api/status`` on the same server as
   the baseline. p50/p99/max latency and the ratios to the baseline (goal: p99 <= 10 ms on 2 cores).
2. The same again on a server started with ``--PtcudaExtension.freeze_gc=False`` (unless
   ``--no-gc-compare``): what the garbage-collector freeze buys.
3. A probe requests ``api/status`` every 10 ms, first idle, then while a health check of ``--image``
   runs (a real container): the largest response time in each phase bounds the event-loop stall.

The clients speak HTTP/1.1 over asyncio streams: tornado's client would open a new connection per
request and spend more CPU than the server measured, on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode

SAMPLED_AT = re.compile(rb'"sampled_at": ([0-9.eE+-]+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn:
    """One keep-alive HTTP/1.1 connection with token auth (what a browser tab's fetch() reuses)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                          f"Authorization: token {self.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
        return int(lines[0].split()[1]), await self.reader.readexactly(int(headers.get(b"content-length", b"0")))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def poll(port: int, token: str, path: str, clients: int, seconds: float, interval: float,
               incremental: bool = False) -> list[float]:
    """Latencies (s) of ``clients`` clients polling ``path`` every ``interval`` s for ``seconds``.
    ``incremental``: after the first response ask only for samples ``since`` the last one seen."""
    lat: list[float] = []
    stop = time.monotonic() + seconds

    async def one() -> None:
        conn, since = Conn(port, token), None
        await asyncio.sleep(random.random() * interval)
        try:
            while time.monotonic() < stop:
                t = time.perf_counter()
                status, body = await conn.get(path + (f"?{urlencode({'since': since})}" if since else ""))
                lat.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]!r}")
                if incremental:
                    m = SAMPLED_AT.search(body)  # the snapshot's, which comes first in the body
                    since = m.group(1).decode() if m else since
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t)))
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return lat


async def probe(port: int, token: str, until: asyncio.Future) -> list[float]:
    conn, lat = Conn(port, token), []
    while not until.done():
        t = time.perf_counter()
        await conn.get("/api/status")
        lat.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)
    conn.close()
    return lat


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


class Server:
    def __init__(self, root: str, gpus: int, fill: float, *extra: str) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}", "--allow-root",
             "--PtcudaExtension.sample_interval=0.05", f"--PtcudaExtension.history_seconds={fill}",
             f"--PtcudaExtension.nvml=fake:{gpus}", "--ServerApp.log_level=WARN", *extra],
            env=os.environ,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def fill(self, seconds: float) -> int:
        """Wait for the server, start its sampler, let the history fill; the points per GPU."""
        conn = Conn(self.port, self.token)
        for _ in range(150):
            try:
                if (await conn.get("/jupyter-ptcuda/gpus"))[0] == 200:
                    break
            except OSError:  # not up yet
                conn = Conn(self.port, self.token)
                await asyncio.sleep(0.2)
        await asyncio.sleep(seconds)
        body = json.loads((await conn.get("/jupyter-ptcuda/gpus"))[1])
        conn.close()
        return len(next(iter(body["history"].values()))["t"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def measure(server: Server, args: argparse.Namespace, label: str) -> dict[str, float]:
    points = await server.fill(args.fill)
    p, t = server.port, server.token
    runs = [("GET gpus (full history)", await poll(p, t, "/jupyter-ptcuda/gpus", args.clients, args.seconds, args.interval)),
            ("GET gpus?since= (panel)", await poll(p, t, "/jupyter-ptcuda/gpus", args.clients, args.seconds,
                                                   args.interval, incremental=True)),
            ("GET api/status", await poll(p, t, "/api/status", args.clients, args.seconds, args.interval))]
    base = runs[-1][1]
    print(f"\n{label}: {args.clients} clients polling every {args.interval} s for {args.seconds:.0f} s, "
          f"{args.gpus} GPUs, {points} history points per GPU")
    print(f"{'':26}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, lat in runs:
        print(f"{name:26}{len(lat):9d}{pct(lat, .5):9.2f}{pct(lat, .99):9.2f}{max(lat) * 1000:9.1f}"
              f"{pct(lat, .5) / pct(base, .5):8.2f}{pct(lat, .99) / pct(base, .99):8.2f}"
              + ("   (baseline)" if lat is base else f"   p99 <= 10 ms: {'met' if pct(lat, .99) <= 10 else 'NOT met'}"))
    return {name: pct(lat, .99) for name, lat in runs}


async def stall_during_health_check(server: Server, image: str) -> None:
    loop = asyncio.get_running_loop()
    idle_done: asyncio.Future = loop.create_future()
    loop.call_later(5, idle_done.set_result, None)
    idle = await probe(server.port, server.token, idle_done)
    conn = Conn(server.port, server.token)
    status, body = await conn.get("/jupyter-ptcuda/health", "POST", json.dumps({"image": image, "gpus": "none"}).encode())
    if status != 201:
        raise RuntimeError(f"POST health: HTTP {status}: {body[:300]!r}")
    hid = json.loads(body)["id"]
    done: asyncio.Future = loop.create_future()

    async def watch() -> None:
        while True:
            st = json.loads((await conn.get(f"/jupyter-ptcuda/health/{hid}"))[1])
            if st["state"] != "running":
                done.set_result(st["state"])
                return
            await asyncio.sleep(0.2)

    t0 = time.perf_counter()
    busy, _ = await asyncio.gather(probe(server.port, server.token, done), watch())
    conn.close()
    print(f"\nevent-loop probe (GET api/status every 10 ms): idle max {max(idle) * 1000:.1f} ms, during the "
          f"health check ({time.perf_counter() - t0:.1f} s, {done.result()}) max {max(busy) * 1000:.1f} ms; "
          f"ratio {max(busy) / max(idle):.2f}x")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--fill", type=float, default=30, help="seconds of 20 Hz sampling before measuring (600 points)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between one client's polls")
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    ap.add_argument("--no-gc-compare", action="store_true", help="skip the server without the GC freeze")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as root:
        variants = [("default server", ())]
        if not args.no_gc_compare:
            variants.append(("freeze_gc=False", ("--PtcudaExtension.freeze_gc=False",)))
        p99 = {}
        for label, extra in variants:
            server = Server(root, args.gpus, args.fill, *extra)
            try:
                p99[label] = await measure(server, args, label)
                if label == "default server":
                    await stall_during_health_check(server, args.image)
            finally:
                server.stop()
        if len(p99) == 2:
            print("\np99, default ÷ freeze_gc=False: " + ", ".join(
                f"{name} {p99['default server'][name] / p99['freeze_gc=False'][name]:.2f}x" for name in p99["default server"]))


if __name__ == "__main__":
    asyncio.run(main())
