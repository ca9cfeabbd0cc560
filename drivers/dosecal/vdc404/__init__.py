"""Veenstra/Comecer VDC-404 dose calibrator: one pushed line per measurement.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.vdc404.driver import VDC404Config, VDC404Driver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="vdc404",
    config=VDC404Config,
    driver=VDC404Driver,
    folder=Path(__file__).parent,
    summary="Veenstra/Comecer VDC-404 (pushed lines)",
    simulator="drivers.dosecal.vdc404.simulator:PROFILE",
)

__all__ = ["DRIVER", "VDC404Config", "VDC404Driver"]
