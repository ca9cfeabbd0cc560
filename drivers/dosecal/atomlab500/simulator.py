"""Simulator profile: the Atomlab 500 answers ^C or `1` with a reading line; `ISO` sets the isotope.

The reading line is the layout the driver's default `reading_pattern` expects (an assumption,
the real layout is not public): `F-18       370.2 MBq`.
"""

from __future__ import annotations

from agent.physics import normalize_nuclide
from drivers.dosecal.simulation import CTRL_C, Session, SimulationProfile, significant


class Atomlab500Simulation(SimulationProfile):
    """ASCII commands ended by CR (a lone ^C needs none); replies end with CR LF."""

    default_unit = "MBq"

    def reading_line(self) -> str:
        """What the instrument sends for a reading request."""
        sim = self.instrument
        return f"{sim.nuclide():<7} {significant(sim.displayed()):>10} {sim.unit}"

    def on_input(self, session: Session) -> None:
        """Readings for ^C / `1`, `OK` for a valid `ISO`, `ERROR` for anything else."""
        sim = self.instrument
        for command in sim.take_commands(session, ctrl_c=True):
            verb, _, argument = command.partition(" ")
            if command in (CTRL_C, "1"):
                sim.reply(session, (self.reading_line() + "\r\n").encode("latin-1"))
            elif verb.upper() == "ISO" and normalize_nuclide(argument) is not None:
                sim.set_nuclide(argument)
                sim.reply(session, b"OK\r\n", record=False)
            else:
                sim.reply(session, b"ERROR\r\n", record=False)


PROFILE = Atomlab500Simulation
