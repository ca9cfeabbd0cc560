"""A synthetic device for tests, demos and benchmarks: values from a formula, no hardware.

Folder: driver.py (configuration model and driver), README.md, sample.toml.
"""

from pathlib import Path

from drivers.registry import DriverSpec
from drivers.synthetic.driver import TICK_S, SyntheticConfig, SyntheticDriver

DRIVER = DriverSpec(
    type="synthetic",
    config=SyntheticConfig,
    driver=SyntheticDriver,
    folder=Path(__file__).parent,
    summary="values from a formula, no hardware (tests, demos, benchmarks)",
)

__all__ = ["DRIVER", "TICK_S", "SyntheticConfig", "SyntheticDriver"]
