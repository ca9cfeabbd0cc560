"""A shipment's expected activity at the receiver and the receipt's comparison.

expected = A(reference) · e^(-λ·(t_measured - t_reference)); difference % = (measured -
expected)/expected x 100; within tolerance when |difference| ≤ the receiver's `[records]`
tolerance. The central reconciliation recomputes the same from the shipment (SHAPES: it never
trusts the receipt's `expected_mbq`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from agent.physics.nuclides import decay_value


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """A received activity against the shipped one, decay-corrected."""

    expected_mbq: float
    measured_mbq: float
    difference_pct: float
    tolerance_pct: float

    @property
    def within_tolerance(self) -> bool:
        """|difference| ≤ tolerance."""
        return abs(self.difference_pct) <= self.tolerance_pct


def receipt_check(
    *,
    shipped_mbq: float,
    reference_time: datetime,
    measured_mbq: float,
    measured_at: datetime,
    half_life_s: float,
    tolerance_pct: float,
) -> ReceiptCheck:
    """Decay-correct the shipped activity to the measurement and compare."""
    if not shipped_mbq > 0 or not half_life_s > 0:
        raise ValueError("shipped activity and half-life must be positive")
    if measured_mbq < 0 or not math.isfinite(measured_mbq):
        raise ValueError("the measured activity must be a finite number ≥ 0")
    expected = decay_value(shipped_mbq, (measured_at - reference_time).total_seconds(), half_life_s)
    return ReceiptCheck(
        expected, measured_mbq, (measured_mbq - expected) / expected * 100.0, tolerance_pct
    )
