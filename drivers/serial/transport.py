"""Serial transport shared by every serial line instrument driver.

One `SerialTransport` per device wraps a pyserial port opened with `serial_for_url`, so the
same code reads a local device (`/dev/ttyUSB0`), a serial device server (`socket://host:port`)
or an RFC 2217 server (`rfc2217://host:port`).

pyserial opens and configures the port; a port with a descriptor (a device, a pty, a device
server's socket) is then read and written by the event loop itself, like a socket: a read waits
for the descriptor to be readable (`add_reader`) until bytes arrive, its deadline passes or
`close()` ends it, so an instrument that is quiet costs no thread and no wake-up, and a poll
costs no hand-over to a thread. pyserial's RFC 2217 client has no descriptor of its own: it is
read in short slices (`_SLICE_S`) on a private single-thread executor, so a device that hangs
there only ever occupies its own thread. Opening and closing also run on that thread (an open
can block on a device server's connect). Every operation has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
    """Deadline-bounded access to one serial port (local or over the network).

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
        self._waiter: asyncio.Future[None] | None = None  # a read or write waiting on _fd
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
            port.reset_input_buffer()
            self._fd = _descriptor(port)
            if self._fd is not None:
                os.set_blocking(self._fd, False)  # read and written by the event loop
            self._serial = port

        # pyserial's own connect timeout for socket:// is 5 s; ours is the configured one.
        await self._run(_open, self.timeout_s + 1.0)

    async def write(self, data: bytes) -> None:
        """Write all of `data` (raises `DeviceError` on a write timeout or a dead link)."""
        port = self._require_open()
        fd = self._fd
        if fd is None:

            def _write() -> None:
                port.write(data)
                port.flush()

            await self._run(_write, self.timeout_s + 1.0)
            return
        deadline = time.monotonic() + self.timeout_s
        rest = memoryview(data)
        while rest:
            try:
                rest = rest[os.write(fd, rest) :]
                continue
            except (BlockingIOError, InterruptedError):
                pass  # the line's buffer is full: wait until it drains
            except OSError as exc:
                raise DeviceError(f"{self.port}: {exc}", device=self.device) from exc
            if not await self._wait_descriptor(fd, deadline, writing=True):
                if self._closing:
                    raise DeviceError("port is closed", device=self.device)
                raise DeviceError(
                    f"{self.port}: write not taken within {self.timeout_s:.1f} s",
                    device=self.device,
                )

    async def discard_input(self) -> bytes:
        """Drop whatever the device sent that nobody asked for (late replies, noise); return it."""
        port = self._require_open()
        dropped = bytes(self._pending)
        self._pending.clear()
        if self._fd is not None:
            while chunk := self._read_descriptor(self._fd):
                dropped += chunk
            return dropped

        def _discard() -> bytes:
            taken = b""
            while waiting := port.in_waiting:
                taken += port.read(waiting)
            return taken

        return dropped + await self._run(_discard, self.timeout_s + 1.0)

    async def read_line(self, timeout_s: float, max_bytes: int) -> bytes | None:
        """The next non-empty line without its terminator (CR, LF or CR LF).

        Returns None when no complete line arrived within `timeout_s` (the partial line is kept
        for the next call, or dropped by `discard_input`). A line that reaches `max_bytes`
        without a terminator is returned as it is, `max_bytes + 1` long, so the caller can
        reject it as over-long instead of buffering noise forever.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            while match := _LINE_END.search(self._pending):
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
            self._pending += await self._arrived(deadline)

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
        while True:
            taken = take_delimited(self._pending, start, end, max_bytes)
            if taken is not None:
                return taken
            if self._closing or time.monotonic() >= deadline:
                return None
            self._pending += await self._arrived(deadline)

    async def read_frame(self, size: int, timeout_s: float, gap_s: float) -> bytes:
        """Read a binary frame expected to be `size` bytes long.

        Collects bytes until `size` have arrived and then `gap_s` passes without another
        byte (so an over-long frame is seen whole), or until `timeout_s` runs out. The caller
        checks the length: shorter means truncated or no reply, longer means wrong length.
        """
        deadline = time.monotonic() + timeout_s
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
            chunk = await self._arrived(until)
            if chunk:
                buf += chunk
                quiet_since = time.monotonic()
        return bytes(buf)

    async def _arrived(self, until: float) -> bytes:
        """What the port holds, else what arrives before `until` (b"" then, or on close()).

        With a descriptor the event loop waits for it to be readable; without one (RFC 2217)
        the port's thread reads one slice.
        """
        port = self._require_open()
        fd = self._fd
        if fd is None:

            def _slice() -> bytes:
                return bytes(port.read(max(1, port.in_waiting)))  # at most _SLICE_S

            return await self._run(_slice, _SLICE_S + self.timeout_s + 1.0)
        data = self._read_descriptor(fd)
        if data:
            return data
        if await self._wait_descriptor(fd, until, writing=False) and not self._closing:
            return self._read_descriptor(fd, readable=True)
        return b""

    def _read_descriptor(self, fd: int, *, readable: bool = False) -> bytes:
        """What the descriptor holds now (b"" if nothing); `DeviceError` on a hang-up.

        A tty in raw mode answers a read of nothing with b"" rather than EAGAIN, so b"" means
        a hang-up only when the descriptor was just reported `readable`.
        """
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:  # EIO: the other end of a pty closed, the adapter pulled
            raise DeviceError(f"{self.port}: {exc}", device=self.device) from exc
        if not data and readable:  # readable and empty: the connection or the device is gone
            raise DeviceError(f"{self.port}: the port hung up", device=self.device)
        return data

    async def _wait_descriptor(self, fd: int, until: float, *, writing: bool) -> bool:
        """Wait until `fd` is readable (writable), `until` passes or close(); True if ready."""
        remaining = until - time.monotonic()
        if remaining <= 0 or self._closing:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if writing:
            watch, unwatch = loop.add_writer, loop.remove_writer
        else:
            watch, unwatch = loop.add_reader, loop.remove_reader
        watch(fd, _set_done, waiter)
        self._waiter = waiter
        try:
            async with asyncio.timeout(remaining):
                await waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
            if self._fd == fd:  # not closed meanwhile
                unwatch(fd)
        return not self._closing

    def _require_open(self) -> serial.SerialBase:
        if self._serial is None or self._closing:
            raise DeviceError(f"{self.port}: port not open", device=self.device)
        return self._serial

    async def close(self) -> None:
        """Close the port and stop the thread. Never raises; safe to call twice."""
        if self._closing:
            return
        self._closing = True
        fd, self._fd = self._fd, None
        if fd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # a read or write waiting ends now

        def _close() -> None:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.close()
                self._serial = None

        loop = asyncio.get_running_loop()
        try:
            # Queued behind an RFC 2217 slice in progress, which ends within _SLICE_S.
            async with asyncio.timeout(self.timeout_s + 1.0):
                await loop.run_in_executor(self._executor, _close)
        except Exception as exc:
            self.log.warning("serial.close_failed", port=self.port, error=str(exc))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _descriptor(port: serial.SerialBase) -> int | None:
    """The port's descriptor for `select` (a device, a pty, a socket), None if it has none."""
    try:
        return int(port.fileno())
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None  # pyserial's RFC 2217 client: no descriptor of its own
