"""Simulator profile: an LB 111-style area monitor pushing `<dose rate> uSv/h <state>` lines.

The profile makes its own values (the simulator's chamber is not used): a background of about
0.15 µSv/h with Poisson-like noise, raised while a source is near (`press_key("source")`
toggles it: 25 µSv/h, above the 10 µSv/h alarm threshold, so the state word turns `ALARM`).
"""

from __future__ import annotations

import math
from typing import ClassVar

from drivers.serial.simulation import Instrument, SimulationProfile

BACKGROUND_USV_H = 0.15
SOURCE_USV_H = 25.0
ALARM_THRESHOLD_USV_H = 10.0


class LB111Simulation(SimulationProfile):
    """One line per push interval; nothing is read from the line."""

    default_unit = "uSv/h"
    fixed_unit = True
    pushes = True
    activity = False
    keys: ClassVar[tuple[str, ...]] = ("source",)

    def __init__(self, instrument: Instrument) -> None:
        super().__init__(instrument)
        self.source_near = False

    def on_key(self, key: str) -> None:
        """`source`: a source is brought near the probe, or taken away."""
        if key == "source":
            self.source_near = not self.source_near

    def dose_rate(self) -> float:
        """The monitor's current reading in µSv/h."""
        mean = SOURCE_USV_H if self.source_near else BACKGROUND_USV_H
        noisy = self.instrument.rng.gauss(mean, math.sqrt(mean / 50.0))
        return max(noisy, 0.0)

    def push_lines(self) -> list[tuple[bytes, bool]]:
        """`  1.52E-01 uSv/h OK` CR LF."""
        value = self.dose_rate()
        state = "ALARM" if value >= ALARM_THRESHOLD_USV_H else "OK"
        return [(f"{value:10.2E} uSv/h {state}\r\n".encode("ascii"), True)]


PROFILE = LB111Simulation
