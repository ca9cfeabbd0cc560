"""Veenstra VIK-202 ionisation chamber, read with its command set.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.vik202.driver import VIK202Config, VIK202Driver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="vik202",
    config=VIK202Config,
    driver=VIK202Driver,
    folder=Path(__file__).parent,
    summary="Veenstra VIK-202 ionisation chamber (command set)",
    simulator="drivers.dosecal.vik202.simulator:PROFILE",
)

__all__ = ["DRIVER", "VIK202Config", "VIK202Driver"]
