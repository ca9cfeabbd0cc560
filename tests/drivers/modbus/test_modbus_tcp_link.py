"""The Modbus TCP link against a device that misbehaves on the wire.

A scripted TCP server answers each request with bytes chosen by the test: split frames, late
answers to an abandoned transaction, another unit's answer, a frame that is not Modbus TCP,
exception responses, a dropped connection. The link must return only the answer to the request
in flight, count what it drops, and never raise into the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any, Self

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from drivers.modbus.bus import LinkDown, ModbusBus, NoResponse
from drivers.modbus.points import Table
from drivers.modbus.tcp_link import TcpLink

pytestmark = pytest.mark.timeout(30)

Reply = Callable[[int, int, bytes], list[bytes | float]]  # tid, unit, PDU -> chunks or pauses


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def registers_pdu(values: list[int]) -> bytes:
    return struct.pack(f">BB{len(values)}H", 3, 2 * len(values), *values)


class ScriptedDevice:
    """A TCP server that reads Modbus TCP requests and answers with `reply`'s chunks."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[int, int, bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.requests.append((tid, unit, pdu))
                for chunk in self.reply(tid, unit, pdu):
                    if isinstance(chunk, float):
                        await asyncio.sleep(chunk)
                    elif chunk == b"close":
                        writer.close()
                        return
                    else:
                        writer.write(chunk)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def connected_link(device: ScriptedDevice, timeout_s: float = 0.3) -> TcpLink:
    link = TcpLink("127.0.0.1", device.port, timeout_s)
    assert await link.connect()
    return link


def request(unit: int = 1) -> ReadHoldingRegistersRequest:
    return ReadHoldingRegistersRequest(address=0, count=2, dev_id=unit)


async def test_a_frame_split_across_segments_is_reassembled():
    def reply(tid: int, unit: int, _: bytes) -> list[bytes | float]:
        frame = mbap(tid, unit, registers_pdu([0x41C8, 0x0000]))
        return [frame[:5], 0.05, frame[5:9], 0.05, frame[9:]]

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device)
        response = await link.execute(request())
        assert list(response.registers) == [0x41C8, 0x0000]
        assert (link.unmatched_frames, link.malformed) == (0, 0)
        link.close()


async def test_a_late_answer_to_another_transaction_never_passes_for_this_one():
    def reply(tid: int, unit: int, _: bytes) -> list[bytes | float]:
        stale = mbap((tid - 1) or 0xFFFF, unit, registers_pdu([9, 9]))
        return [stale + mbap(tid, unit, registers_pdu([1, 2]))]

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device)
        assert list((await link.execute(request())).registers) == [1, 2]
        assert list((await link.execute(request())).registers) == [1, 2]
        assert link.unmatched_frames == 2
        link.close()


async def test_another_units_answer_is_dropped_and_the_request_times_out():
    def reply(tid: int, unit: int, _: bytes) -> list[bytes | float]:
        return [mbap(tid, unit + 1, registers_pdu([7, 7]))]

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device)
        with pytest.raises(TimeoutError):
            await link.execute(request(unit=5))
        assert link.unmatched_frames == 1
        assert link.connected
        link.close()


async def test_bytes_that_are_not_modbus_tcp_are_discarded_and_the_link_recovers():
    replies = iter([
        [mbap(1, 1, registers_pdu([1, 2]), protocol=0x1234)],  # wrong protocol id
        [b"\x00\x02\x00\x00\xff\xff\x01" + b"\x00" * 40],  # a length no PDU can have
        None,  # then a well-behaved answer
    ])

    def reply(tid: int, unit: int, _: bytes) -> list[bytes | float]:
        return next(replies) or [mbap(tid, unit, registers_pdu([3, 4]))]

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device)
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await link.execute(request())
        assert link.malformed == 2
        assert list((await link.execute(request())).registers) == [3, 4]
        link.close()


async def test_an_exception_response_and_an_undecodable_one():
    def reply(tid: int, unit: int, pdu: bytes) -> list[bytes | float]:
        if pdu[2:4] == b"\x00\x00":  # address 0: illegal data address
            return [mbap(tid, unit, b"\x83\x02")]
        return [mbap(tid, unit, b"\x03\x09\x00")]  # byte count beyond the frame

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device)
        response = await link.execute(request())
        assert response.isError() and response.exception_code == 2
        with pytest.raises(ModbusIOException, match="undecodable"):
            await link.execute(ReadHoldingRegistersRequest(address=1, count=2, dev_id=1))
        link.close()


async def test_a_dropped_connection_fails_the_request_at_once_and_the_bus_says_link_down():
    def reply(*_: Any) -> list[bytes | float]:
        return [b"close"]

    async with ScriptedDevice(reply) as device:
        link = await connected_link(device, timeout_s=5.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectionException):
            await link.execute(request())
        assert loop.time() - started < 1.0  # the link failed; no 5 s timeout was waited out
        assert not link.connected

        bus = ModbusBus("scripted", await connected_link(device, timeout_s=5.0), 5.0)
        with pytest.raises(LinkDown):
            await bus.read(Table.HOLDING, 0, 2, 1)
        with pytest.raises(LinkDown, match="not connected"):
            await bus.read(Table.HOLDING, 0, 2, 1)


async def test_the_bus_refuses_an_answer_with_fewer_registers_than_asked():
    def reply(tid: int, unit: int, _: bytes) -> list[bytes | float]:
        return [mbap(tid, unit, registers_pdu([1]))]

    async with ScriptedDevice(reply) as device:
        bus = ModbusBus("scripted", await connected_link(device), 0.3)
        with pytest.raises(NoResponse, match="1 of 2"):
            await bus.read(Table.HOLDING, 0, 2, 1)
        bus.close()
