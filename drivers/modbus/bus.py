"""A Modbus link shared by every device configured on it, one request at a time.

Several devices on one RS-485 line (or behind one TCP gateway) must take turns: the bus owns
the link and a FIFO lock held for exactly one request/response. Every link is the bus's
own transaction handling over pymodbus' framers and PDUs (`drivers.modbus.link`): Modbus TCP
(`tcp_link`), RTU on a serial port read by the event loop or tunnelled over TCP
(`rtu_link`). A unit id that stops answering costs the others at most one short timeout per
probe, and its probes are spaced out (`UnitHealth`), so it never stalls the units that do
answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
)

from drivers.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
from drivers.modbus.link import PduLink
from drivers.modbus.points import Table
from drivers.modbus.rtu_link import RtuLink
from drivers.modbus.tcp_link import TcpLink

if TYPE_CHECKING:
    from pymodbus.pdu import ModbusPDU

log = structlog.get_logger("isoedge.modbus.bus")

# A request is abandoned after the device timeout plus this margin even if the link does
# not give up by itself (belt and braces: every wait on a device has a hard limit).
_HARD_TIMEOUT_MARGIN_S = 0.5


class LinkDown(Exception):  # noqa: N818 (a state, not an error of the caller)
    """The link itself failed (connection refused or lost, serial port gone)."""


class NoResponse(Exception):  # noqa: N818 (a state, not an error of the caller)
    """The addressed unit did not answer within the timeout."""


@dataclass(slots=True)
class UnitHealth:
    """How one unit id on the bus has been answering; paces probes of a silent unit."""

    failures: int = 0
    next_probe_at: float = 0.0
    last_answer_at: float | None = None

    def record_answer(self) -> None:
        """The unit answered (a value or an exception response)."""
        self.failures = 0
        self.next_probe_at = 0.0
        self.last_answer_at = time.monotonic()

    def record_silence(self, initial_s: float, max_s: float) -> float:
        """The unit did not answer; returns the delay before it is probed again."""
        self.failures += 1
        delay = min(max_s, initial_s * 2.0 ** (self.failures - 1))
        self.next_probe_at = time.monotonic() + delay
        return delay


@dataclass(eq=False)
class ModbusBus:
    """One link, its lock and the health of each unit id on it."""

    key: str
    client: PduLink
    timeout_s: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connect_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    units: dict[int, UnitHealth] = field(default_factory=dict)
    users: int = 0

    def unit(self, unit_id: int) -> UnitHealth:
        """Health record of a unit id (created on first use)."""
        return self.units.setdefault(unit_id, UnitHealth())

    async def ensure_connected(self) -> None:
        """Open the link if it is not open; `LinkDown` if that fails."""
        async with self.connect_lock:
            if self.client.connected:
                return
            self.client.close()
            try:
                async with asyncio.timeout(self.timeout_s + _HARD_TIMEOUT_MARGIN_S):
                    ok = await self.client.connect()
            except (TimeoutError, OSError, ConnectionException) as exc:
                raise LinkDown(f"cannot open {self.key}: {exc or type(exc).__name__}") from exc
            if not ok:
                raise LinkDown(f"cannot open {self.key}")

    async def read(self, table: Table, address: int, count: int, unit_id: int) -> ModbusPDU:
        """One read request; the bus is held only for this request and its response."""
        async with self.lock:
            if not self.client.connected:
                raise LinkDown(f"{self.key} is not connected")
            request = _REQUESTS[table](address=address, count=count, dev_id=unit_id)
            try:
                async with asyncio.timeout(self.timeout_s + _HARD_TIMEOUT_MARGIN_S):
                    response = await self.client.execute(request)
            except ConnectionException as exc:
                raise LinkDown(f"{self.key}: {exc}") from exc
            except (ModbusIOException, TimeoutError) as exc:
                if not self.client.connected:
                    raise LinkDown(f"{self.key}: connection lost") from exc
                raise NoResponse(f"unit {unit_id} did not answer within {self.timeout_s}s") from exc
        # A late answer to an abandoned request must never pass for this one's data.
        if response.function_code & 0x7F != request.function_code:
            raise NoResponse(
                f"unit {unit_id} answered function {response.function_code & 0x7F} "
                f"to a function {request.function_code} request"
            )
        if not response.isError():
            got = len(response.bits) if table.is_bits else len(response.registers)
            if got < count:
                raise NoResponse(f"unit {unit_id} answered {got} of {count} values")
        return response

    def close(self) -> None:
        """Close the client (idempotent)."""
        self.client.close()


_REQUESTS: dict[Table, type[ModbusPDU]] = {
    Table.COIL: ReadCoilsRequest,
    Table.DISCRETE: ReadDiscreteInputsRequest,
    Table.HOLDING: ReadHoldingRegistersRequest,
    Table.INPUT: ReadInputRegistersRequest,
}

_BUSES: dict[tuple[int, str], ModbusBus] = {}


def _make_client(config: ModbusDeviceConfig) -> PduLink:
    # Retries and reconnects are decided by the driver and its supervisor, not by the link:
    # an automatic reconnect would hide a dead link, retries would hold the bus.
    timeout = config.timeout_s
    if isinstance(config, ModbusTcpConfig):
        return TcpLink(config.host, config.port, timeout)
    if isinstance(config, ModbusRtuConfig):
        address = config.tcp_address
        if address is not None:
            return RtuLink(timeout_s=timeout, address=address)
        return RtuLink(timeout_s=timeout, port=config.port, serial_settings={
            "baudrate": config.baudrate, "bytesize": config.bytesize,
            "parity": config.parity, "stopbits": config.stopbits,
        })  # fmt: skip
    raise TypeError(f"not a Modbus configuration: {type(config).__name__}")


def bus_key(config: ModbusDeviceConfig) -> str:
    """Devices with the same key share one link."""
    if isinstance(config, ModbusTcpConfig):
        return f"tcp://{config.host}:{config.port}"
    if isinstance(config, ModbusRtuConfig):
        return f"rtu:{config.port}"
    raise TypeError(f"not a Modbus configuration: {type(config).__name__}")


def acquire_bus(config: ModbusDeviceConfig) -> ModbusBus:
    """The bus for this device's link, shared with other devices on the same link."""
    key = bus_key(config)
    registry_key = (id(asyncio.get_running_loop()), key)
    bus = _BUSES.get(registry_key)
    if bus is None:
        bus = ModbusBus(key=key, client=_make_client(config), timeout_s=config.timeout_s)
        _BUSES[registry_key] = bus
    elif config.timeout_s != bus.timeout_s:
        log.info(
            "shared bus keeps its first device's timeout",
            bus=key,
            device=config.id,
            timeout_s=bus.timeout_s,
        )
    bus.users += 1
    return bus


def release_bus(bus: ModbusBus) -> None:
    """Give the bus back; the last user closes the link."""
    bus.users -= 1
    if bus.users > 0:
        return
    bus.close()
    for registry_key, candidate in list(_BUSES.items()):
        if candidate is bus:
            del _BUSES[registry_key]
