"""Capped exponential backoff with full jitter (so a fleet never reconnects in lock-step)."""

from __future__ import annotations

import random


class Backoff:
    """`next()` gives the next delay: uniform in [initial/2, min(max, initial·2^n)]."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0

    def next(self) -> float:
        """Delay before the next attempt."""
        cap = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(min(cap, self.initial_s) / 2, cap)

    def reset(self) -> None:
        """After a success, start again from `initial_s`."""
        self.attempt = 0
