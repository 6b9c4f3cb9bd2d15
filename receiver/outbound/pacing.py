"""Rate-limited deliveries waiting in a publisher for their slots.

The claim gives each delivery of a rate-limited subscriber its own slot (`Claimed.send_after`,
one interval after the one before, across every publisher: see `health`). Until then the
delivery waits here, holding no send slot; at its slot it starts like any other claim. One that
cannot start by half an interval after its slot (every send slot busy) goes back in line unattempted,
rather than start late in a bunch with the next ones: a burst above the rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from receiver.outbound.outbox import Claimed

# However fine the rate, a send may start this late (timers and the event loop are not exact).
MIN_TOLERANCE = 0.005


class Pacer:
    """Holds claims until their slots. `start(item, claimed_at)` starts a send and says whether
    it could (a send slot was free); `release(item, reason)` gives a claim back; `refill()` is
    called when a subscriber has no claim left waiting (the loop may claim its next slots)."""

    def __init__(
        self,
        start: Callable[[Claimed, float], bool],
        release: Callable[[Claimed, str], None],
        refill: Callable[[], None],
    ) -> None:
        self._start = start
        self._release = release
        self._refill = refill
        # Per subscription, in slot order: (monotonic time of the slot, of the claim, the claim).
        self._queues: dict[str, deque[tuple[float, float, Claimed]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, item: Claimed, claimed_at: float, returned_at: float) -> None:
        """Hold `item` until its slot: `send_after` seconds from when the claim came back (never
        early: the database counted them from a moment before). A slot already past (a claim
        that took long) is as late as any other: too late, and the claim goes back."""
        slot = returned_at + (item.send_after or 0.0)
        self._queues.setdefault(item.subscription_id, deque()).append((slot, claimed_at, item))

    def held(self) -> dict[str, int]:
        """Claims waiting, per subscription."""
        return {subscription_id: len(queue) for subscription_id, queue in self._queues.items()}

    def release(self, subscription_id: str, reason: str, *, keep_probes: bool = False) -> None:
        """Give back the claims of one subscription that are waiting (but its probe, if asked)."""
        kept: deque[tuple[float, float, Claimed]] = deque()
        for entry in self._queues.pop(subscription_id, ()):
            if keep_probes and entry[2].probe:
                kept.append(entry)
            else:
                self._release(entry[2], reason)
        if kept:
            self._queues[subscription_id] = kept

    def release_all(self, reason: str) -> None:
        for subscription_id in list(self._queues):
            self.release(subscription_id, reason)

    def run(self) -> None:
        """Start what is due (before any other claim: its slot will not wait), and set the timer
        for the next slot."""
        now = time.monotonic()
        for subscription_id in list(self._queues):
            queue = self._queues[subscription_id]
            while queue and queue[0][0] <= now:
                slot, claimed_at, item = queue[0]
                if now - slot > _tolerance(item):
                    queue.popleft()
                    self._release(item, "late")
                elif self._start(item, claimed_at):
                    queue.popleft()
                else:
                    break  # no send slot: try again when one frees up, or until it is late
            if not queue:
                del self._queues[subscription_id]
                self._refill()
        self._arm(now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, now: float) -> None:
        self.close()
        if not self._queues:
            return
        # The next slot; or, for a due claim waiting for a send slot, when it becomes late.
        at = min(
            slot if slot > now else slot + _tolerance(item) + MIN_TOLERANCE
            for slot, _, item in (queue[0] for queue in self._queues.values())
        )
        self._timer = asyncio.get_running_loop().call_later(max(at - now, 0.0), self.run)


def _tolerance(item: Claimed) -> float:
    # Half an interval: at worst one attempt more in a window than the rate (started late, next to
    # one on time), never a run of them.
    return max(item.spacing / 2, MIN_TOLERANCE)
