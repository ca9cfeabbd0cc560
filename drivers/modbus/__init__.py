"""Modbus TCP and RTU: register maps as data, coalesced reads, shared buses.

Configuration models import only pydantic; the drivers (and pymodbus) load on first use, so an
agent without Modbus devices does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.points import ModbusPoint, ReadBlock, Table, plan_reads

_LAZY = {"ModbusDriver", "ModbusRtuDriver", "ModbusTcpDriver", "exception_name"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("drivers.modbus.driver"), name)
    raise AttributeError(name)


__all__ = [
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
