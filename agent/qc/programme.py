"""The dose-calibrator QC programme as data: tests, schedules, sources, tolerances (`[qc]`).

One `[[qc.calibrators]]` entry per dose calibrator names its reference sources (with their
certificates) and the tests it undergoes, each with its schedules and its tolerance bands.
Every band carries its `basis`: the guidance it was taken from, printed on every record and
report. The defaults are the common practice of the documents cited; a site sets its own.

    constancy   daily + installation + after repair: a long-lived check source on each
                nuclide setting in use vs its decay-corrected value (x the setting's ratio)
    accuracy    installation, annual, after repair: >= 2 certified sources of different
                energies, each on its own nuclide setting
    linearity   installation, quarterly, after repair: decay method (one high-activity
                Tc-99m or F-18 sample measured as it decays, vs the exponential fitted)
    geometry    installation, after repair: one sample in each container in use, giving
                correction factors relative to the reference container
    background  daily: the empty chamber's reading below a threshold

Models forbid unknown keys; errors name the key (`qc.calibrators[0].constancy.source: ...`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from agent.core.settings import StrictSection
from agent.core.zones import site_zone
from agent.physics.units import ACTIVITY_TO_MBQ
from agent.qc.config import IdStr, NonNegative, Positive, _activity_unit, _aware, _nuclide
from agent.qc.plausibility import ActivityLimit

TestKind = Literal["constancy", "accuracy", "linearity", "geometry", "background"]
TEST_KINDS: tuple[TestKind, ...] = ("constancy", "accuracy", "linearity", "geometry", "background")
Schedule = Literal["daily", "quarterly", "annual", "installation", "after_repair"]
Role = Literal["viewer", "technologist", "radiopharmacist", "qa"]
Meaning = Literal["performed", "reviewed", "approved"]
MEANINGS: tuple[Meaning, ...] = ("performed", "reviewed", "approved")

# How long a passed test of each periodic schedule stays valid.
SCHEDULE_PERIOD: dict[str, timedelta] = {
    "quarterly": timedelta(days=92),
    "annual": timedelta(days=366),
}

BASIS_CONSTANCY = (
    "AAPM Report 181 (TG-181, 2012) and IAEA TRS-454 (2006) practice: investigate beyond ±5 %;"
    " do not use beyond ±10 % (former US 10 CFR 35.50(b)(1), ANSI N42.13)"
)
BASIS_ACCURACY = (
    "AAPM Report 181 (TG-181, 2012), IAEA TRS-454 (2006): ±5 % action; ±10 % fail"
    " (former US 10 CFR 35.50(b)(2), ANSI N42.13)"
)
BASIS_LINEARITY = (
    "IAEA TRS-454 (2006), EANM guidance: within ±2 % over the range in use; ±5 % fail"
    " (a site limit inside the ±10 % of former US 10 CFR 35.50(b)(3))"
)
BASIS_GEOMETRY = (
    "AAPM Report 181 (TG-181, 2012): a container/volume effect beyond ±2 % needs a"
    " correction factor; beyond ±10 % the container is not to be used"
)
BASIS_BACKGROUND = "manufacturer's instructions / site SOP: empty-chamber reading below threshold"


def _schedules(*items: Schedule) -> Callable[[], list[Schedule]]:
    return lambda: list(items)


def _roles(*items: Role) -> Callable[[], list[Role]]:
    return lambda: list(items)


class Tolerance(StrictSection):
    """A tolerance band: pass within ±action_pct, action up to ±fail_pct, fail beyond."""

    action_pct: Positive = Field(le=100)
    fail_pct: Positive = Field(le=100)
    basis: str = Field(min_length=1, description="The guidance these limits come from.")

    @model_validator(mode="after")
    def _ordered(self) -> Tolerance:
        if self.action_pct >= self.fail_pct:
            raise ValueError(
                f"action_pct ({self.action_pct:g}) must be less than fail_pct ({self.fail_pct:g})"
            )
        return self

    def judge(self, deviation_pct: float) -> str:
        """`pass`, `action` or `fail` for a deviation in %."""
        size = abs(deviation_pct)
        if size <= self.action_pct:
            return "pass"
        if size <= self.fail_pct:
            return "action"
        return "fail"

    def as_record(self) -> dict[str, object]:
        """The `tolerance` object of a QC record (CONTRACT §5)."""
        return {"action_pct": self.action_pct, "fail_pct": self.fail_pct, "basis": self.basis}


def _tol(action: float, fail: float, basis: str) -> Tolerance:
    return Tolerance(action_pct=action, fail_pct=fail, basis=basis)


class QCSource(StrictSection):
    """A certified reference or check source."""

    id: IdStr = Field(description="Serial number / name of the source.")
    nuclide: str
    activity: Positive = Field(description="Certified activity at `reference_date`.")
    unit: str = "MBq"
    reference_date: datetime
    certificate: str = Field(min_length=1, description="Calibration certificate reference.")
    uncertainty_pct: NonNegative | None = Field(
        default=None, le=50, description="Standard uncertainty (k=1) of the certified activity."
    )

    _check_nuclide = field_validator("nuclide")(_nuclide)
    _check_unit = field_validator("unit")(_activity_unit)
    _check_date = field_validator("reference_date")(_aware)

    @property
    def activity_mbq(self) -> float:
        """Certified activity in MBq."""
        return self.activity * ACTIVITY_TO_MBQ[self.unit]

    def as_record(self) -> dict[str, object]:
        """The `source` object of a QC record."""
        return {
            "id": self.id,
            "nuclide": self.nuclide,
            "certified_mbq": self.activity_mbq,
            "certified_date": self.reference_date.isoformat(),
            "certificate": self.certificate,
        }


class _Test(StrictSection):
    enabled: bool = True
    schedules: list[Schedule]
    last_performed: datetime | None = Field(
        default=None,
        description="When this test last passed before IsoEdge kept the records (paper QC).",
    )

    _check_last = field_validator("last_performed")(lambda v: v if v is None else _aware(v))


class ConstancySetting(StrictSection):
    """A nuclide setting checked daily with the check source."""

    nuclide: str
    ratio: Positive = Field(
        default=1.0,
        description="Reading on this setting ÷ the source's activity, from the acceptance "
        "test (1 on the source's own nuclide setting).",
    )

    _check_nuclide = field_validator("nuclide")(_nuclide)


class ConstancyTest(_Test):
    """Daily constancy with a long-lived check source on each setting in use."""

    schedules: list[Schedule] = Field(
        default_factory=_schedules("daily", "installation", "after_repair")
    )
    source: IdStr
    settings: list[ConstancySetting] = Field(min_length=1)
    tolerance: Tolerance = Field(default_factory=lambda: _tol(5.0, 10.0, BASIS_CONSTANCY))


class AccuracyTest(_Test):
    """Accuracy with at least two certified sources of different energies."""

    schedules: list[Schedule] = Field(
        default_factory=_schedules("installation", "annual", "after_repair")
    )
    sources: list[IdStr] = Field(min_length=2)
    tolerance: Tolerance = Field(default_factory=lambda: _tol(5.0, 10.0, BASIS_ACCURACY))


class LinearityTest(_Test):
    """Linearity by the decay method: one sample measured as it decays, fitted."""

    schedules: list[Schedule] = Field(
        default_factory=_schedules("installation", "quarterly", "after_repair")
    )
    method: Literal["decay"] = "decay"
    nuclide: str = "Tc-99m"
    min_activity_mbq: Positive = Field(default=1.0, description="Points below are not used.")
    interval_s: Positive = Field(default=1800.0, description="At most one point per interval.")
    duration_h: Positive = Field(default=72.0, le=24 * 30, description="The run ends after this.")
    min_points: int = Field(default=8, ge=4, le=100000)
    half_life_pct: Positive = Field(
        default=1.0, le=50, description="Fitted half-life vs the table: allowed difference."
    )
    tolerance: Tolerance = Field(default_factory=lambda: _tol(2.0, 5.0, BASIS_LINEARITY))

    _check_nuclide = field_validator("nuclide")(_nuclide)


class Container(StrictSection):
    """A container / volume in use for patient doses."""

    name: IdStr
    description: str = ""
    reference: bool = False


class GeometryTest(_Test):
    """Geometry: one sample in each container, factors relative to the reference container."""

    schedules: list[Schedule] = Field(default_factory=_schedules("installation", "after_repair"))
    nuclide: str = "Tc-99m"
    containers: list[Container] = Field(min_length=2)
    tolerance: Tolerance = Field(default_factory=lambda: _tol(2.0, 10.0, BASIS_GEOMETRY))

    _check_nuclide = field_validator("nuclide")(_nuclide)

    @model_validator(mode="after")
    def _one_reference(self) -> GeometryTest:
        refs = [c.name for c in self.containers if c.reference]
        if len(refs) != 1:
            raise ValueError(f"exactly one container needs reference = true (got {refs})")
        return self


class BackgroundTest(_Test):
    """Daily background / zero: the empty chamber reads below `max_mbq`."""

    schedules: list[Schedule] = Field(default_factory=_schedules("daily"))
    max_mbq: Positive = Field(default=0.1, description="Highest acceptable background (MBq).")
    basis: str = BASIS_BACKGROUND


class CalibratorProgramme(StrictSection):
    """The QC programme of one dose calibrator."""

    device: IdStr
    channel: str = Field(default="activity", min_length=1)
    settle_readings: int = Field(default=3, ge=1, le=100)
    stability_pct: Positive = Field(default=2.0, le=50)
    sources: list[QCSource] = Field(default_factory=list)
    constancy: ConstancyTest | None = None
    accuracy: AccuracyTest | None = None
    linearity: LinearityTest | None = None
    geometry: GeometryTest | None = None
    background: BackgroundTest | None = None

    @model_validator(mode="after")
    def _sources_known(self) -> CalibratorProgramme:
        ids = [s.id for s in self.sources]
        if len(ids) != len(set(ids)):
            raise ValueError("source ids must be unique")
        known = set(ids)
        if self.constancy is not None and self.constancy.source not in known:
            raise ValueError(
                f"constancy.source: unknown source {self.constancy.source!r}; "
                f"expected one of {sorted(known)}"
            )
        if self.accuracy is not None:
            unknown = [s for s in self.accuracy.sources if s not in known]
            if unknown:
                raise ValueError(f"accuracy.sources: unknown sources {unknown}")
            nuclides = {self.source(s).nuclide for s in self.accuracy.sources}
            if len(nuclides) < 2:  # noqa: PLR2004 - the guidance asks for two energies
                raise ValueError("accuracy.sources: needs sources of at least two nuclides")
        return self

    def source(self, source_id: str) -> QCSource:
        """The source with this id (KeyError if none)."""
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(source_id)

    def test(self, kind: str) -> _Test | None:
        """The configured test of this kind (None when not configured or disabled)."""
        test = getattr(self, kind, None) if kind in TEST_KINDS else None
        return test if isinstance(test, _Test) and test.enabled else None

    @property
    def daily_tests(self) -> list[str]:
        """Tests on the daily schedule: they decide the day's release."""
        return [k for k in TEST_KINDS if (t := self.test(k)) is not None and "daily" in t.schedules]


class SigningPolicy(StrictSection):
    """Who may sign what: roles per signature meaning."""

    performed: list[Role] = Field(default_factory=_roles("technologist", "radiopharmacist", "qa"))
    reviewed: list[Role] = Field(default_factory=_roles("radiopharmacist", "qa"))
    approved: list[Role] = Field(default_factory=_roles("qa"))
    # The qualified person's decision on a batch or an eluate.
    released: list[Role] = Field(default_factory=_roles("qa"))
    rejected: list[Role] = Field(default_factory=_roles("qa"))
    acknowledge_alert: list[Role] = Field(default_factory=_roles("radiopharmacist", "qa"))
    review_audit: list[Role] = Field(default_factory=_roles("qa"))
    prescribe: list[Role] = Field(default_factory=_roles("radiopharmacist", "qa"))

    def roles_for(self, action: str) -> list[Role]:
        """Roles allowed to sign `action` (a meaning or an action name)."""
        roles = getattr(self, action, None)
        if not isinstance(roles, list):
            raise KeyError(action)
        return roles


class QCSection(StrictSection):
    """`[qc]`: the dose-calibrator QC programme of the site."""

    timezone: str = Field(default="UTC", description="Site time zone: the QC day and records.")
    hold_on_action: bool = Field(
        default=True,
        description="A daily test at action level holds the calibrator until investigated "
        "and re-tested (false: only a fail holds it).",
    )
    held_override: bool = Field(
        default=False,
        description="A dose may be measured for a patient on a calibrator ON HOLD after a "
        "signed override with a reason (audited, shown on the dispensing record); false: "
        "measuring on a held calibrator is refused.",
    )
    signing: SigningPolicy = Field(default_factory=SigningPolicy)
    calibrators: list[CalibratorProgramme] = Field(default_factory=list)
    activity_limits: dict[str, ActivityLimit] = Field(
        default_factory=dict,
        description="Plausible activity of one administration per nuclide (MBq); a prescription "
        "beyond it needs a confirmation with a reason. Unset nuclides use wide shipped bounds.",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            site_zone(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. 'Europe/Amsterdam')") from None
        return value

    @model_validator(mode="after")
    def _unique_devices(self) -> QCSection:
        devices = [c.device for c in self.calibrators]
        if len(devices) != len(set(devices)):
            raise ValueError("each calibrator may have one programme (duplicate device)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The site time zone."""
        return site_zone(self.timezone)

    def calibrator(self, device: str) -> CalibratorProgramme:
        """The programme of `device` (KeyError if the device has none)."""
        for programme in self.calibrators:
            if programme.device == device:
                return programme
        raise KeyError(device)



__all__ = [
    "MEANINGS",
    "SCHEDULE_PERIOD",
    "TEST_KINDS",
    "AccuracyTest",
    "BackgroundTest",
    "CalibratorProgramme",
    "ConstancySetting",
    "ConstancyTest",
    "Container",
    "GeometryTest",
    "LinearityTest",
    "Meaning",
    "QCSection",
    "QCSource",
    "Role",
    "Schedule",
    "SigningPolicy",
    "TestKind",
    "Tolerance",
]
