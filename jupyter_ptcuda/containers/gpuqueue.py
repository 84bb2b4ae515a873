"""Who gets a GPU next: the queue's scheduling decision, pure (no I/O, no clock of its own, no asyncio).

The allocation layer's dispatcher (:class:`~.dispatch.GpuDispatcher`) calls :func:`decide` each time GPUs
may have freed up, with the requests that wait (:class:`Waiting`), the GPUs there are (least loaded first),
who holds which (:class:`Holder`), each user's recent GPU time (:class:`Usage`) and the time now. The
decision says which requests start on which devices, and for each one that waits its place and the sentence
that tells its user why (:class:`Decision`). The properties (README, "GPU queue"; tests/unit/test_gpu_queue.py):

1. **Work-conserving, with backfill**: requests are looked at in priority order and every one that fits in
   the GPUs still free starts, so a 1-GPU request passes a waiting 4-GPU one rather than leave a GPU idle.
2. **No starvation**: a request that has waited ``reserve_after`` seconds or more goes first (oldest
   first), and the free GPUs it cannot use yet are *reserved* for it: nobody behind it takes them, so as
   GPUs free up it does start (a 4-GPU job on a busy 4-GPU host).
3. **Fair share**: among the others, the user with the least recent GPU time goes first (GPU-seconds
   decayed with ``half_life``: :class:`Usage`; ties: the user holding fewer GPUs now, then the earliest
   request), one request at a time, so ten queued requests of one user do not push back another user's one;
   within one user, first come first served.
4. **Never-satisfiable requests are refused at once** (:func:`refusal`): more GPUs than the host has, above
   the per-user ``max_gpus``, devices that do not exist.

A per-user ``max_gpus`` also holds while waiting: a request that would take its user past it waits (it is
satisfiable later, when that user's own work ends).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Waiting:
    """One request in line. ``count`` GPUs, or the devices ``ids`` (canonical indexes); ``submitted``:
    epoch seconds it joined (kept across a restart: its place is by this time), then ``seq``."""

    claim: str
    owner: str
    count: int = 0
    ids: tuple[str, ...] = ()
    submitted: float = 0.0
    seq: int = 0  # the order of arrival among requests of the same time

    @property
    def size(self) -> int:
        return len(self.ids) if self.ids else self.count


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a GPU: its user and what it is, in words ("job train-lr0.1", "kernel Untitled.ipynb")."""

    owner: str
    what: str


@dataclasses.dataclass(frozen=True)
class Rules:
    """``reserve_after``: seconds a request waits before GPUs are reserved for it; ``half_life``: seconds
    after which a user's GPU time counts half; ``max_gpus``: GPUs one user may hold at once (None: no limit);
    ``hide_others``: name other users' holders "another user" (many users: the broker)."""

    reserve_after: float = 600.0
    half_life: float = 3600.0
    max_gpus: int | None = None
    hide_others: bool = False


@dataclasses.dataclass(frozen=True)
class Start:
    claim: str
    ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Wait:
    """A request that keeps waiting: ``ahead`` requests before it, ``reserved`` the free GPUs kept for it,
    ``reason`` the sentence its user reads."""

    claim: str
    ahead: int
    reserved: tuple[str, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class Decision:
    starts: tuple[Start, ...]
    waits: tuple[Wait, ...]


class Usage:
    """Each user's recent GPU time: GPU-seconds, decayed so that what was used ``half_life`` ago counts half.

    :meth:`advance` integrates exactly (GPUs held stay constant between two calls): with ``λ = ln 2 /
    half_life`` and ``h`` GPUs held for ``dt`` seconds, ``u ← u·e^(−λ·dt) + h·(1 − e^(−λ·dt))/λ``."""

    def __init__(self, half_life: float = 3600.0) -> None:
        if half_life <= 0:
            raise ValueError("half_life must be positive")
        self.half_life = half_life
        self._used: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._at: float | None = None

    def advance(self, now: float, held: Mapping[str, int]) -> None:
        """Account the time since the last call (at the GPUs held then), then remember ``held`` (user → GPUs
        held from ``now`` on)."""
        if self._at is not None and now > self._at:
            rate = math.log(2) / self.half_life
            decay = math.exp(-rate * (now - self._at))
            gained = (1 - decay) / rate
            for user in set(self._used) | set(self._held):
                value = self._used.get(user, 0.0) * decay + self._held.get(user, 0) * gained
                if value < 1e-9:
                    self._used.pop(user, None)
                else:
                    self._used[user] = value
        if self._at is None or now > self._at:
            self._at = now
        self._held = {u: n for u, n in held.items() if n > 0}

    def of(self, user: str) -> float:
        return self._used.get(user, 0.0)

    def snapshot(self) -> dict[str, float]:
        return dict(self._used)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def refusal(request: Waiting, gpus: Sequence[str], rules: Rules = Rules()) -> str | None:
    """Why ``request`` can never be met on a host with ``gpus`` (device indexes) under ``rules``, or None."""
    if request.ids:
        unknown = [i for i in request.ids if i not in gpus]
        if unknown:
            return (f"there is no GPU {', '.join(unknown)} on this host (it has {', '.join(gpus) or 'none'}): "
                    "ask for devices that exist, or for a count.")
        if len(set(request.ids)) != len(request.ids):
            return "the same GPU is asked for twice: list each device once."
    elif request.count > len(gpus):
        return (f"{_plural(request.count, 'GPU')} asked for, but this host has {len(gpus)}: "
                f"ask for at most {len(gpus)}.")
    if rules.max_gpus is not None and request.size > rules.max_gpus:
        return (f"{_plural(request.size, 'GPU')} asked for, above the {rules.max_gpus} one user may hold "
                f"(max_gpus): ask for at most {rules.max_gpus}.")
    if request.size <= 0:
        return "no GPU is asked for: nothing to wait for."
    return None


def order(waiting: Iterable[Waiting], usage: Mapping[str, float], held: Mapping[str, int], now: float,
          rules: Rules = Rules()) -> list[Waiting]:
    """The requests in the order they are served: those waiting ``reserve_after`` or longer first (oldest
    first); then the others by fair share (see the module docstring), one request per turn: after a turn its
    user counts as holding that request's GPUs too."""
    starving: list[Waiting] = []
    by_user: dict[str, list[Waiting]] = {}
    for w in waiting:
        if now - w.submitted >= rules.reserve_after:
            starving.append(w)
        else:
            by_user.setdefault(w.owner, []).append(w)
    starving.sort(key=lambda w: (w.submitted, w.seq, w.claim))
    out = list(starving)
    heap: list[tuple[float, int, float, int, str, str]] = []
    for user, items in by_user.items():
        items.sort(key=lambda w: (w.submitted, w.seq, w.claim))
        heapq.heappush(heap, (usage.get(user, 0.0), held.get(user, 0), items[0].submitted, items[0].seq, items[0].claim, user))
    nxt = {user: 0 for user in by_user}
    holding = dict(held)
    while heap:
        used, _, _, _, _, user = heapq.heappop(heap)
        items = by_user[user]
        w = items[nxt[user]]
        out.append(w)
        nxt[user] += 1
        holding[user] = holding.get(user, 0) + w.size
        if nxt[user] < len(items):
            head = items[nxt[user]]
            heapq.heappush(heap, (used, holding[user], head.submitted, head.seq, head.claim, user))
    return out


def decide(waiting: Sequence[Waiting], gpus: Sequence[str], holders: Mapping[str, Sequence[Holder]],
           usage: Mapping[str, float], now: float, rules: Rules = Rules()) -> Decision:
    """Which waiting requests start now, on which of the free GPUs (``gpus`` least loaded first, minus those in
    ``holders``), and what each of the others is told. Never-satisfiable requests are the caller's to refuse
    first (:func:`refusal`); one that slipped through simply keeps waiting."""
    free = [g for g in gpus if not holders.get(g)]
    held: dict[str, int] = {}
    for hs in holders.values():
        for owner in {h.owner for h in hs}:
            held[owner] = held.get(owner, 0) + 1
    starts: list[Start] = []
    waits: list[tuple[Waiting, int, tuple[str, ...], str]] = []
    pool = list(free)
    for w in order(waiting, usage, held, now, rules):
        over = rules.max_gpus is not None and held.get(w.owner, 0) + w.size > rules.max_gpus
        if w.ids:
            fits = all(i in pool for i in w.ids)
            ids = tuple(w.ids)
        else:
            fits = len(pool) >= w.count
            ids = tuple(pool[: w.count])
        if fits and not over:
            starts.append(Start(w.claim, ids))
            pool = [g for g in pool if g not in ids]
            held[w.owner] = held.get(w.owner, 0) + w.size
            continue
        reserved: tuple[str, ...] = ()
        if now - w.submitted >= rules.reserve_after and not over:  # starving: keep what frees up for it
            reserved = tuple(i for i in w.ids if i in pool) if w.ids else tuple(pool[: w.count])
            pool = [g for g in pool if g not in reserved]
        waits.append((w, len(waits), reserved, "quota" if over else ""))
    by_index = sorted(holders, key=lambda g: (len(g), g))
    said: dict[tuple[str, tuple[str, ...]], str] = {}  # who holds what, as one user reads it (the same for many)
    described = []
    for w, ahead, reserved, why in waits:
        key = (w.owner, w.ids)
        if key not in said:
            said[key] = _holders(w, list(w.ids) if w.ids else by_index, holders, rules)
        described.append(Wait(w.claim, ahead, reserved, _reason(w, ahead, reserved, why, said[key], held, rules)))
    return Decision(tuple(starts), tuple(described))


def _reason(w: Waiting, ahead: int, reserved: tuple[str, ...], why: str, holding: str, held: Mapping[str, int],
            rules: Rules) -> str:
    """"waiting for 1 GPU: 2 requests ahead of you; GPUs held by your job train-lr0.1 and another user"."""
    what = f"GPU {', '.join(w.ids)}" if w.ids else _plural(w.count, "GPU")
    parts = [f"{_plural(ahead, 'request')} ahead of you" if ahead else "next in line"]
    if why == "quota":
        parts.append(f"you hold {held.get(w.owner, 0)} of the {rules.max_gpus} GPUs one user may hold (max_gpus)")
    if reserved:
        parts.append(f"{', '.join(reserved)} reserved for you (waiting over {rules.reserve_after:.0f} s)")
    if holding:
        parts.append(holding)
    return f"waiting for {what}: " + "; ".join(parts)


def _holders(w: Waiting, relevant: list[str], holders: Mapping[str, Sequence[Holder]], rules: Rules) -> str:
    """"GPUs held by your job train-lr0.1 and another user" ("" when none of ``relevant`` is held)."""
    names: list[str] = []
    for gpu in relevant:
        for h in holders.get(gpu, ()):
            if h.owner == w.owner:
                name = f"your {h.what}"
            elif rules.hide_others:
                name = "another user"
            else:
                name = f"{h.what} of {h.owner}" if h.owner else h.what
            if name not in names:
                names.append(name)
    if not names:
        return ""
    shown = names[:3] + ([f"{len(names) - 3} more"] if len(names) > 3 else [])
    joined = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"GPU{'s' if len(relevant) > 1 else ''} held by {joined}"
