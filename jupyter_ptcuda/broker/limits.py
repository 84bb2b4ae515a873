"""Per-user fairness inside the broker: one user's long calls, follows or terminals cannot hold what
another user's operations need.

Long operations (``wait``, ``exec``, ``run_once``, ``follow``, ``pull``) each run on a thread of their own
(the engine seam's long calls do not share a pool), and a user may have at most
``c.PtcudaBroker.max_long_calls`` of them at once: the next is refused at once with 429 and what to do,
never queued behind a shared worker. Terminals count the same way, reserved *before* the websocket
upgrade (so 40 concurrent opens cannot all pass a check made before any was counted).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import TooBusy


class UserLimits:
    def __init__(self, max_long_calls: int, max_ttys: int) -> None:
        self.max_long_calls = max_long_calls
        self.max_ttys = max_ttys
        self._long: dict[str, int] = {}
        self._ttys: dict[str, int] = {}

    @contextlib.contextmanager
    def long_call(self, user: str) -> Iterator[None]:
        """Count one long operation of ``user`` while it runs; 429 past the limit."""
        if self._long.get(user, 0) >= self.max_long_calls:
            raise TooBusy(f"you have {self.max_long_calls} long broker calls running (waits, execs, log follows, "
                          "one-off runs): let one finish first (the operator's limit c.PtcudaBroker.max_long_calls).")
        self._long[user] = self._long.get(user, 0) + 1
        try:
            yield
        finally:
            self._release(self._long, user)

    def reserve_tty(self, user: str) -> None:
        """Count a terminal before its upgrade; :meth:`release_tty` when it closes (or the upgrade fails)."""
        if self._ttys.get(user, 0) >= self.max_ttys:
            raise TooBusy(f"you have {self.max_ttys} terminals open through the broker: close one first.")
        self._ttys[user] = self._ttys.get(user, 0) + 1

    def release_tty(self, user: str) -> None:
        self._release(self._ttys, user)

    def ttys(self, user: str) -> int:
        return self._ttys.get(user, 0)

    @staticmethod
    def _release(counts: dict[str, int], user: str) -> None:
        left = counts.get(user, 1) - 1
        if left > 0:
            counts[user] = left
        else:
            counts.pop(user, None)
