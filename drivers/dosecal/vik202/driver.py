"""Veenstra VIK-202 ionisation chamber, read directly with its command set.

Public facts: 9600 baud 8N1; commands end in CR. Public working code (a 2024/25 program that
drives the chamber directly) shows every reply as one line: `>` + payload + CR.

- Commands without data (`!BOFF`, `!BON`, `!F<n>`, `!Z`) answer `>OK`.
- Commands with data answer `>` + the value and nothing else (no `>OK` after it):
  `!R` → `>370200000` (activity in Bq), `!GF` → `>762` (the selected calibration factor).

`!V` HV battery voltage, `!GQ` chamber current (A), `!GV` version and `!A` the autozero
result are read the same way (their payload is taken as one number; only `!R` and `!GF`
have published byte strings). A reply that is not `>` + one number for a data command, or
not `>OK` for the others, is an error reply (`bad` / a failed poll).

The chamber knows calibration factors, not nuclides: `calibration_factors` maps the number
read with `!GF` to the nuclide put into each reading (an unmapped factor: no nuclide).
Factors seen in public code: 762 F-18, 236 Tc-99m, 587 Cs-137, 447 I-131, 618 I-123,
287 Ga-67, 676 In-111, 902 Y-90, 552 Tl-201 (site-specific: check the chamber's certificate).

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
    normalize_command,
    parse_number,
)

DEFAULT_CALIBRATION_FACTORS: dict[str, str] = {
    "762": "F-18",
    "236": "Tc-99m",
    "587": "Cs-137",
    "447": "I-131",
    "618": "I-123",
    "287": "Ga-67",
    "676": "In-111",
    "902": "Y-90",
    "552": "Tl-201",
}
"""The factors seen in public code; every site should list its own chamber's factors."""

_DATA_LINE = re.compile(rf"\s*(?P<value>{NUMBER})\s*")
DATA_COMMANDS = frozenset({"!R", "!GF", "!GQ", "!V", "!GV", "!A"})
"""Commands answered with `>` + a value; every other command answers `>OK`."""
_STATUS_QUERIES = (("!GQ", "chamber_current", "A"), ("!V", "hv_battery", "V"))


def _joined(lines: tuple[bytes, ...]) -> str:
    """Several reply lines as one raw text."""
    return decode_text(b" | ".join(lines))


def parse_vik202_value(line: bytes, unit: str | None) -> Measurement:
    """A reply holding one number (`>370200000`, or its payload `370200000`), read in `unit`.

    The raw text is the reply as received, `>` included.
    """
    text = decode_text(line)
    payload = text.removeprefix(">")
    if has_control_chars(text):
        return malformed(text, "control characters in line")
    match = _DATA_LINE.fullmatch(payload)
    if match is None:
        return malformed(text, "reply is not a single number")
    value = parse_number(match.group("value"))
    if value is None:
        return malformed(text, f"value {match.group('value')!r} is not a finite number")
    return Measurement(raw_text=text, value=value, unit=unit)


def parse_vik202_factor(line: bytes) -> int | None:
    """The calibration factor number from a `!GF` reply (`>762`), or None."""
    text = decode_text(line).strip().removeprefix(">")
    return int(text) if re.fullmatch(r"\d{1,6}", text) else None


def split_reply(line: bytes) -> bytes | None:
    """The payload of a reply line (`>370200000` → `370200000`, `>OK` → `OK`).

    None when the line does not start with `>` (not a reply of this protocol).
    """
    text = line.strip()
    return text[1:] if text.startswith(b">") else None


def reply_problem(command: str, line: bytes) -> str | None:
    """What is wrong with a reply line to `command`, or None.

    A data command needs `>` + a value, any other command `>OK`.
    """
    payload = split_reply(line)
    if payload is None:
        return f"{command}: not a reply line {decode_text(line)!r}"
    is_ok = payload.upper() == b"OK"
    if normalize_command(command) in DATA_COMMANDS:
        if is_ok or not payload:
            return f"{command}: reply {decode_text(line)!r} carries no value"
        return None
    return None if is_ok else f"{command}: error reply {decode_text(line)!r}"


@dataclass(frozen=True, slots=True)
class Reply:
    """The payload of one reply (`lines`: none for `>OK`, one for data), or why there is none."""

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
        """Send a command and read its one reply line: `>` + value, or `>OK`."""
        await self.send_command(command)
        line = await self.transport.read_line(self.cfg.timeout_s, self.vik.max_line_bytes)
        if line is None:
            return Reply((), f"{command}: no reply within {self.cfg.timeout_s:g} s")
        if len(line) > self.vik.max_line_bytes:
            return Reply((line[:32],), f"{command}: reply too long")
        return Reply((line,), reply_problem(command, line))

    async def run_init_command(self, command: str) -> None:
        """Send an allowed state-changing command (e.g. `!BON`) and require its `>OK`."""
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
            samples.append(self.to_sample(measurement, channel))
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
