"""What every dose calibrator driver shares: the serial layer plus activity checks.

The serial layer (`drivers/serial/instrument.py`: port, line control, parsing helpers,
failure policy) is the same for every line instrument; a dose calibrator adds its channel
(`activity`) and its plausibility checks: the unit is an activity unit and the value lies
within `min_activity_mbq`..`max_activity_mbq`.
"""

from __future__ import annotations

from pydantic import Field

from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit
from drivers.serial.instrument import (
    NUMBER,
    LineParser,
    Measurement,
    ReadingPatternSetting,
    RegexSetting,
    SerialInstrumentConfig,
    SerialInstrumentDriver,
    compile_pattern,
    compile_reading_pattern,
    decode_escapes,
    decode_text,
    has_control_chars,
    malformed,
    normalize_command,
    parse_number,
    parse_with_pattern,
    strip_escapes,
)

ACTIVITY_CHANNEL = "activity"

__all__ = [
    "ACTIVITY_CHANNEL",
    "NUMBER",
    "LineParser",
    "Measurement",
    "ReadingPatternSetting",
    "RegexSetting",
    "SerialDeviceConfig",
    "SerialDoseCalibratorDriver",
    "activity_problem",
    "compile_pattern",
    "compile_reading_pattern",
    "decode_escapes",
    "decode_text",
    "has_control_chars",
    "malformed",
    "normalize_command",
    "parse_number",
    "parse_with_pattern",
    "strip_escapes",
]


def activity_problem(value: float, unit: str | None, min_mbq: float, max_mbq: float) -> str | None:
    """Why an activity reading cannot be right (unknown unit, implausible size), or None."""
    if unit is None:
        return "no unit"
    canonical = canonical_unit(unit)
    if canonical not in ACTIVITY_TO_MBQ:
        return f"unit {unit!r} is not an activity unit"
    mbq = value * ACTIVITY_TO_MBQ[canonical]
    if not min_mbq <= mbq <= max_mbq:
        return f"implausible activity {value:g} {unit} (outside {min_mbq:g}..{max_mbq:g} MBq)"
    return None


class SerialDeviceConfig(SerialInstrumentConfig):
    """A serial dose calibrator: the serial layer's settings, channel `activity`, bounds."""

    channel: str = Field(default=ACTIVITY_CHANNEL, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    min_activity_mbq: float = Field(
        default=-1.0,
        description="Lower plausibility bound (background subtraction can dip below 0).",
    )
    max_activity_mbq: float = Field(
        default=1e7, gt=0, description="Upper plausibility bound; larger values are bad frames."
    )


class SerialDoseCalibratorDriver(SerialInstrumentDriver):
    """A serial line driver whose readings on `activity` are checked as activities."""

    def __init__(self, config: SerialDeviceConfig) -> None:
        super().__init__(config)
        self.dose_cfg = config

    def check_value(self, measurement: Measurement, channel: str) -> str | None:
        """Activity readings: an activity unit, within the configured bounds."""
        if channel != self.dose_cfg.channel or measurement.value is None:
            return None
        return activity_problem(
            measurement.value,
            measurement.unit,
            self.dose_cfg.min_activity_mbq,
            self.dose_cfg.max_activity_mbq,
        )
