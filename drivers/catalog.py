"""Registry of drivers keyed by configuration `type` string.

Adding a driver: define its config model (a `DeviceConfigBase` subclass with
`type: Literal["..."]`) and driver class, then add both here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.base import DeviceConfigBase, Driver
from drivers.dosecal import (
    Atomlab500Config,
    Atomlab500Driver,
    CapintecCRC15Config,
    CapintecCRC15Driver,
    SerialLineConfig,
    SerialLineDriver,
    VDC404Config,
    VDC404Driver,
    VIK202Config,
    VIK202Driver,
)
from drivers.synthetic import SyntheticConfig, SyntheticDriver

DeviceConfig = Annotated[
    SyntheticConfig
    | CapintecCRC15Config
    | Atomlab500Config
    | VDC404Config
    | VIK202Config
    | SerialLineConfig,
    Field(discriminator="type"),
]
"""Union of every driver's configuration, discriminated by `type`."""

DRIVERS: dict[str, type[Driver]] = {
    "synthetic": SyntheticDriver,
    "capintec_crc15": CapintecCRC15Driver,
    "atomlab500": Atomlab500Driver,
    "vdc404": VDC404Driver,
    "vik202": VIK202Driver,
    "serial_line": SerialLineDriver,
}


def create_driver(config: DeviceConfigBase) -> Driver:
    """Build the driver registered for `config.type`."""
    try:
        driver_class = DRIVERS[config.type]
    except KeyError:
        raise ValueError(f"no driver registered for type {config.type!r}") from None
    return driver_class(config)
