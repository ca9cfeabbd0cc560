"""Biodex/Mirion Atomlab 500 dose calibrator: ASCII command protocol.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.atomlab500.driver import Atomlab500Config, Atomlab500Driver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="atomlab500",
    config=Atomlab500Config,
    driver=Atomlab500Driver,
    folder=Path(__file__).parent,
    summary="Biodex/Mirion Atomlab 500 (ASCII commands)",
    simulator="drivers.dosecal.atomlab500.simulator:PROFILE",
)

__all__ = ["DRIVER", "Atomlab500Config", "Atomlab500Driver"]
