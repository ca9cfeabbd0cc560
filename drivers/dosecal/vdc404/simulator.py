"""Simulator profile: the VDC-404 pushes `<isotope>: <activity> <unit>` after each measurement."""

from __future__ import annotations

from drivers.dosecal.simulation import SimulationProfile, significant


class VDC404Simulation(SimulationProfile):
    """Listens to nothing; one line per push interval, e.g. `F18: 370.2 MBq`."""

    default_unit = "MBq"
    pushes = True

    def push_lines(self) -> list[tuple[bytes, bool]]:
        """One reading line."""
        sim = self.instrument
        line = f"{sim.nuclide().replace('-', '')}: {significant(sim.displayed())} {sim.unit}"
        return [((line + "\r\n").encode("latin-1"), True)]


PROFILE = VDC404Simulation
