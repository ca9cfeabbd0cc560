"""The serial layer every line instrument shares: line control, framing, code page."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dosecal_harness import supervised
from helpers import wait_for_condition

from drivers.base import DeviceError
from drivers.dosecal.capintec_crc15.driver import CapintecCRC15Config, CapintecCRC15Driver
from drivers.dosecal.serial_line.driver import SerialLineConfig, SerialLineDriver
from drivers.serial.instrument import strip_escapes
from drivers.serial.transport import SerialTransport, take_delimited
from simulators.dosecal import DoseCalibratorSimulator


@contextlib.asynccontextmanager
async def raw_pty() -> AsyncIterator[tuple[int, str]]:
    """A pty: (the instrument's end, the path a driver opens)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_take_delimited_frames_and_noise():
    buf = bytearray(b"xx$SDR1#$O#tail")
    assert take_delimited(buf, b"$", b"#", 64) == (b"xx", b"$SDR1#")
    assert take_delimited(buf, b"$", b"#", 64) == (b"", b"$O#")
    assert take_delimited(buf, b"$", b"#", 64) is None  # no start yet: kept
    assert buf == bytearray(b"tail")
    long = bytearray(b"$" + b"9" * 100)
    skipped, frame = take_delimited(long, b"$", b"#", 16)
    assert (skipped, len(frame)) == (b"", 17)
    assert take_delimited(bytearray(b"abc\x03def\x03"), b"", b"\x03", 64) == (b"", b"abc\x03")


def test_strip_escapes_removes_printer_codes():
    ticket = b"\x1b@\x1b!\x08F-18\x1b!\x00    370.0 MBq\x1dV\x01"
    assert strip_escapes(ticket) == b"F-18    370.0 MBq"
    assert strip_escapes(b"\x1b[1;32mOK\x1b[0m\tx") == b"OK\tx"


async def test_line_control_reaches_an_rfc2217_device_server():
    sim = DoseCalibratorSimulator("capintec_crc15", "rfc2217", noise=False)
    address = await sim.start()
    try:
        config = CapintecCRC15Config(
            id="c", type="capintec_crc15", port=address, poll_interval_s=0.05, timeout_s=0.5,
            frame_gap_s=0.02, dtr=False, rts=False, xonxoff=True,
        )  # fmt: skip
        async with supervised(lambda: CapintecCRC15Driver(config)) as run:
            await wait_for_condition(lambda: len(run.samples) >= 1)
        assert (sim.line.dtr, sim.line.rts, sim.line.xonxoff) == (False, False, True)
    finally:
        await sim.stop()


async def test_terminator_start_delimiter_escapes_and_code_page_over_a_pty():
    """A printer-style stream: ESC/POS codes, STX … ETX frames, cp437 text (µ = 0xE6)."""
    async with raw_pty() as (instrument, path):
        config = SerialLineConfig(
            id="t", type="serial_line", port=path, timeout_s=0.5, activity=False,
            channel="dose_rate", terminator=r"\x03", start_delimiter=r"\x02",
            strip_escapes=True, encoding="cp437",
            pattern=r"^(?P<value>\S+) (?P<unit>\S+)$",
        )  # fmt: skip
        driver = SerialLineDriver(config)
        await driver.connect()
        try:
            os.write(
                instrument, b"noise\x02\x1b@\x1b!\x081.25 \xe6Sv/h\x03\x02\x1b@0.50 \xe6Sv/h\x03"
            )
            samples = driver.samples()
            first = await asyncio.wait_for(anext(samples), 5)
            second = await asyncio.wait_for(anext(samples), 5)
            await samples.aclose()
        finally:
            await driver.close()
    assert (first.channel, first.value, first.unit) == ("dose_rate", 1.25, "µSv/h")
    assert (second.value, second.unit) == (0.5, "µSv/h")
    assert first.quality.value == "good"


def test_bad_settings_are_configuration_errors():
    base = {"id": "t", "type": "serial_line", "port": "/dev/ttyS0", "pattern": "(?P<value>.*)"}
    with pytest.raises(ValueError, match="code page"):
        SerialLineConfig(**base, encoding="no-such-codec")
    with pytest.raises(ValueError, match="escape"):
        SerialLineConfig(**base, terminator="\\x0")


def _thread_switches(name_prefix: str) -> int:
    """Voluntary context switches (sleeps that ended) of the thread named NAME_PREFIX…."""
    thread = next(t for t in threading.enumerate() if t.name.startswith(name_prefix))
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.MULTILINE).group(1))


async def test_a_quiet_port_is_waited_on_without_wakeups_and_close_ends_the_wait():
    """A read with a long deadline sleeps until bytes, its deadline or close(); no polling.

    The event loop waits on the port's descriptor: the port's own thread (it opened the
    port) stays asleep while a read is under way.
    """
    async with raw_pty() as (instrument, path):
        transport = SerialTransport(path, device="quiet", settings={"baudrate": 9600},
                                    timeout_s=1.0)  # fmt: skip
        await transport.open()
        reading = asyncio.create_task(transport.read_line(30.0, 64))
        await wait_for_condition(lambda: any(
            t.name.startswith("serial-quiet") for t in threading.enumerate()
        ))  # fmt: skip
        await asyncio.sleep(0.2)  # the read is under way and waiting
        before = _thread_switches("serial-quiet")
        await asyncio.sleep(1.0)
        # Reads in 50 ms slices woke the thread about 20 times a second.
        assert _thread_switches("serial-quiet") - before <= 2
        os.write(instrument, b"12.5 MBq\r\n")
        assert await asyncio.wait_for(reading, 2) == b"12.5 MBq"
        waiting = asyncio.create_task(transport.read_line(30.0, 64))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await transport.close()
        assert await asyncio.wait_for(waiting, 2) is None
        assert time.monotonic() - started < 1.0


async def test_a_device_server_connection_is_waited_on_and_its_loss_reported():
    """socket:// (a serial device server): lines in pieces, then the server hangs up."""
    pieces: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (piece := await pieces.get()) != b"":
            writer.write(piece)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = SerialTransport(f"socket://127.0.0.1:{port}", device="nport",
                                settings={"baudrate": 9600}, timeout_s=1.0)  # fmt: skip
    try:
        await transport.open()
        reading = asyncio.create_task(transport.read_line(10.0, 64))
        for piece in (b"37", b"0.0 M", b"Bq\r", b"\n"):
            await pieces.put(piece)
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reading, 2) == b"370.0 MBq"
        await pieces.put(b"")  # the device server closes the connection
        with pytest.raises(DeviceError):
            await asyncio.wait_for(transport.read_line(10.0, 64), 3)
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_a_line_that_takes_no_more_bytes_fails_the_write_at_its_deadline():
    """An instrument that stopped reading (flow control held, a hung device server): the
    write ends with a DeviceError after `timeout_s`, and the port still closes at once."""
    async with raw_pty() as (_instrument, path):
        transport = SerialTransport(path, device="stuck", settings={"baudrate": 9600},
                                    timeout_s=0.5)  # fmt: skip
        await transport.open()
        started = time.monotonic()
        with pytest.raises(DeviceError, match="not taken within"):
            await transport.write(b"x" * 1_000_000)  # far beyond the pty's buffer
        assert 0.4 < time.monotonic() - started < 2.0
        started = time.monotonic()
        await transport.close()
        assert time.monotonic() - started < 1.0
        with pytest.raises(DeviceError):
            await transport.write(b"after close")
