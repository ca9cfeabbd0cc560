"""Veenstra VIK-202 ionisation chamber, read directly with its command set.

Public facts: 9600 baud 8N1; commands end in CR; the chamber acknowledges with `>OK`.
`!R` activity in Bq; `!BON`/`!BOFF` background subtraction on/off; `!Z` autozero and `!A` its
result; `!V` HV battery voltage; `!GQ` chamber current (A); `!GV` version; `!GF` the selected
calibration factor; `!F<n>` selects a calibration factor (e.g. 762 F-18, 236 Tc-99m,
587 Cs-137, 447 I-131; site-specific).

Not public: the exact reply layout. The driver assumes zero or more data lines followed by
the acknowledgement line (`>OK`; any other line starting with `>` is an error), takes the
data line's single number (optionally labelled) as the value, and accepts CR, LF or CR LF.
The chamber knows calibration factors, not nuclides: `calibration_factors` maps the number
read with `!GF` to the nuclide put into each reading (an unmapped factor: no nuclide).

Read-only commands the driver uses: `!R`, `!GF`, `!GQ`, `!V` (and `!GV`, `!A` if asked).
`!BON`, `!BOFF`, `!Z` and `!F<n>` change the chamber's state and are sent only when listed in
both `init_commands` and `allowed_commands`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import DeviceError, Sample, SampleBatch
from drivers.dosecal.common import (
    ACTIVITY_CHANNEL,
    NUMBER,
    Measurement,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    decode_text,
    has_control_chars,
    malformed,
    parse_number,
)

DEFAULT_CALIBRATION_FACTORS: dict[str, str] = {
    "762": "F-18",
    "236": "Tc-99m",
    "587": "Cs-137",
    "447": "I-131",
}
"""The public examples; every site should list its own chamber's factors."""

_DATA_LINE = re.compile(
    rf"\s*(?:[A-Za-z]{{1,8}}\s*[=:]\s*)?(?P<value>{NUMBER})\s*(?:[A-Za-z/]{{1,8}})?\s*"
)
_MAX_DATA_LINES = 4
_STATUS_QUERIES = (("!GQ", "chamber_current", "A"), ("!V", "hv_battery", "V"))


def _joined(lines: tuple[bytes, ...]) -> str:
    """Several reply lines as one raw text."""
    return decode_text(b" | ".join(lines))


def parse_vik202_value(line: bytes, unit: str | None) -> Measurement:
    """A data line holding one number (`3.7020E+08`, `R= 3.70E8 Bq`), read in `unit`.

    The line may carry a short label before and a unit after the number, nothing else.
    """
    text = decode_text(line)
    if has_control_chars(text):
        return malformed(text, "control characters in line")
    match = _DATA_LINE.fullmatch(text)
    if match is None:
        return malformed(text, "reply is not a single number")
    value = parse_number(match.group("value"))
    if value is None:
        return malformed(text, f"value {match.group('value')!r} is not a finite number")
    return Measurement(raw_text=text, value=value, unit=unit)


def parse_vik202_factor(line: bytes) -> int | None:
    """The calibration factor number from a `!GF` data line, or None."""
    text = decode_text(line).strip()
    return int(text) if re.fullmatch(r"\d{1,6}", text) else None


def is_acknowledgement(line: bytes) -> bool | None:
    """True for `>OK`, False for another `>` reply (an error), None for a data line."""
    text = line.strip()
    if not text.startswith(b">"):
        return None
    return text.upper() == b">OK"


@dataclass(frozen=True, slots=True)
class Reply:
    """The data lines of one acknowledged command, or why there are none."""

    lines: tuple[bytes, ...] = ()
    problem: str | None = None


class VIK202Config(SerialDeviceConfig):
    """Veenstra VIK-202 chamber on a serial port or serial device server."""

    type: Literal["vik202"]

    @property
    def channels(self) -> list[str]:
        """`activity`, plus the chamber status when it is polled (`status_interval_s`)."""
        status = [] if self.status_interval_s is None else [c for _q, c, _u in _STATUS_QUERIES]
        return [ACTIVITY_CHANNEL, *status]

    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    calibration_factors: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_CALIBRATION_FACTORS),
        description="Calibration factor number (as `!GF` reports it) → nuclide.",
    )
    read_calibration_factor: bool = Field(
        default=True, description="Ask `!GF` each poll to learn the nuclide (read-only)."
    )
    status_interval_s: float | None = Field(
        default=60.0,
        gt=0,
        description="Seconds between reads of chamber current (`!GQ`) and HV battery (`!V`).",
    )
    max_line_bytes: int = Field(default=64, ge=16, le=1024)


class VIK202Driver(SerialDoseCalibratorDriver):
    """Polls `!R` (and `!GF`): channels `activity` (Bq), `chamber_current` (A), `hv_battery` (V)."""

    type = "vik202"
    read_only_commands: ClassVar[frozenset[str]] = frozenset(
        {"!R", "!GF", "!GQ", "!GV", "!V", "!A"}
    )

    def __init__(self, config: VIK202Config) -> None:
        super().__init__(config)
        self.vik = config
        self._next_status = time.monotonic()

    async def query(self, command: str) -> Reply:
        """Send a command and collect its data lines up to the acknowledgement."""
        await self.send_command(command)
        lines: list[bytes] = []
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problem = f"{command}: no acknowledgement within {self.cfg.timeout_s:g} s"
                return Reply(tuple(lines), problem)
            line = await self.transport.read_line(remaining, self.vik.max_line_bytes)
            if line is None:
                continue
            ack = is_acknowledgement(line)
            if ack is True:
                return Reply(tuple(lines))
            if ack is False:
                return Reply(tuple(lines), f"{command}: error reply {decode_text(line)!r}")
            lines.append(line)
            if len(lines) > _MAX_DATA_LINES or len(line) > self.vik.max_line_bytes:
                return Reply(tuple(lines), f"{command}: reply too long")

    async def run_init_command(self, command: str) -> None:
        """Send an allowed state-changing command (e.g. `!BON`) and require `>OK`."""
        await self.transport.discard_input()
        reply = await self.query(command)
        if reply.problem is not None:
            raise DeviceError(f"init command failed: {reply.problem}", device=self.device_id)
        self.log.info("dosecal.command_sent", command=command)

    async def poll_once(self) -> list[Sample]:
        """`!GF` for the nuclide, `!R` for the activity, and now and then `!GQ` and `!V`."""
        dropped = await self.transport.discard_input()
        if dropped:
            self.log.debug("dosecal.stale_input_dropped", size=len(dropped))
        nuclide: str | None = None
        attrs: dict[str, str] = {}
        if self.vik.read_calibration_factor:
            reply = await self.query("!GF")
            if reply.problem is not None:
                return self._failed(reply)
            factor = parse_vik202_factor(reply.lines[0]) if reply.lines else None
            if factor is None:
                raw = _joined(reply.lines)
                return [self.to_sample(malformed(raw, "unreadable calibration factor"))]
            nuclide = self.vik.calibration_factors.get(str(factor))
            attrs["calibration_factor"] = str(factor)
        reply = await self.query("!R")
        if reply.problem is not None:
            return self._failed(reply)
        if len(reply.lines) != 1:
            problem = f"expected one data line, got {len(reply.lines)}"
            return [self.to_sample(malformed(_joined(reply.lines), problem))]
        measurement = parse_vik202_value(reply.lines[0], "Bq")
        if measurement.ok:
            measurement = Measurement(
                raw_text=measurement.raw_text,
                value=measurement.value,
                unit="Bq",
                nuclide=nuclide,
                attrs=attrs,
            )
        samples = [self.to_sample(measurement)]
        if self.vik.status_interval_s is not None and time.monotonic() >= self._next_status:
            self._next_status = time.monotonic() + self.vik.status_interval_s
            samples += await self._status_samples()
        return samples

    async def _status_samples(self) -> list[Sample]:
        samples: list[Sample] = []
        for command, channel, unit in _STATUS_QUERIES:
            reply = await self.query(command)
            if reply.problem is not None:
                return samples + self._failed(reply)
            if len(reply.lines) != 1:
                problem = f"expected one data line, got {len(reply.lines)}"
                measurement = malformed(_joined(reply.lines), problem)
            else:
                measurement = parse_vik202_value(reply.lines[0], unit)
            samples.append(self.to_sample(measurement, channel, activity=False))
        return samples

    def _failed(self, reply: Reply) -> list[Sample]:
        self.note_failure(reply.problem or "no reply", _joined(reply.lines) or None)
        return []

    def samples(self) -> AsyncIterator[Sample]:
        """Poll until the link fails."""
        return self.poll_loop()

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle until the link fails."""
        return self.poll_batches()
