"""The simulator profile interface moved to `drivers/serial/simulation.py` (every instrument)."""

from drivers.serial.simulation import (
    CTRL_C,
    Instrument,
    Session,
    SimulatedChamber,
    SimulationProfile,
    significant,
    take_matches,
)

__all__ = [
    "CTRL_C",
    "Instrument",
    "Session",
    "SimulatedChamber",
    "SimulationProfile",
    "significant",
    "take_matches",
]
