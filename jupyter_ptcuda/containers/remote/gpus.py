"""GPU telemetry of a user's server under the JupyterHub broker: the broker's one sampler, not NVML.

:class:`BrokerSampler` has :class:`~jupyter_ptcuda.nvml.sampler.GpuSampler`'s readers (snapshot,
history, ``version``) and fills them from the broker (op ``gpus``) on the sampler's own thread, once
per interval: the snapshot and only the history since its last sample (the first call brings the
broker's whole history). While nobody reads it for ``idle_pause`` seconds (the panel is closed) it
stops asking; the next read resumes and the gap is filled from the broker's history.

:class:`BrokerLedger` answers ``holders()`` from that snapshot: the broker's ledger, with the other
users' holders already shown as "another user". GPU assignment is the broker's: it has no ``assign``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from ...nvml.sampler import HISTORY_COLUMNS, GpuSampler, _Gpu
from ..ledger import GpuLedger


class BrokerSampler(GpuSampler):
    def __init__(self, url: str, token: str, interval: float = 1.0, history_seconds: float = 3600.0,
                 idle_pause: float = 30.0) -> None:
        super().__init__(None, interval=interval, history_seconds=history_seconds, retry_interval=5.0)
        self.url = url.rstrip("/")
        self.token = token
        self.idle_pause = idle_pause
        self._last_t: float | None = None
        self._read_at = time.monotonic()
        self._wake = threading.Event()

    # readers mark the sampler as wanted
    def snapshot(self) -> dict[str, Any]:
        self._touch()
        return super().snapshot()

    def history_json(self, since: float | None = None, max_points: int | None = None) -> str:
        self._touch()
        return super().history_json(since, max_points)

    def _touch(self) -> None:
        paused = time.monotonic() - self._read_at > self.idle_pause
        self._read_at = time.monotonic()
        if paused:
            self._wake.set()

    def _fetch(self) -> dict[str, Any]:
        body = json.dumps({"since": self._last_t}).encode()
        req = urllib.request.Request(f"{self.url}/v1/gpus", data=body, method="POST", headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read())["result"])

    def sample_once(self) -> None:
        """One poll of the broker (the sampler thread; tests call it directly). Never raises."""
        if self._state == "ok" and time.monotonic() - self._read_at > self.idle_pause:
            self._wake.wait(self.idle_pause)  # nobody looks: ask again when someone does
            self._wake.clear()
            return
        try:
            data = self._fetch()
        except urllib.error.HTTPError as exc:
            try:
                why = json.loads(exc.read()).get("message") or str(exc)
            except ValueError:
                why = str(exc)
            self._set_unavailable(f"the JupyterHub broker refused GPU telemetry: {why}")
            return
        except (OSError, ValueError, KeyError) as exc:
            self._set_unavailable(f"the JupyterHub broker at {self.url} does not answer for GPU telemetry ({exc})")
            return
        snap, history = data["snapshot"], data["history"]
        with self._lock:
            by_key = {g.key: g for g in self._gpus}
            gpus = []
            for row in snap.get("gpus", []):
                key = row.get("uuid") or f"index-{row['index']}"
                gpu = by_key.get(key) or _Gpu(int(row["index"]), self._maxlen)
                gpu.key, gpu.uuid, gpu.name = key, row.get("uuid"), row.get("name")
                gpus.append(gpu)
            self._gpus = gpus
            for gpu in gpus:
                cols = history.get(gpu.key)
                if not cols:
                    continue
                last = gpu.columns["t"][-1] if gpu.columns["t"] else None
                for values in zip(*(cols[c] for c in HISTORY_COLUMNS), strict=True):
                    if last is not None and values[0] <= last:
                        continue
                    for name, value in zip(HISTORY_COLUMNS, values, strict=True):
                        gpu.columns[name].append(value)
                        gpu.encoded[name].append(json.dumps(value))
                    self._last_t = max(self._last_t or 0.0, values[0])
            self._latest = snap.get("gpus", [])
            self._state, self._reason = snap.get("state", "unavailable"), snap.get("reason")
            self._driver_version = snap.get("driver_version")
            self._cuda_driver_version = snap.get("cuda_driver_version")
            self._sampled_at = snap.get("sampled_at") or time.time()
        self._ready.set()

    def _shutdown(self) -> None:  # no NVML here
        return

    def stop(self, timeout: float = 5.0) -> None:
        self._wake.set()
        super().stop(timeout)


class BrokerLedger(GpuLedger):
    """The broker's holders, as its telemetry gives them to this user (no assignment here)."""

    async def holders(self) -> dict[str, list[dict[str, str]]]:
        snap = self.snapshot() or {}
        return {str(g.get("index")): list(g.get("holders") or []) for g in snap.get("gpus", [])}
