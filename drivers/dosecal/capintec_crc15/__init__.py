"""Capintec CRC-15 PET dose calibrator: binary poll protocol.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.capintec_crc15.driver import CapintecCRC15Config, CapintecCRC15Driver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="capintec_crc15",
    config=CapintecCRC15Config,
    driver=CapintecCRC15Driver,
    folder=Path(__file__).parent,
    summary="Capintec CRC-15 PET (binary poll protocol)",
    simulator="drivers.dosecal.capintec_crc15.simulator:PROFILE",
)

__all__ = ["DRIVER", "CapintecCRC15Config", "CapintecCRC15Driver"]
