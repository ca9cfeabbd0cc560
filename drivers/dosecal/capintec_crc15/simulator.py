"""Simulator profile: the CRC-15 PET's 11-byte replies and its Print key's line.

Each `@ABCDEFGHIJK` poll is answered with an 11-byte frame (unit byte by Capintec's firmware
enum); the Print key sends a CSV line unasked on the same port (`press_key("print")`).
"""

from __future__ import annotations

import math
import re
import struct
import time
from typing import ClassVar

from agent.physics.units import canonical_unit
from drivers.dosecal.capintec_crc15.driver import crc15_name, encode_crc15_reply
from drivers.dosecal.simulation import Session, SimulationProfile, significant, take_matches

_POLL = re.compile(rb"@ABCDEFGHIJK[\r\n]")


class CapintecCRC15Simulation(SimulationProfile):
    """Binary replies to the poll; the Print key's line between them."""

    default_unit = "MBq"
    keys: ClassVar[tuple[str, ...]] = ("print",)

    def on_input(self, session: Session) -> None:
        """One frame per complete poll in the buffer."""
        sim = self.instrument
        for _ in range(take_matches(session, _POLL)):
            frame = encode_crc15_reply(
                crc15_name(sim.nuclide()), canonical_unit(sim.unit), sim.displayed()
            )
            sim.reply(session, frame, binary=True)

    def corrupt(self, frame: bytes, *, binary: bool) -> bytes:  # noqa: ARG002 - always binary
        """Bit errors a reader can see: a unit byte out of range, NaN, a control name byte.

        This protocol has no checksum: other bit errors cannot be seen by any reader.
        """
        damaged = bytearray(frame)
        choice = self.instrument.rng.randrange(3)
        if choice == 0:
            damaged[6] = 0x0E  # unit byte out of range
        elif choice == 1:
            damaged[7:11] = struct.pack("<f", math.nan)
        else:
            damaged[1] = 0x01  # control byte in the name field
        return bytes(damaged)

    def print_line(self) -> bytes:
        """The Print key's line in the published shape.

        `F 18  ,4,2,849790,390,047309,22.07.2013,10:21:26` CR LF. The fields between name and
        date are not documented publicly; here: 4, 2, the displayed value's digits, 390, the
        day of the year.
        """
        sim = self.instrument
        digits = significant(abs(sim.displayed()), 6).replace(".", "")[:6].rjust(6, "0")
        now = time.gmtime()
        name = crc15_name(sim.nuclide())[:6].ljust(6)
        stamp = time.strftime("%d.%m.%Y,%H:%M:%S", now)
        return f"{name},4,2,{digits},390,{now.tm_yday:06d},{stamp}\r\n".encode("ascii")

    def on_key(self, key: str) -> None:
        """Print: the CSV line goes out unasked, on the port the polls use."""
        if key == "print":
            self.instrument.broadcast(self.print_line())


PROFILE = CapintecCRC15Simulation
