"""Registry of drivers keyed by configuration `type` string.

Adding a driver: define its config model (a `DeviceConfigBase` subclass with
`type: Literal["..."]`) and driver class, then add both here. Configuration models are imported
eagerly (they validate files); driver modules and their protocol libraries load on first use.
"""

from __future__ import annotations

import importlib
from typing import Annotated

from pydantic import Field

from drivers.base import DeviceConfigBase, Driver
from drivers.dosecal import (
    Atomlab500Config,
    CapintecCRC15Config,
    SerialLineConfig,
    VDC404Config,
    VIK202Config,
)
from drivers.modbus.config import ModbusRtuConfig, ModbusTcpConfig
from drivers.opcua.config import OpcUaConfig
from drivers.synthetic import SyntheticConfig

DeviceConfig = Annotated[
    SyntheticConfig
    | CapintecCRC15Config
    | Atomlab500Config
    | VDC404Config
    | VIK202Config
    | SerialLineConfig
    | ModbusTcpConfig
    | ModbusRtuConfig
    | OpcUaConfig,
    Field(discriminator="type"),
]
"""Union of every driver's configuration, discriminated by `type`."""

DRIVERS: dict[str, str] = {
    "synthetic": "drivers.synthetic:SyntheticDriver",
    "capintec_crc15": "drivers.dosecal.capintec:CapintecCRC15Driver",
    "atomlab500": "drivers.dosecal.atomlab:Atomlab500Driver",
    "vdc404": "drivers.dosecal.vdc404:VDC404Driver",
    "vik202": "drivers.dosecal.vik202:VIK202Driver",
    "serial_line": "drivers.dosecal.serial_line:SerialLineDriver",
    "modbus_tcp": "drivers.modbus.driver:ModbusTcpDriver",
    "modbus_rtu": "drivers.modbus.driver:ModbusRtuDriver",
    "opcua": "drivers.opcua.driver:OpcUaDriver",
}
"""`type` → "module:Class". Driver modules (and their protocol libraries) load on first use."""


def driver_class(type_name: str) -> type[Driver]:
    """The driver class registered for a configuration `type`."""
    try:
        module_name, class_name = DRIVERS[type_name].split(":")
    except KeyError:
        raise ValueError(f"no driver registered for type {type_name!r}") from None
    cls: type[Driver] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_driver(config: DeviceConfigBase) -> Driver:
    """Build the driver registered for `config.type`."""
    return driver_class(config.type)(config)
