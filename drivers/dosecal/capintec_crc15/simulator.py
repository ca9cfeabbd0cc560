"""Simulator profile: the CRC-15 PET answers each `@ABCDEFGHIJK` poll with an 11-byte frame."""

from __future__ import annotations

import re

from agent.physics.units import canonical_unit
from drivers.dosecal.capintec_crc15.driver import crc15_name, encode_crc15_reply
from drivers.dosecal.simulation import Session, SimulationProfile, take_matches

_POLL = re.compile(rb"@ABCDEFGHIJK[\r\n]")


class CapintecCRC15Simulation(SimulationProfile):
    """Binary replies to the poll; no other command."""

    default_unit = "MBq"

    def on_input(self, session: Session) -> None:
        """One frame per complete poll in the buffer."""
        sim = self.instrument
        for _ in range(take_matches(session, _POLL)):
            frame = encode_crc15_reply(
                crc15_name(sim.nuclide()), canonical_unit(sim.unit), sim.displayed()
            )
            sim.reply(session, frame, binary=True)


PROFILE = CapintecCRC15Simulation
