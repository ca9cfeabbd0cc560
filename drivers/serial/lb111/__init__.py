"""Berthold LB 111-style area monitor: a dose-rate line pushed every second (one-way RS-232).

Folder: driver.py (line format, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.registry import DriverSpec
from drivers.serial.lb111.driver import LB111Config, LB111Driver

DRIVER = DriverSpec(
    type="lb111",
    config=LB111Config,
    driver=LB111Driver,
    folder=Path(__file__).parent,
    summary="Berthold LB 111-style area monitor (pushed dose-rate lines, alarm state)",
    simulator="drivers.serial.lb111.simulator:PROFILE",
)

__all__ = ["DRIVER", "LB111Config", "LB111Driver"]
