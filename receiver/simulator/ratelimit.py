"""Per-key request limits over a fixed 60-second window.

A key's window opens with its first request and lasts 60 s; `X-RateLimit-Reset`
is when it ends (Unix seconds, rounded up). Only requests that are let through
count, so a client hammering past the limit does not push its reset back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from receiver.simulator.config import Clock

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Quota:
    """The outcome of one request against its key's window."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when the window ends
    retry_after: int  # whole seconds until then (at least 1)

    def headers(self) -> dict[str, str]:
        """The documented X-RateLimit-* headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


@dataclass
class _Window:
    start: float
    count: int = 0


class RateLimiter:
    """Fixed windows per key, on an injectable wall clock."""

    def __init__(self, clock: Clock, window: float = WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._windows: dict[str, _Window] = {}

    def hit(self, key: str, limit: int) -> Quota:
        """Count one request for `key` if it fits under `limit` this window."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now >= window.start + self._window:
            window = self._windows[key] = _Window(now)
        allowed = window.count < limit
        if allowed:
            window.count += 1
        ends = window.start + self._window
        return Quota(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - window.count),
            reset=math.ceil(ends),
            retry_after=max(1, math.ceil(ends - now)),
        )
