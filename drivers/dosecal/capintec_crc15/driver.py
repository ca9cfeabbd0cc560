"""Capintec CRC-15 PET: binary poll protocol (as described by community code, not the vendor).

Poll: ASCII `@ABCDEFGHIJK` CR LF. Reply: 11 bytes, no checksum:

    bytes 0-5   isotope name, ASCII, blank padded (`F 18  `, `Tc99m `)
    byte  6     unit index into (?, ?, uCi, mCi, Ci, MBq, GBq)
    bytes 7-10  activity, IEEE 754 float32, little endian

Example: `46 20 31 38 20 20 05 cc 85 35 40` = F-18, 2.836291 MBq.

With no checksum, a corrupted frame is only recognisable when it is implausible (wrong
length, non-printable name, unknown unit index, NaN/inf, activity outside the configured
bounds). The driver rejects all of those; a bit error that yields another plausible number
cannot be detected by any reader of this protocol.
"""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import Sample, SampleBatch
from drivers.dosecal.common import (
    Measurement,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    malformed,
)

POLL = b"@ABCDEFGHIJK\r\n"
FRAME_SIZE = 11
UNITS: tuple[str | None, ...] = (None, None, "uCi", "mCi", "Ci", "MBq", "GBq")
"""Unit byte → unit; indexes 0 and 1 are not identified publicly."""
_PRINTABLE_FIRST, _PRINTABLE_LAST = 0x20, 0x7E


def parse_crc15_reply(frame: bytes) -> Measurement:
    """Decode one reply frame; anything but a plausible 11-byte frame is malformed."""
    raw = frame.hex(" ")
    if len(frame) != FRAME_SIZE:
        what = "no reply" if not frame else f"{len(frame)} bytes"
        return malformed(raw, f"wrong frame length: {what}, expected {FRAME_SIZE}")
    name_field = frame[:6]
    if any(not _PRINTABLE_FIRST <= b <= _PRINTABLE_LAST for b in name_field):
        return malformed(raw, "isotope field is not printable ASCII")
    nuclide = name_field.decode("ascii").strip()
    if not nuclide:
        return malformed(raw, "isotope field is blank")
    index = frame[6]
    unit = UNITS[index] if index < len(UNITS) else None
    if unit is None:
        return malformed(raw, f"unknown unit index {index}")
    (value,) = struct.unpack("<f", frame[7:11])
    if not math.isfinite(value):
        return malformed(raw, "activity is not a finite number")
    # float32 carries ~7 significant digits; do not publish float64 noise beyond them.
    value = float(f"{value:.7g}")
    return Measurement(raw_text=raw, value=value, unit=unit, nuclide=nuclide)


def encode_crc15_reply(nuclide: str, unit: str, value: float) -> bytes:
    """Build a reply frame (used by the simulator and tests)."""
    name = nuclide.encode("ascii")[:6].ljust(6, b" ")
    return name + bytes([UNITS.index(unit)]) + struct.pack("<f", value)


def crc15_name(nuclide: str) -> str:
    """How the CRC-15 spells a nuclide in its 6-byte field: `F-18` → `F 18`, `Tc-99m` → `Tc99m`."""
    symbol, _, mass = nuclide.partition("-")
    return f"{symbol:<2}{mass}"


class CapintecCRC15Config(SerialDeviceConfig):
    """Capintec CRC-15 PET on a serial port or serial device server."""

    type: Literal["capintec_crc15"]
    baudrate: int = Field(default=4800, ge=50, le=4_000_000)
    frame_gap_s: float = Field(
        default=0.05,
        gt=0,
        le=2,
        description="Silence after 11 bytes that ends a frame (longer frames are rejected).",
    )


class CapintecCRC15Driver(SerialDoseCalibratorDriver):
    """Polls the CRC-15 PET every `poll_interval_s`; one `activity` sample per reply."""

    type = "capintec_crc15"
    read_only_commands: ClassVar[frozenset[str]] = frozenset({"@ABCDEFGHIJK"})

    def __init__(self, config: CapintecCRC15Config) -> None:
        super().__init__(config)
        self.capintec = config

    def encode_command(self, command: str) -> bytes:
        """The CRC-15 expects CR LF after a command."""
        return command.encode("ascii") + b"\r\n"

    async def poll_once(self) -> list[Sample]:
        """Send the poll and decode the reply."""
        dropped = await self.transport.discard_input()
        if dropped:
            self.log.debug("dosecal.stale_input_dropped", size=len(dropped), raw=dropped.hex(" "))
        await self.send_command("@ABCDEFGHIJK")
        frame = await self.transport.read_frame(
            FRAME_SIZE, self.cfg.timeout_s, self.capintec.frame_gap_s
        )
        if not frame:
            self.note_failure(f"no reply within {self.cfg.timeout_s:g} s")
            return []
        return [self.to_sample(parse_crc15_reply(frame))]

    def samples(self) -> AsyncIterator[Sample]:
        """Poll until the link fails."""
        return self.poll_loop()

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle until the link fails."""
        return self.poll_batches()
