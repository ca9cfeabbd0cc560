"""Capintec CRC-25R / CRC-55t(R) PC port: `$`…`#` frames with a checksum.

Folder: driver.py (protocol, configuration model, driver), simulator.py (the simulator's
profile of this model), README.md, sample.toml, testcases/.
"""

from pathlib import Path

from drivers.dosecal.capintec_pcport.driver import CapintecPCPortConfig, CapintecPCPortDriver
from drivers.registry import DriverSpec

DRIVER = DriverSpec(
    type="capintec_pcport",
    config=CapintecPCPortConfig,
    driver=CapintecPCPortDriver,
    folder=Path(__file__).parent,
    summary="Capintec CRC-25R / CRC-55t(R) PC port (read chamber, checksummed frames)",
    simulator="drivers.dosecal.capintec_pcport.simulator:PROFILE",
)

__all__ = ["DRIVER", "CapintecPCPortConfig", "CapintecPCPortDriver"]
