"""Seeded coin flips for the fault knobs, so `--seed N` replays the same faults."""

from __future__ import annotations

import random


class Dice:
    """Decides whether a fault happens at a given rate."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def roll(self, rate: float) -> bool:
        """True with probability `rate` (0-1)."""
        # Rates 0 and 1 draw nothing, so a seeded run's other decisions do not shift.
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        return self._rng.random() < rate
