"""Configuration of Modbus devices: link settings plus a register map given as data."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from drivers.base import DeviceConfigBase
from drivers.modbus.points import ModbusPoint, ReadBlock, check_overlaps, plan_reads

# Modbus limits per request (Modbus Application Protocol v1.1b3, FC 1-4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class ModbusDeviceConfig(DeviceConfigBase):
    """Settings shared by Modbus TCP and RTU devices: unit id, limits, retries, the map."""

    unit_id: int = Field(default=1, ge=0, le=255, description="Slave/unit id (1-247 on RTU).")
    points: list[ModbusPoint] = Field(min_length=1)
    max_registers_per_request: int = Field(default=MAX_REGISTERS_PER_READ, ge=1, le=125)
    max_bits_per_request: int = Field(default=MAX_BITS_PER_READ, ge=1, le=2000)
    max_gap: int = Field(
        default=16,
        ge=0,
        le=2000,
        description="Unused addresses a coalesced read may span (0: only adjacent points).",
    )
    retries: int = Field(default=1, ge=0, le=10, description="Retries of a timed-out request.")

    @model_validator(mode="after")
    def _check_map(self) -> Self:
        problems = check_overlaps(self.points)
        for point in self.points:
            limit = (
                self.max_bits_per_request
                if point.table.is_bits
                else self.max_registers_per_request
            )
            if point.width > limit:
                problems.append(
                    f"point {point.channel!r} needs {point.width} registers but "
                    f"max_registers_per_request is {limit}"
                )
        if problems:
            raise ValueError(f"device {self.id!r}: register map: " + "; ".join(problems))
        return self

    def read_plan(self) -> list[ReadBlock]:
        """The coalesced read requests for this device's map."""
        return plan_reads(
            self.points,
            max_registers=self.max_registers_per_request,
            max_bits=self.max_bits_per_request,
            max_gap=self.max_gap,
        )


class ModbusTcpConfig(ModbusDeviceConfig):
    """Modbus TCP (MBAP framing). Devices with the same host and port share one connection."""

    type: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)


class ModbusRtuConfig(ModbusDeviceConfig):
    """Modbus RTU on a serial line, or RTU framing tunnelled over TCP.

    `port` is a serial device path (`/dev/ttyUSB0`, a pty) or `rtu+tcp://HOST:PORT` for a
    serial-to-Ethernet converter in transparent mode (RTU frames with CRC inside TCP).
    Devices with the same `port` share the bus: one request at a time.
    """

    type: Literal["modbus_rtu"]
    port: str = Field(min_length=1)
    baudrate: int = Field(default=19200, ge=300, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _check_port(self) -> Self:
        if self.unit_id == 0 or self.unit_id > 247:  # noqa: PLR2004 (RTU address range)
            raise ValueError(f"device {self.id!r}: unit_id on RTU must be 1..247")
        if "://" in self.port:
            parts = urlsplit(self.port)
            if parts.scheme != "rtu+tcp" or not parts.hostname:
                raise ValueError(
                    f"device {self.id!r}: port must be a serial device path or "
                    f"rtu+tcp://HOST:PORT (got {self.port!r})"
                )
            try:
                port = parts.port
            except ValueError:
                port = None
            if port is None:
                raise ValueError(f"device {self.id!r}: rtu+tcp:// port needs HOST:PORT")
        return self

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """(host, port) for `rtu+tcp://`, None for a serial device."""
        if "://" not in self.port:
            return None
        parts = urlsplit(self.port)
        return parts.hostname or "", parts.port or 0
