"""Capintec CRC-25R / CRC-55t(R) PC port (RS-232 or USB CDC), from the instruments' firmware.

Every exchange starts with the PC sending `@`; the calibrator acknowledges `$O#`. Then a
command frame:

    `$` + chr(len + 0x41) + command (len bytes) + checksum + `#`

The checksum is the byte sum of the length character and the command, folded while above
0x7E by subtracting 0x7E, and lifted by 0x26 when below 0x26: it is always 0x26..0x7E, so
never `$` or `#`. There is no CR or LF anywhere.

`R<n>` (read chamber n, 1-8) is answered with 22 bytes:

    0      `$`
    1      chr(18 + 0x41) = `S`
    2-3    `DR` (done, read), or `BR` while the display is frozen
    4      the chamber digit
    5-12   nuclide name (or calibration number), 8 characters, blank padded
    13-18  the displayed number, 6 characters, right aligned
    19     unit digit: `0` over range, 1 µCi, 2 mCi, 3 Ci, 4 kBq, 5 MBq, 6 GBq
    20     checksum over bytes 1-19
    21     `#`

Errors are `$e<code>    #` (8 bytes; the code is a character from `0`).

Only `R<n>` is ever sent: the other commands of the protocol change the instrument's state
(nuclide, chamber, tests) and are refused whatever the configuration says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import DeviceError, Sample, SampleBatch
from drivers.dosecal.common import (
    Measurement,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    malformed,
    parse_number,
)

START, END, HELLO, ACK = b"$", b"#", b"@", b"$O#"
READ_REPLY_SIZE = 22
_LENGTH_OFFSET = 0x41
_CHECKSUM_MAX, _CHECKSUM_MIN = 0x7E, 0x26
_MAX_FRAME = 64
UNITS: dict[str, str] = {"1": "uCi", "2": "mCi", "3": "Ci", "4": "kBq", "5": "MBq", "6": "GBq"}
"""Unit digit → unit (the firmware's enum; `0` is over range)."""
OVER_RANGE = "0"
ERRORS: dict[str, str] = {
    "0": "receive error",
    "1": "checksum error (the calibrator got a damaged command)",
    "2": "command error (unknown command)",
    "3": "length error",
    "4": "chamber error (no such chamber)",
    "5": "isotope error",
    "6": "not on the measurement screen",
    "7": "no beta measurement",
    "8": "no wipe measurement",
    "9": "no test ready",
    ":": "no end character",
    "I": "no key",
}
"""The firmware's PC error codes (the wipe-test codes `;`…`H` are not used by reads)."""


def checksum(data: bytes) -> int:
    """The PC-port checksum of the length character and command/payload bytes."""
    total = sum(data)
    while total > _CHECKSUM_MAX:
        total -= _CHECKSUM_MAX
    if total < _CHECKSUM_MIN:
        total += _CHECKSUM_MIN
    return total


def encode_command(command: str) -> bytes:
    """`R1` → `$CR1` + checksum + `#`."""
    body = bytes([len(command) + _LENGTH_OFFSET]) + command.encode("ascii")
    return START + body + bytes([checksum(body)]) + END


def encode_frame(payload: bytes) -> bytes:
    """A reply frame around `payload` (the simulator and tests)."""
    body = bytes([len(payload) + _LENGTH_OFFSET]) + payload
    return START + body + bytes([checksum(body)]) + END


def encode_error(code: str) -> bytes:
    """`$e<code>    #`, as the firmware sends it."""
    return START + b"e" + code.encode("latin-1")[:1] + b"    " + END


def check_frame(frame: bytes) -> str | None:
    """Why a `$`…`#` frame is not well formed (length character, checksum), or None."""
    if len(frame) < 4 or frame[:1] != START or frame[-1:] != END:  # noqa: PLR2004
        return "not a $…# frame"
    length = frame[1] - _LENGTH_OFFSET
    if length < 0 or len(frame) != length + 4:
        return f"length character says {length} bytes, frame has {len(frame) - 4}"
    if checksum(frame[1 : 2 + length]) != frame[2 + length]:
        return (
            f"checksum mismatch: got 0x{frame[2 + length]:02x}, "
            f"computed 0x{checksum(frame[1 : 2 + length]):02x}"
        )
    return None


def parse_error(frame: bytes) -> str | None:
    """The named error of a `$e<code>    #` frame, or None when it is not one."""
    if len(frame) >= 4 and frame[:2] == b"$e" and frame[-1:] == END:  # noqa: PLR2004
        code = frame[2:3].decode("latin-1")
        return f"instrument error {code!r}: {ERRORS.get(code, 'unknown code')}"
    return None


def _frame_problem(frame: bytes, chamber: int) -> str | None:
    """Why a frame is not a well-formed read reply for `chamber`, or None."""
    error = parse_error(frame)
    if error is not None:
        return error
    if len(frame) != READ_REPLY_SIZE:
        return f"wrong frame length: {len(frame)} bytes, expected 22"
    problem = check_frame(frame)
    if problem is not None:
        return problem
    status = frame[2:4]
    if status not in (b"DR", b"BR"):
        return f"not a read reply: {status.decode('latin-1')!r}"
    digit = frame[4:5].decode("latin-1")
    if digit != str(chamber):
        return f"reply for chamber {digit!r}, asked for {chamber}"
    return None


def parse_read_reply(frame: bytes, chamber: int) -> Measurement:
    """Decode the 22-byte answer to `R<chamber>`; anything else is malformed.

    Attributes: `chamber`, `status` (`done`, or `frozen` for `BR`), `unit_digit`.
    """
    raw = frame.decode("latin-1")
    problem = _frame_problem(frame, chamber)
    if problem is not None:
        return malformed(raw, problem)
    frozen = frame[2:4] == b"BR"
    name = frame[5:13].decode("latin-1").strip() or None
    number = frame[13:19].decode("latin-1")
    unit_digit = frame[19:20].decode("latin-1")
    attrs = {"chamber": chamber, "status": "frozen" if frozen else "done", "unit_digit": unit_digit}
    unit = UNITS.get(unit_digit)
    value = parse_number(number)
    if unit_digit == OVER_RANGE:
        problem = "over range (unit digit 0): the display shows no valid reading"
    elif unit is None:
        problem = f"unknown unit digit {unit_digit!r}"
    elif value is None:
        problem = f"activity field {number!r} is not a number"
    if problem is not None:
        return Measurement(raw_text=raw, nuclide=name, reason=problem, attrs=attrs)
    caution = "display frozen (BR): a held reading, the calibrator is busy" if frozen else None
    return Measurement(
        raw_text=raw, value=value, unit=unit, nuclide=name, attrs=attrs, caution=caution
    )


class CapintecPCPortConfig(SerialDeviceConfig):
    """A Capintec CRC-25R / CRC-55t(R) PC port on a serial port, USB CDC or device server."""

    type: Literal["capintec_pcport"]
    chamber: int = Field(default=1, ge=1, le=8, description="Chamber to read (`R<n>`).")
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)


class CapintecPCPortDriver(SerialDoseCalibratorDriver):
    """Polls `R<chamber>` every `poll_interval_s`, each behind the `@` → `$O#` handshake."""

    type = "capintec_pcport"
    read_only_commands: ClassVar[frozenset[str]] = frozenset(f"R{n}" for n in range(1, 9))

    def __init__(self, config: CapintecPCPortConfig) -> None:
        super().__init__(config)
        self.pcport = config

    def check_command(self, command: str) -> None:
        """Only read commands, whatever `allowed_commands` says."""
        if command.strip().upper() not in self.read_only_commands:
            raise DeviceError(
                f"refusing to send {command!r}: this driver only reads (R1..R8)",
                device=self.device_id,
            )

    def encode_command(self, command: str) -> bytes:
        """`$` + length + command + checksum + `#`."""
        return encode_command(command)

    async def _frame(self) -> tuple[bytes, bytes] | None:
        return await self.transport.read_delimited(
            END, self.cfg.timeout_s, _MAX_FRAME, start=START
        )

    async def handshake(self) -> str | None:
        """`@` → `$O#`; None when acknowledged, else what went wrong."""
        await self.transport.write(HELLO)
        taken = await self._frame()
        if taken is None:
            return (
                f"no acknowledgement of @ within {self.cfg.timeout_s:g} s "
                "(is the PC port enabled in the calibrator's setup?)"
            )
        _skipped, frame = taken
        if frame != ACK:
            error = parse_error(frame)
            return error or f"expected $O# after @, got {frame.decode('latin-1')!r}"
        return None

    async def poll_once(self) -> list[Sample]:
        """Handshake, `R<n>`, the 22-byte reply (checksum verified)."""
        dropped = await self.transport.discard_input()
        if dropped:
            self.note_failure(
                f"unexpected bytes between polls: {dropped[:32]!r}", dropped.decode("latin-1")
            )
        problem = await self.handshake()
        if problem is not None:
            self.note_failure(problem)
            return []
        command = f"R{self.pcport.chamber}"
        await self.send_command(command)
        taken = await self._frame()
        if taken is None:
            self.note_failure(f"{command}: no complete reply within {self.cfg.timeout_s:g} s")
            return []
        skipped, frame = taken
        if skipped:
            self.log.debug("dosecal.noise_skipped", raw=skipped.decode("latin-1"))
        return [self.to_sample(parse_read_reply(frame, self.pcport.chamber))]

    def samples(self) -> AsyncIterator[Sample]:
        """Poll until the link fails."""
        return self.poll_loop()

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle until the link fails."""
        return self.poll_batches()
