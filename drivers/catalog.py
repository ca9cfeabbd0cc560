"""Registry of drivers keyed by configuration `type` string.

Adding a driver: define its config model (a `DeviceConfigBase` subclass with
`type: Literal["..."]`) and driver class, then add both here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from drivers.base import DeviceConfigBase, Driver
from drivers.modbus import ModbusRtuConfig, ModbusRtuDriver, ModbusTcpConfig, ModbusTcpDriver
from drivers.opcua import OpcUaConfig, OpcUaDriver
from drivers.synthetic import SyntheticConfig, SyntheticDriver

DeviceConfig = Annotated[
    SyntheticConfig | ModbusTcpConfig | ModbusRtuConfig | OpcUaConfig,
    Field(discriminator="type"),
]
"""Union of every driver's configuration, discriminated by `type`."""

DRIVERS: dict[str, type[Driver]] = {
    "synthetic": SyntheticDriver,
    "modbus_tcp": ModbusTcpDriver,
    "modbus_rtu": ModbusRtuDriver,
    "opcua": OpcUaDriver,
}


def create_driver(config: DeviceConfigBase) -> Driver:
    """Build the driver registered for `config.type`."""
    try:
        driver_class = DRIVERS[config.type]
    except KeyError:
        raise ValueError(f"no driver registered for type {config.type!r}") from None
    return driver_class(config)
