"""A lean Modbus TCP (MBAP) link for the read function codes 1-4.

pymodbus spends ~150 µs of CPU per request (transaction manager, framer, PDU objects, one
Python int per register); at a 1 ms poll that is most of the agent's cost. This link writes
the 12-byte request itself and hands the driver the response's register bytes as they came,
so a block decodes with one `struct` unpack. RTU (serial or tunnelled over TCP) stays with
pymodbus.

Answers are matched to requests by transaction id: a late answer to an abandoned request is
dropped, never taken for the next one's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
_REQUEST = struct.Struct(">HHHBBHH")  # MBAP + function code, address, count
_MAX_PDU = 253  # Modbus Application Protocol: PDU at most 253 bytes


class LinkClosed(ConnectionError):  # noqa: N818 - a state of the link, like LinkDown
    """The TCP connection is not open (refused, lost, or closed by us)."""


@dataclass(slots=True)
class ReadResponse:
    """A response to a read: what the driver needs from pymodbus' PDU, and the raw bytes."""

    function_code: int
    exception_code: int = 0
    register_bytes: bytes = b""
    bits: list[bool] = field(default_factory=list)

    def isError(self) -> bool:  # noqa: N802 - the name pymodbus' responses use
        """An exception response (function code with the high bit set)."""
        return bool(self.function_code & 0x80)

    @property
    def registers(self) -> list[int]:
        """The registers as integers (only the slow paths need them)."""
        data = self.register_bytes
        return list(struct.unpack(f">{len(data) // 2}H", data))


class _Framing(asyncio.Protocol):
    """Cuts the byte stream into MBAP frames and hands each to the request waiting for it."""

    def __init__(self, link: TcpLink) -> None:
        self.link = link
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a TCP connection
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= _MBAP.size:
            tid, protocol, length, unit = _MBAP.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:  # noqa: PLR2004
                # Not Modbus TCP framing: the stream cannot be trusted any more.
                if self.transport is not None:
                    self.transport.close()
                return
            end = 6 + length
            if len(buffer) < end:
                return
            body = bytes(buffer[_MBAP.size : end])
            del buffer[:end]
            self.link.answer(tid, unit, body)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - reason unused
        self.link.lost(self.transport)


class TcpLink:
    """One Modbus TCP connection; answers matched to requests by transaction id.

    An `asyncio.Protocol`, not streams and a reader task: an answer reaches the waiting
    request in the loop iteration that reads it, and there is no task to own.
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._tid = 0

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection (OSError or TimeoutError when it cannot be opened)."""
        self.close()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s):
            transport, _framing = await loop.create_connection(
                lambda: _Framing(self), self.host, self.port
            )
        self._transport = transport
        return True

    def answer(self, tid: int, unit: int, body: bytes) -> None:
        """A frame arrived: it goes to its request; a late one (request abandoned) is dropped."""
        waiter = self._pending.pop(tid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result((unit, body))

    def lost(self, transport: asyncio.Transport | None) -> None:
        """A connection ended: if it is the current one, every waiting request learns it.

        (The end of a connection already replaced by a newer one changes nothing.)
        """
        if transport is not self._transport:
            return
        self._transport = None
        self._fail_pending()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(LinkClosed("connection lost"))

    async def read(
        self, function_code: int, address: int, count: int, unit_id: int
    ) -> ReadResponse:
        """One read request; `TimeoutError` when no answer came within the timeout."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise LinkClosed("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[tid] = waiter
        try:
            transport.write(_REQUEST.pack(tid, 0, 6, unit_id, function_code, address, count))
            async with asyncio.timeout(self.timeout_s):
                unit, body = await waiter
        finally:
            self._pending.pop(tid, None)
        return _parse(function_code, count, unit_id, unit, body)

    def close(self) -> None:
        """Close the connection (waiting requests fail with `LinkClosed`). Never raises."""
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
        self._fail_pending()


class BadResponse(Exception):  # noqa: N818 - a state of the answer, like NoResponse
    """An answer that does not fit its request (other unit, function or length)."""


def _parse(function_code: int, count: int, unit_id: int, unit: int, body: bytes) -> ReadResponse:
    if unit != unit_id:
        raise BadResponse(f"answer from unit {unit} to a request for unit {unit_id}")
    code = body[0]
    if code & 0x80:
        return ReadResponse(code, exception_code=body[1] if len(body) > 1 else 0)
    if code != function_code or len(body) < 2 or len(body) - 2 < body[1]:  # noqa: PLR2004
        raise BadResponse(f"malformed answer to function {function_code}")
    data = body[2 : 2 + body[1]]
    if function_code in {1, 2}:
        bits = [bool(data[i >> 3] >> (i & 7) & 1) for i in range(min(count, len(data) * 8))]
        return ReadResponse(code, bits=bits)
    return ReadResponse(code, register_bytes=bytes(data))
