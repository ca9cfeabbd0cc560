"""Modbus RTU on a serial line or tunnelled over TCP: pymodbus' `FramerRTU`, the bus's link.

The transaction handling is `drivers.modbus.link`'s.
A serial port is opened and configured by pyserial, then read by the event loop itself: its
descriptor is watched like a socket's (`add_reader`), so a quiet line costs no thread and no
wake-up, and a response is decoded as its last byte arrives. RTU frames carry no length and no
transaction id: `FramerRTU` finds a frame's end from its function code and checks its CRC. What
arrived before a request was sent is stale (a late answer, line noise) and is dropped with it;
a frame is looked for at every offset, so noise or a frame with a wrong CRC does not hide the
one after it; bytes that never become a frame are discarded (counted, logged) when the next
request is sent or once they exceed the longest RTU frame. A port that vanishes (a USB adapter
pulled, the other end of a pty closed) fails the request in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from typing import Any

import serial
from pymodbus.exceptions import ModbusException
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.modbus.link import PduLink

MAX_RTU_FRAME = 256  # address, PDU of at most 253 bytes, CRC (Modbus over serial line §2.5.1)


class RtuLink(PduLink):
    """One RTU bus: a serial port (`port`) or a TCP tunnel (`address`), one request at a time."""

    def __init__(
        self,
        *,
        timeout_s: float,
        port: str | None = None,
        address: tuple[str, int] | None = None,
        serial_settings: dict[str, Any] | None = None,
    ) -> None:
        if (port is None) == (address is None):
            raise ValueError("an RTU link needs either a serial port or a TCP address")
        name = f"rtu+tcp://{address[0]}:{address[1]}" if address else f"rtu:{port}"
        super().__init__(name, timeout_s, FramerRTU(DecodePDU(is_server=False)))
        self.port = port
        self.address = address
        self.serial_settings = serial_settings or {}

    async def connect(self) -> bool:
        """Open the port or the tunnel (the caller bounds the wait); True once it is open."""
        loop = asyncio.get_running_loop()
        if self.address is not None:
            host, port = self.address
            await loop.create_connection(lambda: self, host, port)
            return self.connected
        opening = loop.run_in_executor(None, self._open_port)
        try:
            port = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Given up while pyserial was still opening: close the port once it is open.
            opening.add_done_callback(_close_opened)
            raise
        SerialPortTransport(loop, port, self)
        return self.connected

    def _open_port(self) -> serial.Serial:
        assert self.port is not None  # noqa: S101 - connect() checked
        # timeout=0: pyserial only opens and configures; the event loop does the reading.
        return serial.Serial(self.port, timeout=0, write_timeout=0, **self.serial_settings)

    async def execute(self, request: ModbusPDU) -> ModbusPDU:
        """Send `request` (stale input dropped first) and return its response."""
        if self._buffer:  # no answer to anything: a partial frame, a bad CRC, noise
            self._discard("Modbus RTU input that was no answer; discarded")
        return await super().execute(request)

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self._buffer += data
        found = self._find_frame()
        if found is not None:
            unit_id, body = found
            # One request, one response: what else the line carried answers nothing either.
            self._buffer.clear()
            self._answer(unit_id, 0, body)
        elif len(self._buffer) > MAX_RTU_FRAME:
            self._discard("no Modbus RTU frame in the input; discarded")

    def _find_frame(self) -> tuple[int, bytes] | None:
        """(unit id, PDU) of the first whole frame with a good CRC in the buffer, if any.

        RTU frames have no start marker: each offset is tried, so noise before a frame (a
        turnaround glitch) or a frame with a wrong CRC does not hide the frame after it.
        """
        data = bytes(self._buffer)
        decoder = self._framer.decoder
        for start in range(len(data) - FramerRTU.MIN_SIZE + 1):
            tail = data[start:]
            try:
                pdu_class = decoder.lookupPduClass(tail)
                size = pdu_class.calculateRtuFrameSize(tail) if pdu_class else 0
            except (ModbusException, IndexError, ValueError):  # no size from these bytes
                continue
            if not size or size > len(tail):
                continue  # not a frame here, or not whole yet
            if FramerRTU.check_CRC(tail[: size - 2], int.from_bytes(tail[size - 2 : size], "big")):
                return tail[0], tail[1 : size - 2]
        return None


def _close_opened(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class SerialPortTransport(asyncio.Transport):
    """A serial port read and written by the event loop (POSIX descriptors: ttys, ptys).

    Writes that the line cannot take at once wait in a buffer for the descriptor to be
    writable; a read error or a hang-up ends the connection (`connection_lost`).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, port: serial.Serial, protocol: asyncio.Protocol
    ) -> None:
        super().__init__()
        self._loop = loop
        self._port = port
        self._protocol = protocol
        self._fd = port.fileno()
        self._out = bytearray()
        self._closing = False
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._read_ready)
        protocol.connection_made(self)

    def is_closing(self) -> bool:  # noqa: D102
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:  # noqa: D102
        if self._closing:
            return
        if not self._out:
            try:
                written = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError as exc:
                self._lost(exc)
                return
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self._fd, self._write_ready)
        self._out += data

    def close(self) -> None:  # noqa: D102
        if not self._closing:
            self._shut()
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:  # noqa: D102
        self.close()

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: the other end of a pty closed, the adapter pulled
            self._lost(exc)
            return
        if not data:
            self._lost(ConnectionError("serial port hung up"))
            return
        self._protocol.data_received(data)

    def _write_ready(self) -> None:
        try:
            written = os.write(self._fd, self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._out[:written]
        if not self._out:
            self._loop.remove_writer(self._fd)

    def _lost(self, exc: Exception) -> None:
        if not self._closing:
            self._shut()
            self._protocol.connection_lost(exc)

    def _shut(self) -> None:
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._out.clear()
        # Unsent output dropped first: closing a tty otherwise waits for it to drain.
        with contextlib.suppress(OSError, termios.error):
            termios.tcflush(self._fd, termios.TCIOFLUSH)
        with contextlib.suppress(Exception):
            self._port.close()
