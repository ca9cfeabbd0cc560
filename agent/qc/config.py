"""Configuration models of QC rules: a discriminated union keyed by rule `type`.

Every model forbids unknown keys and checks its numbers (bands ordered, high > low, ...), so a
mistake is reported by the configuration loader as `file: rules[2].fail_pct: message`.
See docs/qc-rules.md for a TOML example of each type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.physics.nuclides import ACCEPTANCE_WINDOWS, NUCLIDES, normalize_nuclide
from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit

Severity = Literal["info", "warning", "alarm", "critical"]
IdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _nuclide(value: str) -> str:
    name = normalize_nuclide(value)
    if name is None:
        raise ValueError(
            f"unknown nuclide {value!r}; expected one of {', '.join(sorted(NUCLIDES))}"
        )
    return name


def _activity_unit(value: str) -> str:
    unit = canonical_unit(value)
    if unit not in ACTIVITY_TO_MBQ:
        raise ValueError(
            f"not an activity unit: {value!r}; expected one of {list(ACTIVITY_TO_MBQ)}"
        )
    return unit


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-01-15T09:00:00Z")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleBase(_Strict):
    """Settings every rule has."""

    name: IdStr = Field(description="Unique rule name; part of every alert it raises.")
    type: str
    severity: Severity = "warning"
    device: IdStr | None = Field(default=None, description="Device id; none = every device.")
    channel: str | None = Field(default=None, min_length=1, description="none = every channel.")
    description: str = ""
    enabled: bool = True


class _Persistence(_Strict):
    """Hysteresis and minimum duration, shared by level rules."""

    hysteresis: NonNegative = Field(
        default=0.0, description="Clear only once the value is back by this much past the limit."
    )
    min_duration_s: NonNegative = Field(
        default=0.0, description="The condition must hold this long before the alert is raised."
    )
    clear_duration_s: NonNegative = Field(
        default=0.0, description="The value must stay normal this long before the alert clears."
    )


class ThresholdRule(RuleBase, _Persistence):
    """Value above `high` or below `low` (area dose rate, hot-cell pressure, temperature)."""

    type: Literal["threshold"]
    channel: str = Field(min_length=1)
    high: Finite | None = None
    low: Finite | None = None
    unit: str | None = Field(
        default=None,
        description="Published unit the limits are in; readings in another unit are skipped.",
    )

    @model_validator(mode="after")
    def _limits(self) -> ThresholdRule:
        if self.high is None and self.low is None:
            raise ValueError("give `high`, `low` or both")
        if self.high is not None and self.low is not None:
            if self.high <= self.low:
                raise ValueError(f"high ({self.high:g}) must be greater than low ({self.low:g})")
            if 2 * self.hysteresis >= self.high - self.low:
                raise ValueError("hysteresis must be less than half of high - low")
        return self


class BackgroundRule(RuleBase, _Persistence):
    """A dose calibrator's background reading too high (contamination, source left nearby)."""

    type: Literal["background"]
    channel: str = Field(default="background", min_length=1)
    max: Positive = Field(description="Highest acceptable background, in `unit`.")
    unit: str = Field(default="MBq", description="Unit of `max` (activity units are converted).")


class RateOfChangeRule(RuleBase, _Persistence):
    """The value rises or falls faster than allowed (a leak, a spill, a failing fan)."""

    type: Literal["rate_of_change"]
    channel: str = Field(min_length=1)
    max_rise_per_min: Positive | None = None
    max_fall_per_min: Positive | None = None
    window_s: Positive = Field(default=60.0, description="Rate measured over this span.")

    @model_validator(mode="after")
    def _limits(self) -> RateOfChangeRule:
        if self.max_rise_per_min is None and self.max_fall_per_min is None:
            raise ValueError("give `max_rise_per_min`, `max_fall_per_min` or both")
        return self


class StaleRule(RuleBase):
    """No reading for `factor` x the device's poll interval (or `after_s`)."""

    type: Literal["stale"]
    factor: float = Field(default=3.0, ge=1.0, le=1e6)
    after_s: Positive | None = Field(default=None, description="Overrides factor x poll interval.")
    while_offline: bool = Field(
        default=False, description="Also report stale data while the device is offline."
    )


class DeviceOfflineRule(RuleBase):
    """The device has been offline (or not yet connected) for longer than `after_s`."""

    type: Literal["device_offline"]
    severity: Severity = "alarm"
    after_s: NonNegative = 30.0
    degraded_severity: Severity | None = Field(
        default="warning", description="Alert on `degraded` too, at this severity (none: don't)."
    )


class _Session(_Strict):
    """How a discrete measurement is recognised in a stream of dose-calibrator readings."""

    settle_readings: int = Field(default=3, ge=1, le=100)
    stability_pct: Positive = Field(
        default=2.0, le=50, description="Spread of the last readings that counts as settled."
    )
    session_gap_s: Positive = Field(
        default=60.0, description="A pause this long ends a measurement."
    )


class ReferenceSource(_Strict):
    """A constancy reference source with its certificate."""

    id: str = Field(min_length=1, description="Serial number / name of the source.")
    nuclide: str
    activity: Positive
    unit: str = "MBq"
    reference_date: datetime

    _check_nuclide = field_validator("nuclide")(_nuclide)
    _check_unit = field_validator("unit")(_activity_unit)
    _check_date = field_validator("reference_date")(_aware)


class ConstancyRule(RuleBase, _Session):
    """Daily constancy: reading of the reference source vs its decay-corrected value."""

    type: Literal["constancy"]
    severity: Severity = "alarm"
    device: IdStr
    channel: str = Field(default="activity", min_length=1)
    source: ReferenceSource
    action_pct: Positive = Field(default=5.0, le=100, description="Investigate beyond this.")
    fail_pct: Positive = Field(default=10.0, le=100, description="Do not use beyond this.")
    action_severity: Severity = "warning"
    min_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="Readings below this x expected: source not in."
    )

    @model_validator(mode="after")
    def _bands(self) -> ConstancyRule:
        if self.action_pct >= self.fail_pct:
            raise ValueError(
                f"action_pct ({self.action_pct:g}) must be less than fail_pct ({self.fail_pct:g})"
            )
        return self


class PrescriptionConfig(_Strict):
    """A prescribed dosage: activity due at the scheduled (administration) time."""

    id: str = Field(min_length=1, max_length=128, description="Order / dose id (no patient data).")
    nuclide: str
    activity: Positive
    unit: str = "MBq"
    scheduled: datetime
    note: str = ""

    _check_nuclide = field_validator("nuclide")(_nuclide)
    _check_unit = field_validator("unit")(_activity_unit)
    _check_date = field_validator("scheduled")(_aware)


class DosageRule(RuleBase, _Session):
    """Measured dosage vs prescription at the scheduled time (site tolerance, legal limit)."""

    type: Literal["dosage"]
    severity: Severity = "critical"
    device: IdStr
    channel: str = Field(default="activity", min_length=1)
    site_tolerance_pct: Positive = Field(default=10.0, le=100)
    regulatory_limit_pct: Positive = Field(
        default=20.0, le=100, description="US 10 CFR 35.63(d): 20%."
    )
    site_severity: Severity = "warning"
    match_window_s: Positive = Field(
        default=4 * 3600.0, description="Only prescriptions scheduled this close to the reading."
    )
    min_fraction: float = Field(default=0.2, gt=0, lt=1)
    prescriptions: list[PrescriptionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bands(self) -> DosageRule:
        if self.site_tolerance_pct >= self.regulatory_limit_pct:
            raise ValueError(
                f"site_tolerance_pct ({self.site_tolerance_pct:g}) must be less than "
                f"regulatory_limit_pct ({self.regulatory_limit_pct:g})"
            )
        ids = [p.id for p in self.prescriptions]
        if len(ids) != len(set(ids)):
            raise ValueError("prescription ids must be unique")
        return self


class HalfLifeRule(RuleBase):
    """Radionuclidic identity: half-life fitted to a series of one sample's readings."""

    type: Literal["half_life"]
    severity: Severity = "alarm"
    device: IdStr
    channel: str = Field(default="activity", min_length=1)
    nuclide: str = "F-18"
    window_min: tuple[Positive, Positive] | None = Field(
        default=None, description="Acceptance window in minutes; default for F-18: 105-115."
    )
    min_points: int = Field(default=5, ge=3, le=100000)
    min_span_s: Positive = Field(default=600.0, description="Fit once the series spans this.")
    max_gap_s: Positive = Field(default=600.0, description="A longer gap starts a new series.")
    min_activity_mbq: NonNegative = Field(default=0.1, description="Ignore readings below.")
    jump_pct: Positive = Field(
        default=20.0, description="A rise larger than this starts a new series (new sample)."
    )

    _check_nuclide = field_validator("nuclide")(_nuclide)

    @model_validator(mode="after")
    def _window(self) -> HalfLifeRule:
        if self.window_min is None:
            if self.nuclide not in ACCEPTANCE_WINDOWS:
                raise ValueError(f"give window_min = [low, high] for {self.nuclide}")
        elif self.window_min[0] >= self.window_min[1]:
            raise ValueError("window_min must be [low, high] with low < high")
        return self

    @property
    def window_s(self) -> tuple[float, float]:
        """The acceptance window in seconds."""
        if self.window_min is None:
            return ACCEPTANCE_WINDOWS[self.nuclide]
        return (self.window_min[0] * 60.0, self.window_min[1] * 60.0)


RuleConfig = Annotated[
    ThresholdRule
    | BackgroundRule
    | RateOfChangeRule
    | StaleRule
    | DeviceOfflineRule
    | ConstancyRule
    | DosageRule
    | HalfLifeRule,
    Field(discriminator="type"),
]
"""Union of every rule type, discriminated by `type`."""
