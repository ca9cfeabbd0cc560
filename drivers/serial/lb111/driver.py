"""Berthold LB 111-style area monitor: one pushed line per second, dose rate and alarm state.

The monitor only talks: each second it sends a line such as `  1.25E+00 uSv/h OK` CR LF
(dose rate, unit, and the alarm/relay state when the line carries it). The layout varies
with the instrument's firmware and print settings, so `pattern` is configurable: named
groups `value` (required), `unit` (else `unit`), `alarm` (optional: the relay/alarm word).

Channels: `dose_rate` (the value in its unit; the pipeline converts to µSv/h) and, when the
line carries it, `alarm` (1 when the word is one of `alarm_words`, else 0; the word itself in
the attribute `state`). Nothing is ever sent to the monitor.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import Field

from drivers.base import Sample, SampleBatch, closing
from drivers.serial.instrument import (
    NUMBER,
    Measurement,
    ReadingPatternSetting,
    SerialInstrumentConfig,
    SerialInstrumentDriver,
    parse_with_pattern,
)

DEFAULT_PATTERN = rf"^\s*(?P<value>{NUMBER})\s*(?P<unit>[nuµμm]Sv/h)\s*(?P<alarm>[A-Za-z]+)?\s*$"
"""`1.25E+00 uSv/h OK`, `0.18 µSv/h`, `12.5 uSv/h ALARM`."""
DOSE_RATE_UNITS = frozenset({"nSv/h", "uSv/h", "µSv/h", "μSv/h", "mSv/h"})
ALARM_CHANNEL = "alarm"


class LB111Config(SerialInstrumentConfig):
    """An LB 111-style monitor pushing dose-rate lines on a serial port or device server."""

    type: Literal["lb111"]

    @property
    def channels(self) -> list[str]:
        """`dose_rate`, and `alarm` when the line carries the alarm state."""
        return [self.channel, ALARM_CHANNEL]

    channel: str = Field(default="dose_rate", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    pattern: ReadingPatternSetting = Field(
        default=DEFAULT_PATTERN,
        description="Regex with named groups value (required), unit, alarm.",
    )
    unit: str = Field(default="uSv/h", description="Unit when the pattern has no unit group.")
    alarm_words: list[str] = Field(
        default_factory=lambda: ["ALARM", "ALERT", "ALM", "A"],
        description="Alarm-state words meaning the alarm (relay) is on; compared ignoring case.",
    )
    max_dose_rate_usv_h: float = Field(
        default=1e7, gt=0, description="Larger values are bad lines (the range of the probe)."
    )
    idle_timeout_s: float | None = Field(
        default=5.0,
        gt=0,
        description="Silence longer than this is a link failure (the monitor sends every second).",
    )
    max_line_bytes: int = Field(default=128, ge=16, le=4096)


class LB111Driver(SerialInstrumentDriver):
    """Listens only: one `dose_rate` (and `alarm`) reading per pushed line."""

    type = "lb111"

    def __init__(self, config: LB111Config) -> None:
        super().__init__(config)
        self.lb = config
        self._pattern = re.compile(config.pattern)
        self._alarm_words = {word.upper() for word in config.alarm_words}

    def parse(self, line: bytes) -> Measurement | None:
        """One line as a dose-rate measurement (blank lines ignored)."""
        if not line.strip():
            return None
        return parse_with_pattern(line, self._pattern, default_unit=self.lb.unit)

    def check_value(self, measurement: Measurement, channel: str) -> str | None:
        """A dose-rate unit, not negative, within the probe's range."""
        if channel != self.lb.channel or measurement.value is None:
            return None
        unit = measurement.unit or ""
        if unit not in DOSE_RATE_UNITS:
            return f"unit {unit!r} is not a dose-rate unit"
        scale = {"nSv/h": 1e-3, "mSv/h": 1e3}.get(unit, 1.0)
        if not 0 <= measurement.value * scale <= self.lb.max_dose_rate_usv_h:
            return f"implausible dose rate {measurement.value:g} {unit}"
        return None

    def alarm_sample(self, reading: Sample) -> Sample | None:
        """The alarm state a good line carried (attribute `alarm`), as channel `alarm`."""
        state = reading.attrs.get("alarm") if reading.attrs else None
        if not state:
            return None
        return self.sample(
            ALARM_CHANNEL,
            int(str(state).upper() in self._alarm_words),
            None,
            t=reading.t,
            raw_text=reading.raw_text,
            attrs={"state": state},
        )

    async def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per pushed line: `dose_rate` and, if carried, `alarm`."""
        lines = self.push_loop(self.parse, self.lb.idle_timeout_s, self.lb.max_line_bytes)
        async with closing(lines) as readings:
            async for reading in readings:
                alarm = self.alarm_sample(reading)
                yield SampleBatch.from_samples([reading] if alarm is None else [reading, alarm])
