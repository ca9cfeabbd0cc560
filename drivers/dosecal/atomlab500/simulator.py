"""Simulator profile: the Atomlab 500 answers ^C or `1` (no CR) with a reading; `ISO` sets it.

The reading line is the layout the driver's default `reading_pattern` expects, a guess: the
manual describes the real layout under `DS` (p. 220), which could not be checked. So the
simulator tests show the driver and this profile agree, not that either matches an instrument:
`F-18       370.2 MBq`, ended by CR LF (the manual's rule for data sent after a command).
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
        """Readings for ^C / `1` (no CR needed), `OK` for a valid `ISO`, `ERROR` otherwise."""
        sim = self.instrument
        buffer = session.buffer
        while buffer:
            first = bytes(buffer[:1])
            if first in (CTRL_C.encode(), b"1"):
                del buffer[:1]
                sim.note_command(first.decode())
                sim.reply(session, (self.reading_line() + "\r\n").encode("latin-1"))
                continue
            end = buffer.find(b"\r")
            if end < 0:
                break
            command = bytes(buffer[:end]).decode("latin-1").strip("\n ")
            del buffer[: end + 1]
            if command:
                sim.note_command(command)
                self.on_command(session, command)

    def on_command(self, session: Session, command: str) -> None:
        """A CR-ended command: `ISO <nuclide>` sets the isotope; anything else is an error."""
        sim = self.instrument
        verb, _, argument = command.partition(" ")
        if verb.upper() == "ISO" and normalize_nuclide(argument) is not None:
            sim.set_nuclide(argument)
            sim.reply(session, b"OK\r\n", record=False)
        else:
            sim.reply(session, b"ERROR\r\n", record=False)


PROFILE = Atomlab500Simulation
