"""Modbus TCP and RTU: register maps as data, coalesced reads, shared buses.

Configuration models import only pydantic; the drivers (and pymodbus) load on first use, so an
agent without Modbus devices does not pay for them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from drivers.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.points import ModbusPoint, ReadBlock, Table, plan_reads
from drivers.registry import DriverSpec

TCP_DRIVER = DriverSpec(
    type="modbus_tcp",
    config=ModbusTcpConfig,
    driver="drivers.modbus.driver:ModbusTcpDriver",
    folder=Path(__file__).parent,
    summary="Modbus TCP: hot cells, area monitors (register maps as data)",
    sample="sample_tcp.toml",
)
RTU_DRIVER = DriverSpec(
    type="modbus_rtu",
    config=ModbusRtuConfig,
    driver="drivers.modbus.driver:ModbusRtuDriver",
    folder=Path(__file__).parent,
    summary="Modbus RTU on a serial line (several unit ids share one bus)",
    sample="sample_rtu.toml",
)

_LAZY = {"ModbusDriver", "ModbusRtuDriver", "ModbusTcpDriver", "exception_name"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("drivers.modbus.driver"), name)
    raise AttributeError(name)


__all__ = [
    "RTU_DRIVER",
    "TCP_DRIVER",
    "ModbusDeviceConfig",
    "ModbusDriver",
    "ModbusPoint",
    "ModbusRtuConfig",
    "ModbusRtuDriver",
    "ModbusTcpConfig",
    "ModbusTcpDriver",
    "ReadBlock",
    "Table",
    "exception_name",
    "plan_reads",
]
