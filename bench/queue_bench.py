"""The GPU queue: dispatch latency and scheduler decision time (targets: p99 <= 1 s, <= 10 ms).

    python bench/queue_bench.py [--handoffs 50] [--engine 10] [--image jupyter-ptcuda-test:cpu]

1. **Dispatch latency** — a GPU freed -> the next queued job's container started, over ``--handoffs``
   hand-offs: two GPUs, two running 1-GPU jobs and a line of queued ones; each time a running job's
   container exits, the time until the first queued job's container is launched. The whole path is real
   (job watcher -> finalise -> remove -> the allocation layer's queue -> launch) over the in-memory backend
   (tests/fakes/backend.py), with the server's default settings. With ``--engine N`` the same on the real
   engine (stand-in NVIDIA hook, fake NVML with two GPUs, the CPU test image), from the engine's own times:
   the previous job's container ``FinishedAt`` -> the next one's ``StartedAt``.
2. **Decision time** — :func:`jupyter_ptcuda.containers.gpuqueue.decide` with 1,000 queued requests from 50
   users on an 8-GPU host (p50/p99 over 50 decisions).

Each figure is printed with its ratio to the target (< 1.0: within it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jupyter_ptcuda.containers import labels as L  # noqa: E402
from jupyter_ptcuda.containers.allocating import AllocatingService  # noqa: E402
from jupyter_ptcuda.containers.dispatch import GpuQueue  # noqa: E402
from jupyter_ptcuda.containers.gpuqueue import Holder, Usage, Waiting, decide  # noqa: E402
from jupyter_ptcuda.containers.ledger import GpuLedger  # noqa: E402
from jupyter_ptcuda.jobs.manager import JobManager  # noqa: E402
from jupyter_ptcuda.jobs.request import JobRequest  # noqa: E402
from tests.fakes.backend import FakeBackend, Program  # noqa: E402

DISPATCH_TARGET = 1.0
DECISION_TARGET = 0.010


class WallClock:
    """The fake backend's clock, reading real time (the latencies are real)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, seconds: float) -> None:  # pragma: no cover - nothing moves real time
        raise RuntimeError("real time")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def show(what: str, values: list[float], target: float, unit: str = "ms", scale: float = 1000.0) -> None:
    p50, p99 = pct(values, 50), pct(values, 99)
    print(f"{what:<52} p50 {p50 * scale:8.2f} {unit}  p99 {p99 * scale:8.2f} {unit}  "
          f"(n={len(values)}; p99/target {p99 / target:.3f})")


def two_gpus() -> dict:
    return {"state": "ok", "gpus": [{"index": i, "uuid": f"GPU-{i}", "state": "ok"} for i in range(2)]}


async def dispatch_fake(handoffs: int, folder: Path) -> list[float]:
    launched: dict[str, float] = {}

    def program(spec) -> Program:
        launched[spec.labels[L.JOB_ID]] = time.perf_counter()
        return Program()

    fake = FakeBackend(WallClock(), programs=program)  # type: ignore[arg-type]
    ledger = GpuLedger(fake, two_gpus)
    ledger.queue = GpuQueue(ledger)
    mgr = JobManager(service=AllocatingService(fake, ledger), db_path=str(folder / "jobs.sqlite"), import_check=False,
                     reconcile_interval=0)
    script = folder / "train.py"
    script.write_text("print('x')\n")
    jobs = [await mgr.submit(JobRequest(path=str(script), gpus=1, name=f"j{i}")) for i in range(handoffs + 2)]
    out: list[float] = []
    try:
        for i in range(handoffs):
            nxt = jobs[i + 2].id
            cid = (await mgr.get(jobs[i].id)).container_id
            t0 = time.perf_counter()
            fake.exit(cid or "", 0)
            deadline = time.monotonic() + 30
            while nxt not in launched:
                assert time.monotonic() < deadline, f"job {nxt} never started"
                await asyncio.sleep(0.001)
            out.append(launched[nxt] - t0)
    finally:
        await mgr.stop()
        await ledger.queue.close()
    return out


async def dispatch_engine(handoffs: int, folder: Path, image: str) -> list[float]:
    from jupyter_ptcuda.containers.docker.service import DockerContainerService
    from jupyter_ptcuda.nvml.sampler import GpuSampler
    from jupyter_ptcuda_testing.nvml import make_fake_nvml

    sampler = GpuSampler(make_fake_nvml("2"), interval=0.5)
    sampler.ensure_started()
    sampler.wait_ready(5)
    docker = DockerContainerService()
    ledger = GpuLedger(docker, sampler.snapshot, sampler=sampler)
    ledger.queue = GpuQueue(ledger)
    mgr = JobManager(service=AllocatingService(docker, ledger), db_path=str(folder / "jobs.sqlite"),
                     import_check=False, reconcile_interval=0)
    work = folder / "work"
    work.mkdir()
    if os.geteuid() == 0:
        os.chown(work, 1000, 100)
    script = work / "hold.py"
    script.write_text("import pathlib, sys, time\nwhile not pathlib.Path(f'release-{sys.argv[1]}').exists():\n"
                      "    time.sleep(0.05)\n")
    jobs = [await mgr.submit(JobRequest(path=str(script), gpus=1, image=image, name=f"e{i}", args=[f"e{i}"]))
            for i in range(handoffs + 2)]
    out: list[float] = []
    try:
        for i in range(handoffs):
            (work / f"release-e{i}").write_text("")
            deadline = time.monotonic() + 120
            while (nxt := await mgr.get(jobs[i + 2].id)).started is None:
                assert time.monotonic() < deadline, f"job {nxt.id} never started"
                await asyncio.sleep(0.05)
            prev = await mgr.get(jobs[i].id)
            while prev.finished is None:
                await asyncio.sleep(0.05)
                prev = await mgr.get(jobs[i].id)
            out.append(nxt.started - prev.finished)
    finally:
        for i in range(handoffs + 2):
            (work / f"release-e{i}").write_text("")
        for j in jobs:
            while not (await mgr.get(j.id)).terminal:
                await asyncio.sleep(0.1)
        await mgr.stop()
        await ledger.queue.close()
        sampler.stop()
    return out


def decision_times(rounds: int = 50) -> list[float]:
    rng = random.Random(23)
    gpus = [str(i) for i in range(8)]
    now = 1_700_000_000.0
    waiting = [Waiting(f"r{i}", f"user{rng.randrange(50)}", count=rng.choice((1, 1, 1, 2, 4)), submitted=now - 3600 + i * 3,
                       seq=i) for i in range(1000)]
    usage = Usage(3600)
    usage.advance(now - 3600, {f"user{u}": rng.randrange(3) for u in range(50)})
    usage.advance(now, {})
    out = []
    for _ in range(rounds):
        holders = {g: [Holder(f"user{rng.randrange(50)}", "job x")] for g in gpus if rng.random() < 0.7}
        t0 = time.perf_counter()
        decide(waiting, gpus, holders, usage.snapshot(), now)
        out.append(time.perf_counter() - t0)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handoffs", type=int, default=50)
    ap.add_argument("--engine", type=int, default=0, help="hand-offs on the real engine too (0: skip)")
    ap.add_argument("--image", default=os.environ.get("JUPYTER_PTCUDA_TEST_IMAGE", "jupyter-ptcuda-test:cpu"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fake = await dispatch_fake(args.handoffs, Path(tmp))
    show("dispatch latency, in-memory backend (GPU freed->launch)", fake, DISPATCH_TARGET)
    if args.engine:
        with tempfile.TemporaryDirectory() as tmp:
            real = await dispatch_engine(args.engine, Path(tmp), args.image)
        show("dispatch latency, real engine (FinishedAt->StartedAt)", real, DISPATCH_TARGET)
    times = decision_times()
    show("decide(): 1,000 requests from 50 users, 8 GPUs", times, DECISION_TARGET)
    print(f"mean decision {statistics.mean(times) * 1000:.2f} ms; targets: dispatch p99 <= {DISPATCH_TARGET:.0f} s, "
          f"decision <= {DECISION_TARGET * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
