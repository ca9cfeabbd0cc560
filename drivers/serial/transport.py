"""Serial transport shared by every serial line instrument driver.

One `SerialTransport` per device wraps a pyserial port opened with `serial_for_url`, so the
same code reads a local device (`/dev/ttyUSB0`), a serial device server (`socket://host:port`)
or an RFC 2217 server (`rfc2217://host:port`).

pyserial is blocking. Each transport owns a private single-thread executor, so a device that
hangs in a read only ever occupies its own thread: it can never starve the event loop, the
default executor, or another device. Every operation has a deadline. A read waits on the
port's descriptor and a wake-up pipe of its own (`select`) until bytes arrive, its deadline
passes or `close()` writes to the pipe: an instrument that is quiet costs no wake-ups. A port
without a descriptor (pyserial's RFC 2217 client) is read in short slices (`_SLICE_S`)
instead, so `close()` takes effect promptly there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import serial
import structlog

from drivers.base import DeviceError

_SLICE_S = 0.05
"""Longest single blocking read of a port without a descriptor; bounds how long close() waits
for a read in progress there."""

_LINE_END = re.compile(rb"\r\n|\r|\n")

T = TypeVar("T")


def take_delimited(
    buf: bytearray, start: bytes, end: bytes, max_bytes: int
) -> tuple[bytes, bytes] | None:
    """Take `(skipped, frame)` off the front of `buf`: see `SerialTransport.read_delimited`."""
    first = 0
    if start:
        first = buf.find(start)
        if first < 0:
            if len(buf) <= max_bytes:
                return None
            skipped = bytes(buf)
            buf.clear()
            return skipped, b""
    last = buf.find(end, first + len(start))
    if last >= 0:
        cut = last + len(end)
    elif len(buf) - first > max_bytes:
        cut = first + max_bytes + 1
    else:
        return None
    skipped, frame = bytes(buf[:first]), bytes(buf[first:cut])
    del buf[:cut]
    return skipped, frame


class SerialTransport:
    """Deadline-bounded, thread-confined access to one serial port (local or over the network).

    Args:
        port: device path or pyserial URL (`socket://`, `rfc2217://`).
        device: device id, for error messages.
        settings: pyserial settings (`baudrate`, `bytesize`, `parity`, `stopbits`, `rtscts`,
            `xonxoff`, and `dtr`/`rts`: the state of those lines from the moment of opening).
        timeout_s: deadline for opening the port and for each write.
    """

    def __init__(
        self,
        port: str,
        *,
        device: str,
        settings: dict[str, Any],
        timeout_s: float,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.port = port
        self.device = device
        self.settings = settings
        self.timeout_s = timeout_s
        self.log = log or structlog.get_logger("isoedge.serial").bind(device=device)
        self._serial: Any = None
        self._pending = bytearray()  # bytes read past the end of the last line/frame
        self._closing = False
        self._fd: int | None = None  # the port's descriptor, when it has one
        self._wake_read, self._wake_write = os.pipe()  # close() interrupts a waiting read
        os.set_blocking(self._wake_write, False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serial-{device}")

    @property
    def is_open(self) -> bool:
        """True once `open()` succeeded and until `close()`."""
        return self._serial is not None and not self._closing

    async def _run(self, func: Callable[[], T], deadline_s: float) -> T:
        """Run `func` in this port's thread; SerialException/OSError/timeout become DeviceError."""
        if self._closing:
            raise DeviceError("port is closed", device=self.device)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, func)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that races with the result, and a supervisor could then never stop this driver.
            async with asyncio.timeout(deadline_s):
                return await future
        except TimeoutError:
            raise DeviceError(
                f"{self.port}: no completion within {deadline_s:.1f} s", device=self.device
            ) from None
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"{self.port}: {exc}", device=self.device) from exc

    async def open(self) -> None:
        """Open the port; `DeviceError` if it does not exist, is busy or does not answer."""
        # pyserial's RFC 2217 client refuses a write timeout (NotImplementedError); its socket
        # keeps the 5 s timeout of the connect, so a write there is bounded all the same.
        write_timeout = None if self.port.startswith("rfc2217://") else self.timeout_s

        settings = dict(self.settings)
        lines = {name: settings.pop(name) for name in ("dtr", "rts") if name in settings}

        def _open() -> None:
            port = serial.serial_for_url(
                self.port,
                timeout=_SLICE_S,
                write_timeout=write_timeout,
                do_not_open=True,
                **settings,
            )
            # DTR/RTS set before opening take effect as the port opens (no glitch on a line
            # that resets an instrument when it is asserted).
            for name, value in lines.items():
                setattr(port, name, value)
            port.open()
            if self._closing:  # close() was called while we were connecting
                port.close()
                return
            self._serial = port
            self._fd = _descriptor(port)
            port.reset_input_buffer()

        # pyserial's own connect timeout for socket:// is 5 s; ours is the configured one.
        await self._run(_open, self.timeout_s + 1.0)

    async def write(self, data: bytes) -> None:
        """Write all of `data` (raises `DeviceError` on a write timeout or a dead link)."""

        def _write() -> None:
            self._require_open().write(data)
            self._serial.flush()

        await self._run(_write, self.timeout_s + 1.0)

    async def discard_input(self) -> bytes:
        """Drop whatever the device sent that nobody asked for (late replies, noise); return it."""

        def _discard() -> bytes:
            port = self._require_open()
            dropped = bytes(self._pending)
            self._pending.clear()
            while True:
                waiting = port.in_waiting
                if not waiting:
                    return dropped
                dropped += port.read(waiting)

        return await self._run(_discard, self.timeout_s + 1.0)

    async def read_line(self, timeout_s: float, max_bytes: int) -> bytes | None:
        """The next non-empty line without its terminator (CR, LF or CR LF).

        Returns None when no complete line arrived within `timeout_s` (the partial line is kept
        for the next call, or dropped by `discard_input`). A line that reaches `max_bytes`
        without a terminator is returned as it is, `max_bytes + 1` long, so the caller can
        reject it as over-long instead of buffering noise forever.
        """
        deadline = time.monotonic() + timeout_s

        def _read() -> bytes | None:
            port = self._require_open()
            while True:
                while True:
                    match = _LINE_END.search(self._pending)
                    if match is None:
                        break
                    line = bytes(self._pending[: match.start()])
                    del self._pending[: match.end()]
                    # A CR LF split across two reads leaves an empty "line": skip it.
                    if line:
                        return line
                if len(self._pending) > max_bytes:
                    line = bytes(self._pending[: max_bytes + 1])
                    del self._pending[: max_bytes + 1]
                    return line
                if self._closing or time.monotonic() >= deadline:
                    return None
                self._pending += self._read_arrived(port, deadline)

        return await self._run(_read, timeout_s + 1.0)

    async def read_delimited(
        self, end: bytes, timeout_s: float, max_bytes: int, *, start: bytes = b""
    ) -> tuple[bytes, bytes] | None:
        """The next frame from `start` (if any) up to and including the `end` byte string.

        Returns `(skipped, frame)`: `skipped` holds the bytes before `start` (noise, or the
        rest of a frame that lost its start). None when no complete frame arrived within
        `timeout_s` (the partial frame is kept for the next call). A frame that reaches
        `max_bytes` without its end is returned as it is, `max_bytes + 1` long.
        """
        deadline = time.monotonic() + timeout_s

        def _read() -> tuple[bytes, bytes] | None:
            port = self._require_open()
            while True:
                taken = take_delimited(self._pending, start, end, max_bytes)
                if taken is not None:
                    return taken
                if self._closing or time.monotonic() >= deadline:
                    return None
                self._pending += self._read_arrived(port, deadline)

        return await self._run(_read, timeout_s + 1.0)

    async def read_frame(self, size: int, timeout_s: float, gap_s: float) -> bytes:
        """Read a binary frame expected to be `size` bytes long.

        Collects bytes until `size` have arrived and then `gap_s` passes without another
        byte (so an over-long frame is seen whole), or until `timeout_s` runs out. The caller
        checks the length: shorter means truncated or no reply, longer means wrong length.
        """
        deadline = time.monotonic() + timeout_s

        def _read() -> bytes:
            port = self._require_open()
            buf = bytearray(self._pending)
            self._pending.clear()
            quiet_since = time.monotonic()
            while not self._closing:
                now = time.monotonic()
                if now >= deadline:
                    break
                if len(buf) >= size and now - quiet_since >= gap_s:
                    break
                if len(buf) > 4 * size + 64:  # a babbling line: stop collecting
                    break
                # Whole: wait out the gap that ends it; not yet: wait for more until the deadline.
                until = min(deadline, quiet_since + gap_s) if len(buf) >= size else deadline
                chunk = self._read_arrived(port, until)
                if chunk:
                    buf += chunk
                    quiet_since = time.monotonic()
            return bytes(buf)

        return await self._run(_read, timeout_s + 1.0)

    def _read_arrived(self, port: serial.SerialBase, until: float) -> bytes:
        """What the port holds, else what arrives before `until` (b"" then, or on close()).

        Runs in the port's thread. With a descriptor the thread sleeps in `select` until a
        byte, the deadline or close(); without one, in one read slice.
        """
        waiting = port.in_waiting
        if waiting:
            return bytes(port.read(waiting))
        if self._fd is None:
            return bytes(port.read(1))  # at most _SLICE_S: the caller checks its deadline
        remaining = until - time.monotonic()
        if remaining <= 0:
            return b""
        ready, _, _ = select.select([self._fd, self._wake_read], [], [], remaining)
        if self._fd in ready and not self._closing:
            # Readable with nothing waiting is a closed connection: read() says so.
            return bytes(port.read(max(1, port.in_waiting)))
        return b""

    def _require_open(self) -> serial.SerialBase:
        if self._serial is None:
            raise serial.SerialException("port not open")
        return self._serial

    async def close(self) -> None:
        """Close the port and stop the thread. Never raises; safe to call twice."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):  # full: a wake-up is already waiting
            os.write(self._wake_write, b"x")

        def _close() -> None:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.close()
                self._serial = None
            self._fd = None
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)

        loop = asyncio.get_running_loop()
        try:
            # Queued behind any read in progress, which the wake-up (or its slice) ends.
            async with asyncio.timeout(self.timeout_s + 1.0):
                await loop.run_in_executor(self._executor, _close)
        except Exception as exc:
            self.log.warning("serial.close_failed", port=self.port, error=str(exc))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _descriptor(port: serial.SerialBase) -> int | None:
    """The port's descriptor for `select` (a device, a pty, a socket), None if it has none."""
    try:
        return int(port.fileno())
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None  # pyserial's RFC 2217 client: no descriptor of its own
