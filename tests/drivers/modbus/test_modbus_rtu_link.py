"""The Modbus RTU link on a real pseudo-terminal, against a device that misbehaves on the line.

The test holds the pty's master end and answers each request with bytes of its choosing: a
frame in pieces, noise before a frame, a wrong CRC, another unit's answer, a late answer that
arrives before the next request, an exception response, a hang-up. The link must return only
the answer to the request in flight, count what it drops, never raise into the event loop,
and read the line without a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import struct
import threading
import tty
from collections.abc import AsyncIterator

import pytest
from pymodbus.exceptions import ConnectionException
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from drivers.modbus.rtu_link import RtuLink

pytestmark = pytest.mark.timeout(30)


def rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def registers_pdu(values: list[int]) -> bytes:
    return struct.pack(f">BB{len(values)}H", 3, 2 * len(values), *values)


class Line:
    """The device's end of the pty: reads requests, writes whatever the test says."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)

    async def request(self, timeout: float = 2.0) -> bytes:
        """The next request frame the link sent (8 bytes: a read request)."""
        got = b""
        async with asyncio.timeout(timeout):
            while len(got) < 8:
                try:
                    got += os.read(self.master, 8 - len(got))
                except BlockingIOError:
                    await asyncio.sleep(0.005)
        return got

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        os.close(self.master)


@pytest.fixture
async def line() -> AsyncIterator[Line]:
    device = Line()
    yield device
    with contextlib.suppress(OSError):  # a test hung up already
        os.close(device.master)


async def open_link(line: Line, timeout_s: float = 0.3) -> RtuLink:
    link = RtuLink(timeout_s=timeout_s, port=line.path, serial_settings={"baudrate": 19200})
    assert await link.connect()
    return link


def read_request(unit: int = 1) -> ReadHoldingRegistersRequest:
    return ReadHoldingRegistersRequest(address=0, count=2, dev_id=unit)


async def test_a_frame_in_pieces_after_noise_is_the_answer_and_no_thread_reads(line: Line):
    link = await open_link(line)
    threads = threading.active_count()  # pyserial opened the port on the default executor
    asked = asyncio.create_task(link.execute(read_request()))
    sent = await line.request()
    assert sent == rtu(1, bytes.fromhex("03 0000 0002"))
    frame = rtu(1, registers_pdu([0x41C8, 0x0000]))
    line.send(b"\x00\x01\x03")  # noise on the line before the frame, like a frame's start
    line.send(frame[:3])
    await asyncio.sleep(0.05)
    line.send(frame[3:])
    response = await asked
    assert list(response.registers) == [0x41C8, 0x0000]
    assert threading.active_count() == threads  # the event loop reads the port itself
    link.close()


async def test_wrong_crc_and_another_units_answer_are_dropped_and_counted(line: Line):
    link = await open_link(line)
    asked = asyncio.create_task(link.execute(read_request()))
    await line.request()
    good = rtu(1, registers_pdu([1, 2]))
    line.send(good[:-1] + bytes([good[-1] ^ 0xFF]))  # a bit flipped on the line
    with pytest.raises(TimeoutError):
        await asked

    asked = asyncio.create_task(link.execute(read_request(unit=1)))
    await line.request()
    assert link.malformed == 1  # the bad frame, dropped when the next request went out
    line.send(rtu(2, registers_pdu([7, 7])))  # unit 2 answers a request to unit 1
    with pytest.raises(TimeoutError):
        await asked
    assert link.unmatched_frames == 1
    link.close()


async def test_a_late_answer_before_the_next_request_is_not_taken_for_its_answer(line: Line):
    link = await open_link(line, timeout_s=0.2)
    first = asyncio.create_task(link.execute(read_request()))
    await line.request()
    with pytest.raises(TimeoutError):
        await first
    line.send(rtu(1, registers_pdu([0xDEAD, 0xBEEF])))  # the first request's answer, late
    await asyncio.sleep(0.05)
    second = asyncio.create_task(link.execute(read_request()))
    await line.request()
    line.send(rtu(1, registers_pdu([3, 4])))
    assert list((await second).registers) == [3, 4]
    link.close()


async def test_an_exception_response_is_returned_as_one(line: Line):
    link = await open_link(line)
    asked = asyncio.create_task(link.execute(read_request()))
    await line.request()
    line.send(rtu(1, bytes([0x83, 0x02])))  # illegal data address
    response = await asked
    assert isinstance(response, ExceptionResponse)
    assert response.isError()
    link.close()


async def test_noise_that_never_becomes_a_frame_is_bounded(line: Line):
    link = await open_link(line)
    asked = asyncio.create_task(link.execute(read_request()))
    await line.request()
    line.send(bytes([1, 3, 250]) + b"\x55" * 300)  # a byte count that promises a long frame
    with pytest.raises(TimeoutError):
        await asked
    assert link.malformed >= 1
    assert len(link._buffer) <= 256  # the bound is the point
    link.close()


async def test_a_hang_up_fails_the_request_in_flight_at_once(line: Line):
    link = await open_link(line, timeout_s=5.0)
    asked = asyncio.create_task(link.execute(read_request()))
    await line.request()
    loop = asyncio.get_running_loop()
    started = loop.time()
    line.hang_up()
    with pytest.raises(ConnectionException):
        await asked
    assert loop.time() - started < 1.0
    assert not link.connected
    with pytest.raises(ConnectionException):
        await link.execute(read_request())
