"""Capintec CRC-15 PET: binary poll protocol, plus the Print key's CSV line on the same port.

Poll: ASCII `@ABCDEFGHIJK` CR LF. Reply: 11 bytes, no checksum:

    bytes 0-5   isotope name, ASCII, blank padded (`F 18  `, `Tc99m `)
    byte  6     unit byte, Capintec's firmware enum: 1 µCi, 2 mCi, 3 Ci, 4 kBq, 5 MBq, 6 GBq
                (0 = no unit); configurable as `unit_map`
    bytes 7-10  activity, IEEE 754 float32, little endian

Example (captured): `46 20 31 38 20 20 05 cc 85 35 40` = F-18, 2.836291 MBq.

Only byte 5 = MBq has captured frames behind it in public; the other unit bytes follow the
vendor's firmware enum and a second public CRC-15R reader (1 µCi, 2 mCi, 3 Ci). A unit byte
the site has not confirmed at commissioning (`confirmed_units`) is published `uncertain`
with the reason, never `good`: a wrong unit is a thousandfold error in a patient dose.

The Print key sends a CSV line unasked on the same port
(`F 18  ,4,2,849790,390,047309,22.07.2013,10:21:26` CR LF). It is recognised wherever it
falls (between polls, or in the middle of a reply's bytes), taken out of the byte stream so
the next frame is read whole, and published as an operator event on channel `print`.

With no checksum, a corrupted frame is only recognisable when it is implausible (wrong
length, non-printable name, unknown unit byte, NaN/inf, activity outside the configured
bounds). The driver rejects all of those; a bit error that yields another plausible number
cannot be detected by any reader of this protocol.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import AsyncIterator, Mapping
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit
from drivers.base import Sample, SampleBatch, SampleKind
from drivers.dosecal.common import (
    ACTIVITY_CHANNEL,
    Measurement,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    malformed,
)

POLL = b"@ABCDEFGHIJK\r\n"
FRAME_SIZE = 11
FIRMWARE_UNITS: dict[int, str] = {1: "uCi", 2: "mCi", 3: "Ci", 4: "kBq", 5: "MBq", 6: "GBq"}
"""Capintec's firmware enum for its calibrators (`NO_UNIT, UCI, MCI, CI, KBQ, MBQ, GBQ`)."""
CAPTURED_UNITS: dict[int, str] = {5: "public captured frames: byte 5 = MBq"}
"""Unit bytes with captured frames behind them in public evidence (the default confirmation)."""
PRINT_CHANNEL = "print"
_PRINTABLE_FIRST, _PRINTABLE_LAST = 0x20, 0x7E
# The Print key's line: the 6-character name field, then comma-separated printable fields,
# ended by CR LF (CR or LF alone accepted). Anchored on the 6-character name so that the
# printable tail of a binary frame just before it is never taken into the line.
_FIELD = rb"[\x20-\x2b\x2d-\x7e]"  # printable ASCII but the comma
PRINT_LINE = re.compile(rb"%s{6}(?:,%s{0,24}){3,12}(?:\r\n|\r|\n)" % (_FIELD, _FIELD))
_PRINT_FIELDS = ("name", "field1", "field2", "field3", "field4", "field5", "date", "time")


def parse_crc15_reply(frame: bytes, unit_map: Mapping[int, str] | None = None) -> Measurement:
    """Decode one reply frame; anything but a plausible 11-byte frame is malformed.

    `unit_map` is the unit byte → unit table (default: the firmware enum). The unit byte is
    kept as the attribute `unit_byte`.
    """
    units = FIRMWARE_UNITS if unit_map is None else unit_map
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
    unit = units.get(index)
    if unit is None:
        return malformed(raw, f"unknown unit byte {index}")
    (value,) = struct.unpack("<f", frame[7:11])
    if not math.isfinite(value):
        return malformed(raw, "activity is not a finite number")
    # float32 carries ~7 significant digits; do not publish float64 noise beyond them.
    value = float(f"{value:.7g}")
    return Measurement(
        raw_text=raw, value=value, unit=unit, nuclide=nuclide, attrs={"unit_byte": index}
    )


def encode_crc15_reply(nuclide: str, unit: str, value: float) -> bytes:
    """Build a reply frame with the firmware enum's unit byte (simulator and tests)."""
    by_unit = {name: index for index, name in FIRMWARE_UNITS.items()}
    name = nuclide.encode("ascii")[:6].ljust(6, b" ")
    return name + bytes([by_unit[unit]]) + struct.pack("<f", value)


def crc15_name(nuclide: str) -> str:
    """How the CRC-15 spells a nuclide in its 6-byte field: `F-18` → `F 18`, `Tc-99m` → `Tc99m`."""
    symbol, _, mass = nuclide.partition("-")
    return f"{symbol:<2}{mass}"


def split_print_lines(data: bytes) -> tuple[bytes, list[bytes]]:
    """Take the Print key's CSV lines out of a byte stream: (the rest, the lines without CR LF)."""
    lines = [m.group(0).rstrip(b"\r\n") for m in PRINT_LINE.finditer(data)]
    if not lines:
        return data, []
    return PRINT_LINE.sub(b"", data), lines


def print_line_fields(line: bytes) -> dict[str, str]:
    """The print line's fields by position: `name`, `field1` … `field5`, `date`, `time`.

    Their meaning beyond name, date and time is not public; other counts: `fieldN`.
    """
    parts = line.decode("ascii").split(",")
    names = list(_PRINT_FIELDS) if len(parts) == len(_PRINT_FIELDS) else []
    return {
        (names[i] if names else ("name" if i == 0 else f"field{i}")): part.strip()
        for i, part in enumerate(parts)
    }


class CapintecCRC15Config(SerialDeviceConfig):
    """Capintec CRC-15 PET on a serial port or serial device server."""

    type: Literal["capintec_crc15"]

    @property
    def channels(self) -> list[str]:
        """`activity`, and `print` (operator events from the Print key)."""
        return [ACTIVITY_CHANNEL, PRINT_CHANNEL]

    baudrate: int = Field(default=4800, ge=50, le=4_000_000)
    frame_gap_s: float = Field(
        default=0.05,
        gt=0,
        le=2,
        description="Silence after 11 bytes that ends a frame (longer frames are rejected).",
    )
    unit_map: dict[int, str] = Field(
        default_factory=lambda: dict(FIRMWARE_UNITS),
        description="Unit byte → unit. Default: Capintec's firmware enum "
        "(1 uCi, 2 mCi, 3 Ci, 4 kBq, 5 MBq, 6 GBq).",
    )
    confirmed_units: dict[int, str] = Field(
        default_factory=lambda: dict(CAPTURED_UNITS),
        description="Unit bytes whose meaning is confirmed, each with its commissioning "
        "record (who, when, display against reading). Others are published `uncertain`.",
    )

    @model_validator(mode="after")
    def _check_units(self) -> CapintecCRC15Config:
        for index, unit in self.unit_map.items():
            if not 0 <= index <= 255:  # noqa: PLR2004 - a byte
                raise ValueError(f"unit_map: {index} is not a byte value")
            if canonical_unit(unit) not in ACTIVITY_TO_MBQ:
                raise ValueError(f"unit_map: {unit!r} (byte {index}) is not an activity unit")
        for index, record in self.confirmed_units.items():
            if index not in self.unit_map:
                raise ValueError(f"confirmed_units: byte {index} is not in unit_map")
            if not record.strip():
                raise ValueError(
                    f"confirmed_units: byte {index} needs its commissioning record "
                    "(who, when, display against reading)"
                )
        return self


class CapintecCRC15Driver(SerialDoseCalibratorDriver):
    """Polls the CRC-15 PET every `poll_interval_s`: `activity` per reply, `print` events.

    Each Print key line becomes an event on channel `print`.
    """

    type = "capintec_crc15"
    read_only_commands: ClassVar[frozenset[str]] = frozenset({"@ABCDEFGHIJK"})

    def __init__(self, config: CapintecCRC15Config) -> None:
        super().__init__(config)
        self.capintec = config

    def encode_command(self, command: str) -> bytes:
        """The CRC-15 expects CR LF after a command."""
        return command.encode("ascii") + b"\r\n"

    def print_event(self, line: bytes) -> Sample:
        """The operator pressed Print: an event with the line and its fields."""
        text = line.decode("ascii")
        fields = print_line_fields(line)
        self.log.info("dosecal.print_line", line=text)
        return self.sample(
            PRINT_CHANNEL,
            text,
            None,
            kind=SampleKind.EVENT,
            raw_text=text,
            nuclide=fields.get("name") or None,
            attrs={"event": "print", **fields},
        )

    def reading(self, frame: bytes) -> Sample:
        """A reply frame as a sample: good, `uncertain` (unit byte not confirmed) or bad."""
        measurement = parse_crc15_reply(frame, self.capintec.unit_map)
        index = measurement.attrs.get("unit_byte")
        if measurement.ok and index not in self.capintec.confirmed_units:
            measurement = Measurement(
                raw_text=measurement.raw_text,
                value=measurement.value,
                unit=measurement.unit,
                nuclide=measurement.nuclide,
                attrs=measurement.attrs,
                caution=f"unit byte {index} read as {measurement.unit} (unit_map) but not "
                "confirmed at this site: compare the display with this reading and record it "
                "in confirmed_units",
            )
        return self.to_sample(measurement)

    async def poll_once(self) -> list[Sample]:
        """Send the poll and decode the reply; Print key lines become events."""
        samples: list[Sample] = []
        dropped = await self.transport.discard_input()
        if dropped:
            rest, lines = split_print_lines(dropped)
            samples += [self.print_event(line) for line in lines]
            if rest:
                self.log.debug("dosecal.stale_input_dropped", size=len(rest), raw=rest.hex(" "))
        await self.send_command("@ABCDEFGHIJK")
        data = await self.transport.read_frame(
            FRAME_SIZE, self.cfg.timeout_s, self.capintec.frame_gap_s
        )
        frame, lines = split_print_lines(data)
        samples += [self.print_event(line) for line in lines]
        if not frame:
            self.note_failure(f"no reply within {self.cfg.timeout_s:g} s")
            return samples
        return [*samples, self.reading(frame)]

    def samples(self) -> AsyncIterator[Sample]:
        """Poll until the link fails."""
        return self.poll_loop()

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle until the link fails."""
        return self.poll_batches()
