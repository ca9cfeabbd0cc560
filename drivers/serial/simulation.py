"""What a serial instrument model tells the simulator: its wire behaviour, in its driver folder.

`simulators/dosecal.py` owns everything models share (the decaying sample, noise, the pty and
TCP/RFC 2217 device servers, fault injection); each driver folder's `simulator.py` holds a
`SimulationProfile` for its model: the default display unit, whether it pushes lines, how
it answers commands. The simulator finds a profile through the driver registry, under the
driver's type name (`isoedge simulate dosecal --model capintec_crc15`).
"""

from __future__ import annotations

import math
import random
import re
from typing import ClassVar, Protocol

CTRL_C = "\x03"


class SimulatedChamber(Protocol):
    """The simulated ionisation chamber, as a profile sees it."""

    sample_nuclide: str
    selected_nuclide: str | None
    background_subtraction: bool
    zero_offset_mbq: float

    def displayed_mbq(self) -> float:
        """What the display shows, in MBq."""
        ...

    def current_a(self) -> float:
        """Chamber current (A)."""
        ...

    def autozero(self) -> float:
        """Null the offset; return it in MBq."""
        ...


class Session(Protocol):
    """One connected reader (the pty, or one TCP connection): bytes received so far."""

    buffer: bytearray


class Instrument(Protocol):
    """The simulator a profile drives: chamber, display unit, reply path (through faults)."""

    @property
    def chamber(self) -> SimulatedChamber:
        """The chamber with its sample."""
        ...

    @property
    def unit(self) -> str:
        """The display unit."""
        ...

    @property
    def rng(self) -> random.Random:
        """The simulator's random source (seeded for reproducible runs)."""
        ...

    def displayed(self) -> float:
        """The displayed activity in the display unit."""
        ...

    def nuclide(self) -> str:
        """The nuclide the selector shows (the sample's when none is selected)."""
        ...

    def set_nuclide(self, name: str) -> None:
        """The operator (or a command) turns the nuclide selector."""
        ...

    def reply(
        self, session: Session, frame: bytes, *, binary: bool = False, record: bool = True
    ) -> None:
        """Send a reply through the active fault; `record`: it is a genuine reading."""
        ...

    def take_commands(self, session: Session, *, ctrl_c: bool) -> list[str]:
        """Complete CR-ended commands in the buffer (a lone ^C is one if `ctrl_c`)."""
        ...

    def broadcast(self, data: bytes, *, record: bool = False) -> None:
        """Send bytes unasked to every connected reader, through the active fault."""
        ...

    def note_command(self, command: str) -> None:
        """Record a command received (models that frame commands themselves)."""
        ...


class SimulationProfile:
    """One model's behaviour. The default: a push instrument that ignores its input.

    Subclasses set `default_unit`, `fixed_unit` (the instrument has one unit only),
    `pushes` (it sends `push_lines()` every push interval) and override `on_input` to answer
    commands. A profile instance belongs to one simulator and may keep state.
    """

    default_unit: ClassVar[str] = "MBq"
    fixed_unit: ClassVar[bool] = False
    pushes: ClassVar[bool] = False
    activity: ClassVar[bool] = True
    """The display unit is an activity unit (dose calibrators); False for other instruments,
    whose profile then makes its own values (the chamber is not used)."""

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument

    def on_start(self) -> None:
        """Called once when the simulator is built (e.g. set the chamber's power-on state)."""

    def on_input(self, session: Session) -> None:
        """Answer the complete commands in `session.buffer` (default: ignore input)."""
        session.buffer.clear()

    def push_lines(self) -> list[tuple[bytes, bool]]:
        """Lines sent at each push interval, each with whether it is a reading."""
        return []

    def on_selector_change(self) -> None:
        """The operator turned the selector or loaded a sample."""

    def corrupt(self, frame: bytes, *, binary: bool) -> bytes:
        """The `corrupt` fault: bit errors in one reply or line (the profile owns its bytes).

        Default: text has the high bit set on its digits; a binary frame gets a control byte
        at its start and every other byte inverted (a profile knows better and overrides).
        """
        if binary:
            return bytes([0x01]) + bytes(b ^ 0xFF for b in frame[1:])
        return bytes(b | 0x80 if 0x30 <= b <= 0x39 else b for b in frame)  # noqa: PLR2004

    keys: ClassVar[tuple[str, ...]] = ()
    """Front-panel keys this model sends something for (`press_key`)."""

    def on_key(self, key: str) -> None:
        """The operator pressed a front-panel key listed in `keys`."""


def significant(value: float, digits: int = 4) -> str:
    """Fixed-point text with about `digits` significant digits, as displays print numbers."""
    if value == 0 or not math.isfinite(value):
        return "0.000"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def take_matches(session: Session, pattern: re.Pattern[bytes]) -> int:
    """Remove every complete match of `pattern` from the buffer; return how many there were."""
    count = 0
    while (match := pattern.search(session.buffer)) is not None:
        del session.buffer[: match.end()]
        count += 1
    return count
