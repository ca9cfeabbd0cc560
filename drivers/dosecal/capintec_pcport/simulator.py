"""Simulator profile: a Capintec CRC-25R / CRC-55t(R) PC port, as its firmware answers.

`@` → `$O#`; `$` + length + command + checksum + `#` frames. A damaged command answers
`$e1    #` (checksum), a wrong length `$e3    #`, an unknown command `$e2    #`, a chamber
that does not exist `$e4    #`. `R<n>` answers the 22-byte read reply: `DR`, or `BR` while
the display is frozen (`press_key("freeze")` toggles it); unit digit `0` when the number does
not fit the display's six characters (over range). No CR or LF anywhere.
"""

from __future__ import annotations

from typing import ClassVar

from agent.physics.units import canonical_unit
from drivers.dosecal.capintec_pcport.driver import (
    ACK,
    OVER_RANGE,
    UNITS,
    check_frame,
    encode_error,
    encode_frame,
)
from drivers.dosecal.simulation import Instrument, Session, SimulationProfile, significant

_DIGIT_OF_UNIT = {unit: digit for digit, unit in UNITS.items()}
_NUMBER_WIDTH = 6


class CapintecPCPortSimulation(SimulationProfile):
    """One chamber (1); answers reads only, like the firmware answers a PC."""

    default_unit = "MBq"
    keys: ClassVar[tuple[str, ...]] = ("freeze",)
    chambers: ClassVar[frozenset[int]] = frozenset({1})

    def __init__(self, instrument: Instrument) -> None:
        super().__init__(instrument)
        self.frozen = False

    def on_key(self, key: str) -> None:
        """`freeze` toggles the frozen display (replies `BR` instead of `DR`)."""
        if key == "freeze":
            self.frozen = not self.frozen

    def on_input(self, session: Session) -> None:
        """`@` handshakes and complete `$`…`#` commands, in order."""
        sim = self.instrument
        buffer = session.buffer
        while buffer:
            if buffer[0] == ord("@"):
                del buffer[:1]
                sim.note_command("@")
                sim.reply(session, ACK, record=False)
            elif buffer[0] == ord("$"):
                end = buffer.find(b"#")
                if end < 0:
                    break
                frame = bytes(buffer[: end + 1])
                del buffer[: end + 1]
                self.on_frame(session, frame)
            else:
                del buffer[:1]  # a byte outside any frame: ignored

    def on_frame(self, session: Session, frame: bytes) -> None:
        """Answer one command frame."""
        sim = self.instrument
        problem = check_frame(frame)
        if problem is not None:
            sim.reply(session, encode_error("1" if "checksum" in problem else "3"), record=False)
            return
        command = frame[2:-2].decode("latin-1")
        sim.note_command(command)
        if command[:1] != "R":
            sim.reply(session, encode_error("2"), record=False)
        elif len(command) != 2:  # noqa: PLR2004 - `R` + chamber digit
            sim.reply(session, encode_error("3"), record=False)
        elif not command[1:].isdigit() or int(command[1:]) not in self.chambers:
            sim.reply(session, encode_error("4"), record=False)
        else:
            sim.reply(session, self.read_reply(int(command[1])))

    def read_reply(self, chamber: int) -> bytes:
        """The 22-byte answer to `R<chamber>`."""
        sim = self.instrument
        value = sim.displayed()
        number = significant(value, 4)
        over = len(number) > _NUMBER_WIDTH
        unit_digit = OVER_RANGE if over else _DIGIT_OF_UNIT[canonical_unit(sim.unit)]
        payload = (
            (b"BR" if self.frozen else b"DR")
            + str(chamber).encode("ascii")
            + sim.nuclide().encode("ascii")[:8].ljust(8)
            + (b"" if over else number.encode("ascii")).rjust(_NUMBER_WIDTH)
            + unit_digit.encode("ascii")
        )
        return encode_frame(payload)


PROFILE = CapintecPCPortSimulation
