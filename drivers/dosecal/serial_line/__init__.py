"""Generic line driver: any line-oriented instrument described by regular expressions.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.serial_line.driver import SerialLineConfig, SerialLineDriver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="serial_line",
    config=SerialLineConfig,
    driver=SerialLineDriver,
    folder=Path(__file__).parent,
    summary="generic line driver, patterns from the configuration (e.g. CRC-55tR)",
    simulator="drivers.dosecal.serial_line.simulator:PROFILE",
)

__all__ = ["DRIVER", "SerialLineConfig", "SerialLineDriver"]
