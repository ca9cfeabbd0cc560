"""A lean Modbus TCP (MBAP) link for the read function codes 1-4.

pymodbus spends ~150 µs of CPU per request (transaction manager, framer, PDU objects, one
Python int per register); at a 1 ms poll that is most of the agent's cost. This link writes
the 12-byte request itself and hands the driver the response's register bytes as they came,
so a block decodes with one `struct` unpack. RTU (serial or tunnelled over TCP) stays with
pymodbus.

One reader task per connection (owned by the link, ended by `close()` or by the connection
ending) matches answers to requests by transaction id: a late answer to an abandoned request
is dropped, never taken for the next one's data.
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


class TcpLink:
    """One Modbus TCP connection: requests by transaction id, one reader task."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._tid = 0

    @property
    def connected(self) -> bool:
        """True while the connection is open and its reader runs."""
        return (
            self._writer is not None
            and not self._writer.is_closing()
            and self._reader_task is not None
            and not self._reader_task.done()
        )

    async def connect(self) -> bool:
        """Open the connection (OSError or TimeoutError when it cannot be opened)."""
        self.close()
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        self._reader_task = asyncio.create_task(
            self._read_loop(reader), name=f"modbus-tcp-{self.host}:{self.port}"
        )
        return True

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        """Take answers off the connection until it ends; each goes to its request."""
        try:
            while True:
                head = await reader.readexactly(_MBAP.size)
                tid, protocol, length, unit = _MBAP.unpack(head)
                if protocol != 0 or not 2 <= length <= _MAX_PDU + 1:  # noqa: PLR2004
                    return  # not Modbus TCP framing: the stream cannot be trusted any more
                body = await reader.readexactly(length - 1)
                waiter = self._pending.pop(tid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result((unit, body))
        except (asyncio.IncompleteReadError, OSError):
            return
        finally:
            self._drop_connection()

    def _drop_connection(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(LinkClosed("connection lost"))

    async def read(
        self, function_code: int, address: int, count: int, unit_id: int
    ) -> ReadResponse:
        """One read request; `TimeoutError` when no answer came within the timeout."""
        writer = self._writer
        if writer is None or not self.connected:
            raise LinkClosed("not connected")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[tid] = waiter
        try:
            writer.write(_REQUEST.pack(tid, 0, 6, unit_id, function_code, address, count))
            async with asyncio.timeout(self.timeout_s):
                unit, body = await waiter
        finally:
            self._pending.pop(tid, None)
        return _parse(function_code, count, unit_id, unit, body)

    def close(self) -> None:
        """Close the connection; the reader task ends with it. Idempotent, never raises."""
        task, self._reader_task = self._reader_task, None
        with contextlib.suppress(Exception):
            self._drop_connection()
        if task is not None and not task.done():
            task.cancel()


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
