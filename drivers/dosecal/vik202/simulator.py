"""Simulator profile: the VIK-202 chamber's command set (`!R`, `!GF`, `!F<n>`, `!BON` ...).

As public working code shows it: every reply is one line, `>` + payload + CR. Commands
without data answer `>OK`; commands with data answer `>` + the value only (`!R` →
`>370200000`, Bq as an integer; `!GF` → `>762`). An unknown command answers `>ERR` (the
real chamber's answer to one is not public). Background subtraction is off until `!BON`, as
after power-on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from drivers.dosecal.simulation import Instrument, Session, SimulationProfile

FACTORS: dict[int, str] = {
    762: "F-18", 236: "Tc-99m", 587: "Cs-137", 447: "I-131", 618: "I-123", 287: "Ga-67",
    676: "In-111", 902: "Y-90", 552: "Tl-201",
}
"""Calibration factor numbers seen in public VIK-202 code (site-specific in practice)."""


class VIK202Simulation(SimulationProfile):
    """Reports Bq only; the selector is a calibration factor number."""

    default_unit = "Bq"
    fixed_unit = True

    def __init__(self, instrument: Instrument) -> None:
        super().__init__(instrument)
        self.factor: int | None = None

    def on_start(self) -> None:
        """Power-on state: no background subtraction."""
        self.instrument.chamber.background_subtraction = False

    def on_selector_change(self) -> None:
        """A nuclide chosen by name: `!GF` reports the factor of that nuclide."""
        self.factor = None

    def on_input(self, session: Session) -> None:
        """Answer each CR-ended command."""
        sim = self.instrument
        for command in sim.take_commands(session, ctrl_c=False):
            data = self.answer(command.upper())
            if data is None:
                sim.reply(session, b">ERR\r", record=False)
            elif data:
                sim.reply(session, f">{data[0]}\r".encode("latin-1"))
            else:
                sim.reply(session, b">OK\r", record=False)

    def answer(self, command: str) -> list[str] | None:
        """The data lines of a command, or None for an unknown one."""
        sim = self.instrument
        chamber = sim.chamber
        factor_match = re.fullmatch(r"!F(\d{1,4})", command)
        if factor_match:
            number = int(factor_match.group(1))
            chamber.selected_nuclide = FACTORS.get(number)
            self.factor = number
            return []
        answers: dict[str, Callable[[], list[str]]] = {
            "!R": lambda: [f"{round(chamber.displayed_mbq() * 1e6)}"],
            "!BON": lambda: self._background(on=True),
            "!BOFF": lambda: self._background(on=False),
            "!Z": self._autozero,
            "!A": lambda: [f"{chamber.zero_offset_mbq * 1e6:.3E}"],
            "!V": lambda: [f"{151.8 + sim.rng.gauss(0, 0.05):.1f}"],
            "!GQ": lambda: [f"{chamber.current_a():.4E}"],
            "!GV": lambda: ["VIK-202 simulator 1.0"],
            "!GF": lambda: [str(self._factor())],
        }
        answer = answers.get(command)
        return None if answer is None else answer()

    def _autozero(self) -> list[str]:
        self.instrument.chamber.autozero()
        return []

    def _factor(self) -> int:
        if self.factor is not None:
            return self.factor
        by_nuclide = {name: number for number, name in FACTORS.items()}
        return by_nuclide.get(self.instrument.chamber.selected_nuclide or "", 0)

    def _background(self, *, on: bool) -> list[str]:
        self.instrument.chamber.background_subtraction = on
        return []


PROFILE = VIK202Simulation
