"""Generator eluate formulas: Mo-99 and Ge-68 breakthrough, aluminium, Ga-68 identity, yield.

Pure functions of numbers and aware datetimes (no I/O, no numpy unless the Ga-68 half-life fit
runs); the record modules call them and keep their results. Sources (docs/qa-guide.md):

- Mo-99 in a Tc-99m eluate: 10 CFR 35.204(a) and USP *Sodium Pertechnetate Tc 99m Injection*:
  at most 0.15 kBq Mo-99 per MBq Tc-99m (0.15 µCi/mCi) at the time of administration; Ph. Eur.
  monograph 0124 *Sodium pertechnetate (99mTc) injection (fission)*: Mo-99 at most 0.1 % of the
  total radioactivity. The site chooses its limit (`MoLimit`).
- Measured: the eluate on the calibrator's Tc-99m setting, then in the lead canister on the
  Mo-99 setting. The canister stops Tc-99m's 140 keV photons and passes part of Mo-99's
  740/778 keV ones; its transmission correction factor CF (per site, validated on a date)
  turns the canister reading into Mo-99 activity: A(Mo) = reading · CF. Both activities are
  decay-corrected to one reference instant (the end of elution) before the ratio
  R0 = A(Mo-99)·CF / A(Tc-99m) is formed.
- Mo-99 (T½ 65.94 h) outlives Tc-99m (6.015 h), so the ratio grows:
  R(t) = R0 · e^((λTc - λMo)·t), about +11 %/h. The eluate's use-by time is when R(t) reaches
  the limit: t = ln(L / R0) / (λTc - λMo).
- Al3+ (colour spot test against a standard): ≤ 5 µg/mL (Ph. Eur. 0124), ≤ 10 µg/mL (USP).
- Ga-68 eluate (Ph. Eur. 2464 *Gallium (68Ga) chloride solution for radiolabelling*): identity
  by half-life 62-74 min; Ge-68 at most 0.001 % of the total radioactivity, found by measuring
  the eluate again after at least 48 h (the Ga-68 of the eluate has gone, 42 half-lives; what is
  left is Ga-68 in equilibrium with the Ge-68 that broke through):
  % = A(t)·e^(λGe·Δt) / A(Ga-68 at elution) x 100.
- Tc-99m available in a Mo-99/Tc-99m generator (Bateman, transient equilibrium), with the
  Mo-99 → Tc-99m branching fraction 0.8773 (ICRP-107): A_Tc(t) = b·A_Mo(t)·λTc/(λTc - λMo)·
  (1 - e^(-(λTc - λMo)·τ)), τ the time since the previous elution (τ → ∞ for the first one).
  Elution efficiency = measured / available x 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from agent.physics.nuclides import ACCEPTANCE_WINDOWS, HOUR, NUCLIDES, Nuclide

if TYPE_CHECKING:
    from agent.physics.halflife import IdentityResult

# --- Mo-99 / Tc-99m -------------------------------------------------------------------------

MO99_TC99M_BRANCHING = 0.8773
"""Fraction of Mo-99 decays that feed Tc-99m (ICRP-107 via radioactivedecay; the rest → Tc-99)."""

MoLimitBasis = Literal["kbq_per_mbq", "percent_of_total"]


@dataclass(frozen=True, slots=True)
class MoLimit:
    """A Mo-99 breakthrough limit as the site chose it, with its source."""

    basis: MoLimitBasis
    value: float
    source: str

    @property
    def ratio_kbq_per_mbq(self) -> float:
        """The limit expressed as R in kBq Mo-99 per MBq Tc-99m (the form the projection uses).

        A fraction p of the total activity is R/(1+R) = p with R dimensionless, so
        R = p/(1-p), i.e. 1000·p/(1-p) kBq/MBq (0.1 % → 1.001 kBq/MBq).
        """
        if self.basis == "kbq_per_mbq":
            return self.value
        p = self.value / 100.0
        return 1000.0 * p / (1.0 - p)


MO_LIMIT_USP = MoLimit("kbq_per_mbq", 0.15, "10 CFR 35.204(a); USP Sodium Pertechnetate Tc 99m")
MO_LIMIT_PH_EUR = MoLimit("percent_of_total", 0.1, "Ph. Eur. 0124 Sodium pertechnetate (99mTc)")
MO_LIMITS: dict[str, MoLimit] = {"usp": MO_LIMIT_USP, "ph_eur": MO_LIMIT_PH_EUR}


def _lam(table: Mapping[str, Nuclide], name: str) -> float:
    return table[name].decay_constant


def ratio_growth_per_s(table: Mapping[str, Nuclide] = NUCLIDES) -> float:
    """λTc - λMo in 1/s (the Mo/Tc ratio's growth rate; e^(k·1 h) ≈ 1.110)."""
    return _lam(table, "Tc-99m") - _lam(table, "Mo-99")


def ratio_to_percent(ratio_kbq_per_mbq: float) -> float:
    """Mo-99 as a percentage of the total (Mo-99 + Tc-99m) activity for a ratio R (kBq/MBq)."""
    r = ratio_kbq_per_mbq / 1000.0
    return 100.0 * r / (1.0 + r)


def project_ratio(
    r0_kbq_per_mbq: float, elapsed_s: float, table: Mapping[str, Nuclide] = NUCLIDES
) -> float:
    """R(t) = R0 · e^((λTc - λMo)·t): the ratio `elapsed_s` after its reference instant."""
    return r0_kbq_per_mbq * math.exp(ratio_growth_per_s(table) * elapsed_s)


@dataclass(frozen=True, slots=True)
class MoBreakthrough:
    """Mo-99 breakthrough of one eluate at its reference instant, against the site's limit."""

    reference_time: datetime
    tc99m_mbq: float  # at reference_time
    mo99_kbq: float  # reading x CF, at reference_time
    canister_factor: float
    ratio_kbq_per_mbq: float  # R0
    limit: MoLimit
    use_by: datetime | None  # None: over the limit already at the reference instant

    @property
    def percent_of_total(self) -> float:
        """R0 as a percentage of the total radioactivity."""
        return ratio_to_percent(self.ratio_kbq_per_mbq)

    @property
    def passed(self) -> bool:
        """Within the limit at the reference instant (the eluate is usable until `use_by`)."""
        return self.ratio_kbq_per_mbq <= self.limit.ratio_kbq_per_mbq

    def ratio_at(self, when: datetime, table: Mapping[str, Nuclide] = NUCLIDES) -> float:
        """R at `when` (e.g. the planned administration)."""
        return project_ratio(
            self.ratio_kbq_per_mbq, (when - self.reference_time).total_seconds(), table
        )

    def passes_at(self, when: datetime, table: Mapping[str, Nuclide] = NUCLIDES) -> bool:
        """Within the limit at `when`."""
        return self.ratio_at(when, table) <= self.limit.ratio_kbq_per_mbq


def use_by_after_s(
    r0_kbq_per_mbq: float, limit: MoLimit, table: Mapping[str, Nuclide] = NUCLIDES
) -> float | None:
    """Seconds after the reference instant until R reaches the limit.

    `math.inf` when no Mo-99 was found (R0 = 0); None when R0 is over the limit already.
    """
    if r0_kbq_per_mbq < 0 or not math.isfinite(r0_kbq_per_mbq):
        raise ValueError("ratio must be a finite number ≥ 0")
    lim = limit.ratio_kbq_per_mbq
    if r0_kbq_per_mbq > lim:
        return None
    if r0_kbq_per_mbq == 0:
        return math.inf
    return math.log(lim / r0_kbq_per_mbq) / ratio_growth_per_s(table)


def mo99_breakthrough(
    *,
    tc99m_mbq: float,
    tc99m_at: datetime,
    mo99_reading_kbq: float,
    mo99_at: datetime,
    canister_factor: float,
    limit: MoLimit,
    reference_time: datetime | None = None,
    table: Mapping[str, Nuclide] = NUCLIDES,
) -> MoBreakthrough:
    """R0 from the two readings and the eluate's use-by time under `limit`.

    Both readings are decay-corrected to `reference_time` (default: the Tc-99m reading's time).
    """
    if not tc99m_mbq > 0:
        raise ValueError("the Tc-99m activity must be positive")
    if mo99_reading_kbq < 0 or not canister_factor > 0:
        raise ValueError("the Mo-99 reading must be ≥ 0 and the canister factor positive")
    ref = tc99m_at if reference_time is None else reference_time
    tc_ref = tc99m_mbq * math.exp(_lam(table, "Tc-99m") * (tc99m_at - ref).total_seconds())
    mo_ref = (
        mo99_reading_kbq
        * canister_factor
        * math.exp(_lam(table, "Mo-99") * (mo99_at - ref).total_seconds())
    )
    r0 = mo_ref / tc_ref
    after = use_by_after_s(r0, limit, table)
    use_by = None
    if after is not None:
        use_by = ref + timedelta(seconds=min(after, 10 * 365 * 86400.0))
    return MoBreakthrough(ref, tc_ref, mo_ref, canister_factor, r0, limit, use_by)


# --- aluminium ------------------------------------------------------------------------------

AL_LIMIT_PH_EUR_UG_ML = 5.0
"""Ph. Eur. 0124: aluminium at most 5 µg/mL (colour spot test against a standard)."""
AL_LIMIT_USP_UG_ML = 10.0
"""USP Sodium Pertechnetate Tc 99m Injection: aluminium at most 10 µg/mL."""
AL_LIMITS: dict[str, float] = {"ph_eur": AL_LIMIT_PH_EUR_UG_ML, "usp": AL_LIMIT_USP_UG_ML}
AL_SOURCES: dict[str, str] = {
    "ph_eur": "Ph. Eur. 0124 Sodium pertechnetate (99mTc) injection: Al <= 5 µg/mL",
    "usp": "USP Sodium Pertechnetate Tc 99m Injection: Al <= 10 µg/mL",
}

SpotColour = Literal["lighter", "equal", "darker"]


@dataclass(frozen=True, slots=True)
class AluminiumResult:
    """An Al3+ spot test as typed by the operator.

    Either the colour of the eluate's spot against the standard made at the limit
    (`lighter`/`equal` pass: "not more intense than the standard"), or a concentration read
    from a graded strip (passes when ≤ the limit).
    """

    limit_ug_ml: float
    colour: SpotColour | None
    concentration_ug_ml: float | None

    @property
    def passed(self) -> bool:
        """Not more than the limit."""
        if self.concentration_ug_ml is not None:
            return self.concentration_ug_ml <= self.limit_ug_ml
        return self.colour in {"lighter", "equal"}


def aluminium_check(
    limit_ug_ml: float,
    *,
    colour: SpotColour | None = None,
    concentration_ug_ml: float | None = None,
) -> AluminiumResult:
    """The typed spot test against the limit; exactly one of colour/concentration is given."""
    if (colour is None) == (concentration_ug_ml is None):
        raise ValueError("give the spot's colour against the standard or a concentration")
    if concentration_ug_ml is not None and not (
        concentration_ug_ml >= 0 and math.isfinite(concentration_ug_ml)
    ):
        raise ValueError("the concentration must be a finite number ≥ 0")
    if colour is not None and colour not in {"lighter", "equal", "darker"}:
        raise ValueError(f"unknown spot colour {colour!r}")
    return AluminiumResult(limit_ug_ml, colour, concentration_ug_ml)


# --- generator yield ------------------------------------------------------------------------


def tc99m_available_mbq(
    mo99_mbq_at_elution: float,
    since_previous_elution_s: float | None,
    table: Mapping[str, Nuclide] = NUCLIDES,
    branching: float = MO99_TC99M_BRANCHING,
) -> float:
    """Tc-99m on the column at an elution (Bateman), the previous elution having taken it all.

    None for `since_previous_elution_s`: the first elution, the column in transient equilibrium.
    """
    lt, lm = _lam(table, "Tc-99m"), _lam(table, "Mo-99")
    growth = 1.0
    if since_previous_elution_s is not None:
        if since_previous_elution_s < 0:
            raise ValueError("the previous elution is after this one")
        growth = -math.expm1(-(lt - lm) * since_previous_elution_s)
    return branching * mo99_mbq_at_elution * lt / (lt - lm) * growth


def mo99_at(
    reference_mbq: float,
    reference_time: datetime,
    when: datetime,
    table: Mapping[str, Nuclide] = NUCLIDES,
) -> float:
    """The generator's Mo-99 activity at `when` from its calibration (reference) activity."""
    return reference_mbq * math.exp(-_lam(table, "Mo-99") * (when - reference_time).total_seconds())


def elution_efficiency_pct(measured_tc99m_mbq: float, available_mbq: float) -> float:
    """Measured eluate activity as a percentage of the Tc-99m available on the column."""
    if not available_mbq > 0:
        raise ValueError("available activity must be positive")
    return 100.0 * measured_tc99m_mbq / available_mbq


# --- Ga-68 / Ge-68 --------------------------------------------------------------------------

GA68_IDENTITY_WINDOW_S = ACCEPTANCE_WINDOWS["Ga-68"]
"""Ph. Eur. 2464: the Ga-68 half-life found between 62 and 74 min."""
GE68_LIMIT_PCT = 0.001
"""Ph. Eur. 2464: Ge-68 at most 0.001 % of the total radioactivity."""
GE68_MIN_WAIT_S = 48 * HOUR
"""The eluate is re-measured no earlier than 48 h after elution."""


def ga68_identity(
    t_s: Sequence[float], activity: Sequence[float], window_s: tuple[float, float] | None = None
) -> IdentityResult:
    """The half-life identity of a Ga-68 eluate (the existing fit, Ph. Eur. 62-74 min window)."""
    from agent.physics.halflife import check_identity  # noqa: PLC0415 - numpy on use only

    return check_identity("Ga-68", t_s, activity, window_s or GA68_IDENTITY_WINDOW_S)


class Ge68Status(StrEnum):
    """What a Ge-68 remeasurement shows."""

    PASSED = "passed"  # measured, at most the limit
    FAILED = "failed"  # measured, over the limit
    PASSED_BELOW_DL = "passed_below_detection_limit"  # below the DL; DL's bound ≤ limit
    INCONCLUSIVE_BELOW_DL = "inconclusive_below_detection_limit"  # below DL; bound > limit
    TOO_EARLY = "too_early"  # re-measured before the minimum wait


@dataclass(frozen=True, slots=True)
class Ge68Breakthrough:
    """Ge-68 breakthrough of a Ga-68 eluate from its remeasurement."""

    ga68_at_elution_mbq: float
    elution_time: datetime
    remeasured_mbq: float
    remeasured_at: datetime
    detection_limit_mbq: float
    limit_pct: float
    percent: float  # from the reading as it is (even below the detection limit)
    bound_pct: float  # the same with the reading raised to the detection limit, if below
    status: Ge68Status

    @property
    def elapsed_s(self) -> float:
        """Δt, elution to remeasurement."""
        return (self.remeasured_at - self.elution_time).total_seconds()

    @property
    def above_detection_limit(self) -> bool:
        """The remeasurement is above the calibrator's detection limit."""
        return self.remeasured_mbq > self.detection_limit_mbq

    @property
    def passed(self) -> bool | None:
        """True/False when the result decides; None when it cannot (too early, inconclusive)."""
        if self.status in {Ge68Status.PASSED, Ge68Status.PASSED_BELOW_DL}:
            return True
        if self.status is Ge68Status.FAILED:
            return False
        return None


def ge68_breakthrough(
    *,
    ga68_at_elution_mbq: float,
    elution_time: datetime,
    remeasured_mbq: float,
    remeasured_at: datetime,
    detection_limit_mbq: float,
    limit_pct: float = GE68_LIMIT_PCT,
    min_wait_s: float = GE68_MIN_WAIT_S,
    table: Mapping[str, Nuclide] = NUCLIDES,
) -> Ge68Breakthrough:
    """% = A(t)·e^(λGe·Δt) / A(Ga-68 at elution) x 100, with the detection-limit check.

    Below the detection limit the reading says only "less than DL": compliance is shown when
    DL·e^(λGe·Δt)/A0·100 is still within the limit, otherwise the test is inconclusive (a
    larger eluate or a more sensitive counter is needed).
    """
    if not ga68_at_elution_mbq > 0:
        raise ValueError("the Ga-68 activity at elution must be positive")
    if remeasured_mbq < 0 or detection_limit_mbq < 0:
        raise ValueError("activities must be ≥ 0")
    dt = (remeasured_at - elution_time).total_seconds()
    back = math.exp(_lam(table, "Ge-68") * dt)
    percent = remeasured_mbq * back / ga68_at_elution_mbq * 100.0
    above = remeasured_mbq > detection_limit_mbq
    bound = percent if above else detection_limit_mbq * back / ga68_at_elution_mbq * 100.0
    if dt < min_wait_s:
        status = Ge68Status.TOO_EARLY
    elif above:
        status = Ge68Status.PASSED if percent <= limit_pct else Ge68Status.FAILED
    else:
        status = (
            Ge68Status.PASSED_BELOW_DL if bound <= limit_pct else Ge68Status.INCONCLUSIVE_BELOW_DL
        )
    return Ge68Breakthrough(
        ga68_at_elution_mbq,
        elution_time,
        remeasured_mbq,
        remeasured_at,
        detection_limit_mbq,
        limit_pct,
        percent,
        bound,
        status,
    )
