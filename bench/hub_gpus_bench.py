"""GET gpus with 20 users' servers polling: one NVML sampler in the JupyterHub broker vs one per server.

    python bench/hub_gpus_bench.py [--users 20] [--seconds 30] [--gpus 4] [--interval 2]

Needs root and ``scripts/hub-env`` (a real JupyterHub with the broker as a managed service, from
examples/jupyterhub_config.py, as tests/hub/test_broker.py starts it). ``--users`` Hub users
(``benchNN``, mapped to unprivileged uids with ``c.PtcudaBroker.user_map``: no Unix accounts needed,
since no container starts) each get a real ``jupyter server`` with the extension, and a panel: a
client on its own keep-alive connection polling ``GET jupyter-ptcuda/gpus?since=`` every
``--interval`` s (the panel's default is 2 s), as JupyterLab does. Side by side, the same servers:

- **baseline**: each server samples the (fake) NVML itself: ``--users`` samplers on one host;
- **broker**: each server's sampler asks the broker (``JUPYTER_PTCUDA_BROKER_URL`` + the user's Hub
  token, op ``gpus``, once a second, only the history since its last poll): one NVML sampler.

Printed per variant: the panels' GET gpus p50/p99/max latency, how old the newest sample a panel got
was (p50/p99: the freshness the extra hop costs), and the CPU seconds the servers (and the broker)
spent; then the ratios broker ÷ baseline (each variant's round with the lowest p99, of ``--rounds``). With the fake NVML a sample costs microseconds; on a GPU
host each NVML query costs ~0.1-1 ms per GPU, so the baseline's CPU grows with users and the broker's
does not: this bench measures what the broker costs, not what it saves on NVML.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gpus_poll_bench import SAMPLED_AT, Conn, free_port, pct  # noqa: E402
from tests.hub import harness as H  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children (/proc/<pid>/stat), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICK


def broker_pid(config_marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if " broker " in f"{cmd} " and config_marker in cmd:
                return int(entry.name)
    return None


class Server:
    """One user's ``jupyter server`` (token auth of its own; the broker is reached with the Hub token)."""

    def __init__(self, root: str, env: dict[str, str], nvml: str = "") -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}", "--allow-root",
             "--ServerApp.log_level=WARN", *([f"--PtcudaExtension.nvml={nvml}"] if nvml else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            conn = Conn(self.port, self.token)
            try:
                status, body = await conn.get("/jupyter-ptcuda/gpus")
                if status == 200 and json.loads(body)["snapshot"].get("gpus"):
                    return
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                conn.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not serve GPUs (exit {self.proc.poll()})")
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def panel(server: Server, seconds: float, interval: float, lat: list[float], age: list[float]) -> None:
    """A JupyterLab panel: the full history once, then ``?since=`` the newest sample it has."""
    conn, since = Conn(server.port, server.token), None
    stop = time.monotonic() + seconds
    await asyncio.sleep(random.random() * interval)
    try:
        while time.monotonic() < stop:
            t = time.perf_counter()
            status, body = await conn.get("/jupyter-ptcuda/gpus" + (f"?since={since}" if since else ""))
            lat.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"GET gpus: HTTP {status}: {body[:200]!r}")
            m = SAMPLED_AT.search(body)
            if m:
                since = m.group(1).decode()
                age.append(time.time() - float(since))
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t)))
    finally:
        conn.close()


async def variant(label: str, envs: list[dict[str, str]], args: argparse.Namespace, root: str,
                  broker: int | None) -> dict[str, float]:
    servers = [Server(root, env, env.get("PTCUDA_BENCH_NVML", "")) for env in envs]
    try:
        await asyncio.gather(*(s.ready() for s in servers))
        await asyncio.sleep(args.settle)  # past start-up (and the servers' GC freeze, 2 s after it)
        cpu0 = [cpu_seconds(s.proc.pid) for s in servers]
        b0 = cpu_seconds(broker) if broker else 0.0
        lat: list[float] = []
        age: list[float] = []
        await asyncio.gather(*(panel(s, args.seconds, args.interval, lat, age) for s in servers))
        cpu = sum(cpu_seconds(s.proc.pid) - c for s, c in zip(servers, cpu0, strict=True))
        bcpu = (cpu_seconds(broker) - b0) if broker else 0.0
    finally:
        for s in servers:
            s.stop()
    out = {"p50": pct(lat, .5), "p99": pct(lat, .99), "max": max(lat) * 1000, "age50": pct(age, .5),
           "age99": pct(age, .99), "cpu": cpu, "broker_cpu": bcpu, "n": len(lat)}
    print(f"{label:10}{out['n']:9d}{out['p50']:9.2f}{out['p99']:9.2f}{out['max']:9.1f}"
          f"{out['age50']:10.0f}{out['age99']:10.0f}{cpu:12.2f}{bcpu:12.2f}")
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between one panel's polls (JupyterLab: 2)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between all servers up and measuring")
    ap.add_argument("--rounds", type=int, default=2, help="baseline, broker, baseline, broker, ... (the best of each)")
    args = ap.parse_args()
    users = [f"bench{i:02d}" for i in range(args.users)]
    port = H.free_port()
    example = (Path(__file__).resolve().parents[1] / "examples" / "jupyterhub_config.py").read_text()
    user_map = {u: f"{30000 + i}:{30000 + i}" for i, u in enumerate(users)}
    extra = example.replace("http://127.0.0.1:10101", f"http://127.0.0.1:{port}") + (
        f"\nc.PtcudaBroker.nvml = 'fake:{args.gpus}'\nc.PtcudaBroker.user_map = {json.dumps(user_map)}\n")
    hub = H.start_hub(extra_config=extra, users=users)
    url = f"http://127.0.0.1:{port}"
    try:
        hub.wait_url(f"{url}/v1/whoami", timeout=30)
        bpid = broker_pid(str(hub.state))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "JUPYTER_PTCUDA_"))}
        local = [{**base, "PTCUDA_BENCH_NVML": f"fake:{args.gpus}"} for _ in users]
        brokered = [{**base, "JUPYTER_PTCUDA_BROKER_URL": url,
                     "JUPYTERHUB_API_TOKEN": hub.token(u, scopes=["access:services!service=ptcuda-broker"])}
                    for u in users]
        with tempfile.TemporaryDirectory() as root:
            print(f"{args.users} users' servers, each with a panel polling GET gpus?since= every {args.interval} s "
                  f"for {args.seconds:.0f} s, {args.gpus} fake GPUs")
            print(f"{'':10}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'age p50':>10}{'age p99':>10}"
                  f"{'servers cpu':>12}{'broker cpu':>12}")
            runs: dict[str, list[dict[str, float]]] = {"baseline": [], "broker": []}
            for _ in range(args.rounds):
                runs["baseline"].append(await variant("baseline", local, args, root, None))
                runs["broker"].append(await variant("broker", brokered, args, root, bpid))
    finally:
        H.cleanup(hub)
    print("(latency and sample age in ms; CPU in seconds over the run; baseline: one sampler per server)")
    a, b = (min(runs[k], key=lambda r: r["p99"]) for k in ("baseline", "broker"))  # each variant's best round
    print(f"broker ÷ baseline: GET gpus p50 {b['p50'] / a['p50']:.2f}x, p99 {b['p99'] / a['p99']:.2f}x; "
          f"sample age p50 {b['age50'] / a['age50']:.2f}x; CPU (servers + broker) "
          f"{(b['cpu'] + b['broker_cpu']) / max(a['cpu'], 1e-9):.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
