"""Modbus TCP on one socket: pymodbus' `FramerSocket` under the bus's own transaction handling.

See `drivers.modbus.link` for why the bus does not use pymodbus' client. Inbound bytes are
hostile until the framer accepts them: a frame whose protocol id is not 0 or whose length
cannot be a Modbus PDU empties the buffer (counted, logged), a frame with another transaction id
or unit (a late answer to an abandoned request) is dropped and counted.
"""

from __future__ import annotations

import asyncio

from pymodbus.framer.socket import FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.modbus.link import PduLink

_MBAP_HEADER = 7  # transaction id, protocol id, length, unit id
_MIN_LENGTH_FIELD = 2  # unit id + function code
_MAX_LENGTH_FIELD = 254  # unit id + a PDU of at most 253 bytes (Modbus application protocol §4.1)


class TcpLink(PduLink):
    """One Modbus TCP connection with at most one request in flight."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        framer = FramerSocket(DecodePDU(is_server=False))
        super().__init__(f"tcp://{host}:{port}", timeout_s, framer)
        self.host = host
        self.port = port
        self._last_transaction_id = 0

    async def connect(self) -> bool:
        """Open the connection (the caller bounds the wait); True once it is open."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.host, self.port)
        return self.connected

    def _next_transaction_id(self) -> int:
        self._last_transaction_id = self._last_transaction_id % 0xFFFF + 1
        return self._last_transaction_id

    def data_received(self, data: bytes) -> None:  # noqa: D102
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _MBAP_HEADER:
            length = int.from_bytes(buffer[4:6], "big")
            if buffer[2:4] != b"\x00\x00" or not _MIN_LENGTH_FIELD <= length <= _MAX_LENGTH_FIELD:
                self._discard("not a Modbus TCP frame; input discarded")
                return
            used, unit_id, transaction_id, body = self._framer.decode(bytes(buffer))
            if not used:
                return  # the rest of the frame is still on its way
            del buffer[:used]
            self._answer(unit_id, transaction_id, body)
