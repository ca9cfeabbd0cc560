"""Simulator profile for the generic line driver: printer-style tickets of a CRC-55tR.

The ticket layout is invented (the real one is site-specific): a header line
`CAPINTEC CRC-55tR` every ten readings, then `2026-01-05 09:12:01  I-131     12.00 mCi`.
README.md shows the `serial_line` pattern that reads it.
"""

from __future__ import annotations

import time

from drivers.dosecal.simulation import SimulationProfile, significant

HEADER = b"CAPINTEC CRC-55tR\r\n"


class SerialLineSimulation(SimulationProfile):
    """Pushes ticket lines in mCi; ignores its input."""

    default_unit = "mCi"
    pushes = True
    _printed = 0

    def push_lines(self) -> list[tuple[bytes, bool]]:
        """A header line now and then (not a reading), then one reading line."""
        sim = self.instrument
        lines: list[tuple[bytes, bool]] = []
        if self._printed % 10 == 0:
            lines.append((HEADER, False))
        self._printed += 1
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp}  {sim.nuclide():<7} {significant(sim.displayed()):>10} {sim.unit}"
        lines.append(((line + "\r\n").encode("latin-1"), True))
        return lines


PROFILE = SerialLineSimulation
