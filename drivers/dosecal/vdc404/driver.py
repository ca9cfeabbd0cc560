"""Veenstra/Comecer VDC-404: the instrument pushes `<isotope>: <activity> <unit>` per measurement.

Public facts: 9600 baud 8N1, RS-232 output option set to "PC", no handshake; one line after
each measurement. Not public: the exact isotope spellings and the line terminator, so the
parser accepts any isotope token, a decimal point or comma, an optional exponent, and CR, LF
or CR LF.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field

from drivers.base import Sample, SampleBatch
from drivers.dosecal.common import (
    NUMBER,
    Measurement,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    parse_with_pattern,
)

LINE_PATTERN = re.compile(
    rf"^\s*(?P<nuclide>[A-Za-z0-9][A-Za-z0-9 _-]{{0,11}}?)\s*:\s*(?P<value>{NUMBER})"
    r"\s*(?P<unit>[kMGT]?Bq|[uµμm]?Ci)\s*$"
)
"""`F18: 370.2 MBq`, `Tc-99m: 1,25 GBq`, `I 131: 12.0 mCi`."""


def parse_vdc404_line(line: bytes) -> Measurement:
    """Decode one pushed line (without its terminator)."""
    return parse_with_pattern(line, LINE_PATTERN)


def format_vdc404_line(nuclide: str, value: float, unit: str) -> bytes:
    """A line as the simulator sends it (terminator included)."""
    return f"{nuclide}: {value:.4g} {unit}\r\n".encode("latin-1")


class VDC404Config(SerialDeviceConfig):
    """Veenstra/Comecer VDC-404 pushing lines on a serial port or serial device server."""

    type: Literal["vdc404"]
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    idle_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Silence longer than this is a link failure (unset: silence is normal).",
    )
    max_line_bytes: int = Field(default=128, ge=16, le=4096)


class VDC404Driver(SerialDoseCalibratorDriver):
    """Listens only: it never sends anything to the VDC-404."""

    type = "vdc404"

    def __init__(self, config: VDC404Config) -> None:
        super().__init__(config)
        self.vdc = config

    def samples(self) -> AsyncIterator[Sample]:
        """One `activity` sample per pushed line."""
        return self.push_loop(parse_vdc404_line, self.vdc.idle_timeout_s, self.vdc.max_line_bytes)

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per pushed line."""
        return self.push_batches(
            parse_vdc404_line, self.vdc.idle_timeout_s, self.vdc.max_line_bytes
        )
