"""What a Modbus link of the bus's own does whatever its framing: one request in flight.

The bus already serialises requests (one outstanding request per link) and bounds every wait,
so a transaction needs only one future, the framer's decode and the match of the answer to
the request. pymodbus' asyncio client adds per request its transaction manager, retry
bookkeeping and tracing hooks, and imports its client, transport and transaction packages
(~0.8 MB resident); at a 5 ms poll that client loop was most of the agent's CPU
(docs/benchmarks.md). The frames and PDUs stay pymodbus' own: a framer (`FramerSocket` for
Modbus TCP, `FramerRTU` for RTU) builds and splits frames, the PDU classes decode responses,
exception responses included. `drivers.modbus.tcp_link` and `drivers.modbus.rtu_link` add the
framing of the bytes that arrive.

A frame that answers no pending request (another unit, another transaction id: a late answer to
an abandoned request) is dropped and counted; nothing inbound raises into the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

if TYPE_CHECKING:
    from pymodbus.framer.base import FramerBase

log = structlog.get_logger("isoedge.modbus.link")

# The response class of each read the bus sends: decoded directly by its pymodbus PDU class
# (`DecodePDU.decode` formats every PDU for a debug line whether or not anyone logs it).
_READ_RESPONSES: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}
_EXCEPTION_BIT = 0x80


@dataclass(slots=True)
class _Pending:
    transaction_id: int
    unit_id: int
    function_code: int
    future: asyncio.Future[ModbusPDU]


class PduLink(asyncio.Protocol):
    """One connection to Modbus units with at most one request in flight (see the module)."""

    def __init__(self, name: str, timeout_s: float, framer: FramerBase) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._framer = framer
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: _Pending | None = None
        self.unmatched_frames = 0  # well-formed frames that answered no pending request
        self.malformed = 0  # byte runs discarded: not a frame of this link's framing

    @property
    def connected(self) -> bool:
        """A connection is open."""
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection (the caller bounds the wait); True once it is open."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (idempotent); a request in flight fails with the link."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_pending(ConnectionException(f"{self.name} closed"))

    async def execute(self, request: ModbusPDU) -> ModbusPDU:
        """Send `request` and return its response; TimeoutError after `timeout_s`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionException(f"{self.name} is not connected")
        transaction_id = self._next_transaction_id()
        request.transaction_id = transaction_id
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._pending = _Pending(transaction_id, request.dev_id, request.function_code, future)
        try:
            transport.write(self._framer.buildFrame(request))
            async with asyncio.timeout(self.timeout_s):
                return await future
        finally:
            self._pending = None

    def _next_transaction_id(self) -> int:
        """The id the next request carries (0: a framing without transaction ids)."""
        return 0

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream transport
        self._transport = transport
        self._buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        self._buffer.clear()
        reason = f": {exc}" if exc else ""
        self._fail_pending(ConnectionException(f"{self.name} connection lost{reason}"))

    # ----------------------------------------------------------------------------------------

    def _answer(self, unit_id: int, transaction_id: int, body: bytes) -> None:
        """A whole frame arrived: the pending request's response, or dropped and counted."""
        pending = self._pending
        if (pending is None or pending.future.done()
                or transaction_id != pending.transaction_id
                or (pending.unit_id and unit_id != pending.unit_id)):
            self.unmatched_frames += 1
            log.info("Modbus frame answers no pending request; dropped", link=self.name,
                     transaction_id=transaction_id, unit_id=unit_id)
            return
        response = self._decode(pending.function_code, body)
        if response is None:
            pending.future.set_exception(ModbusIOException(
                f"unit {unit_id} sent an undecodable response: {body[:16].hex(' ')}"))
            return
        response.dev_id = unit_id
        response.transaction_id = transaction_id
        pending.future.set_result(response)

    def _decode(self, function_code: int, body: bytes) -> ModbusPDU | None:
        """The response PDU in `body` (function code first), or None if it does not decode."""
        answered = body[0] if body else 0
        try:
            if answered == function_code | _EXCEPTION_BIT:
                response: ModbusPDU = ExceptionResponse(function_code)
            elif answered == function_code and function_code in _READ_RESPONSES:
                response = _READ_RESPONSES[function_code]()
            else:  # another function: pymodbus' decoder (the bus refuses the mismatch)
                decoded = self._framer.decoder.decode(body)
                return decoded if isinstance(decoded, ModbusPDU) else None
            response.decode(body[1:])
        except (ModbusException, ValueError, IndexError, struct.error):
            return None
        return response

    def _discard(self, what: str) -> None:
        """Inbound bytes that are no frame: counted, logged, dropped."""
        self.malformed += 1
        log.warning(what, link=self.name, head=bytes(self._buffer[:8]).hex(" "),
                    discarded=len(self._buffer))
        self._buffer.clear()

    def _fail_pending(self, exc: Exception) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)
