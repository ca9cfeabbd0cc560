"""Modbus TCP on one socket: pymodbus' framer and PDUs under the bus's own transaction handling.

The bus already serialises requests (one outstanding request per link) and bounds every wait,
so a transaction needs only an id, one future and the framer's decode. pymodbus' asyncio client
adds per request its transaction manager, retry bookkeeping and tracing hooks, and imports its
client, transport and transaction packages (~0.8 MB resident); at a 5 ms poll that client loop
was most of the agent's CPU (docs/benchmarks.md). The frames and PDUs are pymodbus' own:
`FramerSocket` builds and splits MBAP frames, `DecodePDU` decodes responses, exception
responses included.

Inbound bytes are hostile until the framer accepts them: a frame whose protocol id is not 0 or
whose length cannot be a Modbus PDU empties the buffer (counted, logged), a frame that answers
no pending request (another transaction id or unit: a late answer to an abandoned request) is
dropped and counted; nothing from the socket raises into the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

import structlog
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer.socket import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

log = structlog.get_logger("isoedge.modbus.tcp")

_MBAP_HEADER = 7  # transaction id, protocol id, length, unit id
_MIN_LENGTH_FIELD = 2  # unit id + function code
_MAX_LENGTH_FIELD = 254  # unit id + a PDU of at most 253 bytes (Modbus application protocol §4.1)


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


class TcpLink(asyncio.Protocol):
    """One Modbus TCP connection with at most one request in flight."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._framer = FramerSocket(DecodePDU(is_server=False))
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: _Pending | None = None
        self._last_transaction_id = 0
        self.unmatched_frames = 0  # well-formed frames that answered no pending request
        self.malformed = 0  # byte runs discarded: not a Modbus TCP frame

    @property
    def connected(self) -> bool:
        """A connection is open."""
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection (the caller bounds the wait); True once it is open."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.host, self.port)
        return self.connected

    def close(self) -> None:
        """Close the connection (idempotent); a request in flight fails with the link."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_pending(ConnectionException(f"{self.host}:{self.port} closed"))

    async def execute(self, request: ModbusPDU) -> ModbusPDU:
        """Send `request` and return its response; TimeoutError after `timeout_s`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionException(f"{self.host}:{self.port} is not connected")
        self._last_transaction_id = self._last_transaction_id % 0xFFFF + 1
        request.transaction_id = self._last_transaction_id
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._pending = _Pending(self._last_transaction_id, request.dev_id,
                                 request.function_code, future)
        try:
            transport.write(self._framer.buildFrame(request))
            async with asyncio.timeout(self.timeout_s):
                return await future
        finally:
            self._pending = None

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - create_connection's
        self._transport = transport
        self._buffer.clear()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._transport = None
        self._buffer.clear()
        reason = f": {exc}" if exc else ""
        self._fail_pending(ConnectionException(f"{self.host}:{self.port} connection lost{reason}"))

    def data_received(self, data: bytes) -> None:  # noqa: D102
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _MBAP_HEADER:
            length = int.from_bytes(buffer[4:6], "big")
            if buffer[2:4] != b"\x00\x00" or not _MIN_LENGTH_FIELD <= length <= _MAX_LENGTH_FIELD:
                self.malformed += 1
                log.warning("not a Modbus TCP frame; input discarded", link=self._name,
                            head=bytes(buffer[:_MBAP_HEADER]).hex(" "), discarded=len(buffer))
                buffer.clear()
                return
            used, unit_id, transaction_id, body = self._framer.decode(bytes(buffer))
            if not used:
                return  # the rest of the frame is still on its way
            del buffer[:used]
            self._answer(unit_id, transaction_id, body)

    # ----------------------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _answer(self, unit_id: int, transaction_id: int, body: bytes) -> None:
        pending = self._pending
        if (pending is None or pending.future.done()
                or transaction_id != pending.transaction_id
                or (pending.unit_id and unit_id != pending.unit_id)):
            self.unmatched_frames += 1
            log.info("Modbus TCP frame answers no pending request; dropped", link=self._name,
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
                return self._framer.decoder.decode(body)
            response.decode(body[1:])
        except (ModbusException, ValueError, IndexError, struct.error):
            return None
        return response

    def _fail_pending(self, exc: Exception) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)
