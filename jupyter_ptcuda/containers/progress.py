"""An image pull's progress, from the engine's event stream: bytes downloaded of the bytes to download.

Docker's pull stream has one event per layer step (``Pulling fs layer``, ``Waiting``, ``Downloading`` with
``progressDetail: {current, total}``, ``Download complete``, ``Extracting``, ``Pull complete``; ``Already
exists`` for a layer the engine has). :class:`PullProgress` folds those events into one :class:`PullState`
(what the kernel-start notice shows: "pulling IMAGE: 43% (1.2 of 2.8 GB)"); :class:`Throttle` lets a caller
report at most once per interval. Pure: no I/O, the clock is injected. Callers: the Docker container
service's ``pull`` (:mod:`.docker.service`), which hands each throttled state to its caller's callback.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Layer steps after which a layer's bytes are all downloaded.
_DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")


@dataclasses.dataclass(frozen=True)
class PullState:
    """Where a pull stands. ``done``/``total``: bytes downloaded of the layers whose size is known (a layer
    still waiting has no size yet: ``waiting`` counts them); ``percent`` never goes down during one pull (a
    layer that starts later adds to the total, the shown share holds until the bytes catch up);
    ``extracted``/``layers``: layers unpacked of those to fetch (``Already exists`` ones are not counted)."""

    done: int = 0
    total: int = 0
    percent: int = 0
    layers: int = 0
    waiting: int = 0
    extracted: int = 0

    @property
    def downloaded(self) -> bool:
        return self.layers > 0 and self.waiting == 0 and self.done >= self.total

    def describe(self) -> str:
        """"43% (1.2 of 2.8 GB)", then "100% (2.8 GB), unpacking layer 2 of 5"."""
        if not self.layers:
            return "starting"
        if self.downloaded:
            text = f"100% ({format_bytes(self.total)})"
            if self.extracted < self.layers:
                text += f", unpacking layer {self.extracted + 1} of {self.layers}"
            return text
        text = f"{self.percent}% ({format_bytes(self.done, self.total)} of {format_bytes(self.total)})"
        return text + (f", {self.waiting} more layer{'s' * (self.waiting > 1)} to come" if self.waiting else "")

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "percent": self.percent, "layers": self.layers,
                "waiting": self.waiting, "extracted": self.extracted}


def format_bytes(n: int, scale_of: int | None = None) -> str:
    """``n`` in the unit that suits ``scale_of`` (default ``n``): "1.2 GB", "340 MB" (decimal, as Docker)."""
    ref = n if scale_of is None else scale_of
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if ref >= size:
            value = n / size
            number = f"{value:.1f}" if value < 100 else f"{value:.0f}"
            return number + ("" if scale_of is not None else f" {unit}")
    return f"{n}" + ("" if scale_of is not None else " B")


class PullProgress:
    """Fold pull events (:meth:`feed`) into a :class:`PullState` (:attr:`state`)."""

    def __init__(self) -> None:
        self._layers: dict[str, dict[str, Any]] = {}
        self._shown = 0
        self.state = PullState()

    def feed(self, event: Mapping[str, Any]) -> PullState:
        layer_id = str(event.get("id") or "")
        status = str(event.get("status") or "")
        if not layer_id or not _is_layer_step(status):
            return self.state
        if status == "Already exists":
            self._layers.pop(layer_id, None)
            return self._update()
        layer = self._layers.setdefault(layer_id, {"done": 0, "total": None, "extracted": False})
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and isinstance(detail.get("total"), int) and detail["total"] > 0:
            layer["total"] = int(detail["total"])
            layer["done"] = min(int(detail.get("current") or 0), layer["total"])
        elif status in _DOWNLOADED and layer["total"] is not None:
            layer["done"] = layer["total"]
        elif status in _DOWNLOADED and layer["total"] is None:  # a layer too small to report its download
            layer["total"] = layer["done"] = 0
        if status == "Pull complete":
            layer["extracted"] = True
        return self._update()

    def _update(self) -> PullState:
        known = [x for x in self._layers.values() if x["total"] is not None]
        done, total = sum(x["done"] for x in known), sum(x["total"] for x in known)
        waiting = len(self._layers) - len(known)
        share = 100 if self._layers and not waiting and done >= total else (100 * done // total if total else 0)
        self._shown = max(self._shown, min(share, 100))
        self.state = PullState(done=done, total=total, percent=self._shown, layers=len(self._layers), waiting=waiting,
                               extracted=sum(1 for x in self._layers.values() if x["extracted"]))
        return self.state


def _is_layer_step(status: str) -> bool:
    return status in ("Pulling fs layer", "Waiting", "Downloading", "Already exists", *_DOWNLOADED)


class Throttle:
    """``ready()`` is True at most once per ``interval`` seconds (the first call: always)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last: float | None = None

    def ready(self) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
