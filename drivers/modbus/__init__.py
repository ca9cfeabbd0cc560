"""Modbus TCP and RTU: register maps as data, coalesced reads, shared buses."""

from drivers.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.driver import ModbusDriver, ModbusRtuDriver, ModbusTcpDriver, exception_name
from drivers.modbus.points import ModbusPoint, ReadBlock, Table, plan_reads

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
