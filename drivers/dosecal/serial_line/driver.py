"""Generic line driver: for instruments whose line format a site knows (e.g. CRC-55tR tickets).

Each line is matched against `pattern`, a regular expression with named groups: `value`
(required), `unit` and `nuclide` (optional; else the configured `unit`/`nuclide`), and any
other named groups, which are kept as sample attributes. Lines matching `ignore_pattern`
(ticket headers, blank separators) are skipped; any other line that does not match is a BAD
sample, so a change of format or a noisy line is seen, never silently dropped.

`mode = "push"` listens only. `mode = "poll"` sends `poll_command` every `poll_interval_s` and
parses the first non-ignored reply line. The poll command is written by the site in its
configuration, which is the explicit permission to send it: it must be a read-only request.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import Sample, SampleBatch
from drivers.dosecal.common import (
    ACTIVITY_CHANNEL,
    Measurement,
    ReadingPatternSetting,
    RegexSetting,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    decode_escapes,
    decode_text,
    malformed,
    parse_with_pattern,
)


def parse_line(
    line: bytes,
    pattern: re.Pattern[str],
    ignore: re.Pattern[str] | None = None,
    *,
    unit: str | None = None,
    nuclide: str | None = None,
) -> Measurement | None:
    """Parse one line; None when it matches `ignore` (or is blank)."""
    text = decode_text(line)
    if not text.strip() or (ignore is not None and ignore.search(text)):
        return None
    return parse_with_pattern(line, pattern, default_unit=unit, default_nuclide=nuclide)


class SerialLineConfig(SerialDeviceConfig):
    """A line-oriented instrument described entirely by configuration."""

    type: Literal["serial_line"]
    mode: Literal["push", "poll"] = "push"
    poll_command: str | None = Field(
        default=None, description=r"Poll mode: bytes to send, with escapes (e.g. '\x03', 'R\r')."
    )
    pattern: ReadingPatternSetting = Field(
        description="Regex with named groups value (required), unit, nuclide."
    )
    ignore_pattern: RegexSetting | None = Field(
        default=None, description="Lines to skip (headers ...)."
    )
    unit: str | None = Field(default=None, description="Unit when the pattern has no unit group.")
    nuclide: str | None = None
    channel: str = Field(default=ACTIVITY_CHANNEL, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    activity: bool = Field(
        default=True, description="Values are activities: check the unit and plausible range."
    )
    idle_timeout_s: float | None = Field(default=None, gt=0)
    max_line_bytes: int = Field(default=256, ge=16, le=8192)

    @field_validator("poll_command")
    @classmethod
    def _check_poll_command(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                wire = decode_escapes(value)
            except (UnicodeError, ValueError) as exc:
                raise ValueError(f"invalid escape in poll_command: {exc}") from None
            if not wire:
                raise ValueError("poll_command is empty")
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> SerialLineConfig:
        if self.mode == "poll" and self.poll_command is None:
            raise ValueError("mode 'poll' needs a poll_command")
        return self


class SerialLineDriver(SerialDoseCalibratorDriver):
    """Push or poll lines, parsed by the configured pattern."""

    type = "serial_line"

    def __init__(self, config: SerialLineConfig) -> None:
        super().__init__(config)
        self.line_cfg = config
        self._pattern = re.compile(config.pattern)
        self._ignore = re.compile(config.ignore_pattern) if config.ignore_pattern else None
        self._poll = decode_escapes(config.poll_command) if config.poll_command else b""

    def parse(self, line: bytes) -> Measurement | None:
        """Parse with this device's patterns and defaults."""
        return parse_line(
            line,
            self._pattern,
            self._ignore,
            unit=self.line_cfg.unit,
            nuclide=self.line_cfg.nuclide,
        )

    def check_value(self, measurement: Measurement, channel: str) -> str | None:
        """Only activities (`activity = true`) get the activity checks."""
        return super().check_value(measurement, channel) if self.line_cfg.activity else None

    async def poll_once(self) -> list[Sample]:
        """Send the configured poll and parse the first non-ignored reply line."""
        dropped = await self.transport.discard_input()
        if dropped:
            self.log.debug("dosecal.stale_input_dropped", size=len(dropped))
        # The site wrote this command into the configuration: that is the permission.
        await self.transport.write(self._poll)
        limit = self.line_cfg.max_line_bytes
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            line = await self.read_record(remaining, limit) if remaining > 0 else None
            if line is None:
                self.note_failure(f"no reply within {self.cfg.timeout_s:g} s")
                return []
            if len(line) > limit:
                problem = f"line longer than {limit} bytes"
                return [self.to_sample(malformed(decode_text(line), problem))]
            measurement = self.parse(line)
            if measurement is not None:
                return [self.to_sample(measurement)]

    def samples(self) -> AsyncIterator[Sample]:
        """Poll or listen, as configured."""
        if self.line_cfg.mode == "poll":
            return self.poll_loop()
        cfg = self.line_cfg
        return self.push_loop(self.parse, cfg.idle_timeout_s, cfg.max_line_bytes)

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle or pushed line, as configured."""
        if self.line_cfg.mode == "poll":
            return self.poll_batches()
        cfg = self.line_cfg
        return self.push_batches(self.parse, cfg.idle_timeout_s, cfg.max_line_bytes)
