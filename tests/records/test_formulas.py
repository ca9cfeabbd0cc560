"""The records' formulas against hand-computed cases (numbers worked out in the comments).

Half-lives are the table's (ICRP-107): Tc-99m 6.015 h, Mo-99 65.94 h, Ge-68 270.95 d,
I-131 8.0207 d, F-18 109.77 min.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent.physics.breakthrough import (
    AL_LIMIT_PH_EUR_UG_ML,
    AL_LIMIT_USP_UG_ML,
    MO_LIMIT_PH_EUR,
    MO_LIMIT_USP,
    Ge68Status,
    aluminium_check,
    elution_efficiency_pct,
    ga68_identity,
    ge68_breakthrough,
    mo99_at,
    mo99_breakthrough,
    project_ratio,
    ratio_growth_per_s,
    ratio_to_percent,
    tc99m_available_mbq,
    use_by_after_s,
)
from agent.physics.nuclides import DAY, HOUR, MINUTE, NUCLIDES, NuclideTable
from agent.physics.storage import NotEligibleError, release_date, release_survey
from agent.physics.transfer import receipt_check

T0 = datetime(2026, 12, 5, 7, 30, tzinfo=UTC)


def test_ratio_grows_eleven_percent_an_hour() -> None:
    # λTc - λMo = ln2·(1/6.015 - 1/65.94) h⁻¹ = 0.693147·0.151086 = 0.104725 h⁻¹; e^0.104725 = 1.1104
    assert ratio_growth_per_s() * HOUR == pytest.approx(0.104725, rel=1e-5)
    assert project_ratio(1.0, HOUR) == pytest.approx(1.11040, rel=1e-5)


def test_mo99_ratio_projected_six_hours() -> None:
    # Eluate 20 000 MBq on the Tc-99m setting; in the canister 200 kBq on the Mo-99 setting at
    # the same instant; CF 2.0 → A(Mo) = 400 kBq; R0 = 400 / 20 000 = 0.0200 kBq/MBq.
    # 6 h later: R = 0.02 · e^(0.104725·6) = 0.02 · e^0.628348 = 0.02 · 1.874511 = 0.037490.
    mo = mo99_breakthrough(
        tc99m_mbq=20_000.0,
        tc99m_at=T0,
        mo99_reading_kbq=200.0,
        mo99_at=T0,
        canister_factor=2.0,
        limit=MO_LIMIT_USP,
    )
    assert mo.ratio_kbq_per_mbq == pytest.approx(0.0200, rel=1e-12)
    assert mo.mo99_kbq == pytest.approx(400.0)
    assert mo.ratio_at(T0 + timedelta(hours=6)) == pytest.approx(0.037490, rel=1e-4)
    assert mo.passes_at(T0 + timedelta(hours=6))
    # 0.02 kBq/MBq = 2e-5 of Tc-99m → 2e-5/(1+2e-5) = 0.0019999600 % of the total
    assert mo.percent_of_total == pytest.approx(0.00199996, rel=1e-6)
    # Use-by (USP 0.15): t = ln(0.15/0.02)/0.104725 h⁻¹ = 2.014903/0.104725 = 19.240 h
    assert mo.use_by is not None
    assert (mo.use_by - T0).total_seconds() / HOUR == pytest.approx(19.240, abs=0.001)
    assert mo.passes_at(T0 + timedelta(hours=19.2))
    assert not mo.passes_at(T0 + timedelta(hours=19.3))


def test_ph_eur_limit_as_fraction_of_total() -> None:
    # 0.1 % of the total: R/(1+R) = 0.001 → R = 0.001/0.999 = 1.001001e-3 = 1.001001 kBq/MBq
    assert MO_LIMIT_PH_EUR.ratio_kbq_per_mbq == pytest.approx(1.001001, rel=1e-6)
    assert ratio_to_percent(MO_LIMIT_PH_EUR.ratio_kbq_per_mbq) == pytest.approx(0.1, rel=1e-9)
    # from R0 = 0.02: t = ln(1.001001/0.02)/0.104725 = 3.913043/0.104725 = 37.365 h
    after = use_by_after_s(0.02, MO_LIMIT_PH_EUR)
    assert after is not None
    assert after / HOUR == pytest.approx(37.365, abs=0.001)


def test_readings_at_different_times_are_corrected_to_the_elution() -> None:
    # Tc-99m read 10 min after the elution, Mo-99 read 20 min after it. Back to the elution:
    # A(Tc) = 19 616.7 · e^(ln2·(10/60)/6.015) = 19 616.7 · 1.019392 = 19 997.1 MBq;
    # A(Mo) = 199.86 · 2.0 · e^(ln2·(20/60)/65.94) = 399.72 · 1.0035102 = 401.123 kBq
    elution = T0
    mo = mo99_breakthrough(
        tc99m_mbq=19_616.7,
        tc99m_at=elution + timedelta(minutes=10),
        mo99_reading_kbq=199.86,
        mo99_at=elution + timedelta(minutes=20),
        canister_factor=2.0,
        limit=MO_LIMIT_USP,
        reference_time=elution,
    )
    assert mo.reference_time == elution
    assert mo.tc99m_mbq == pytest.approx(19_997.1, rel=2e-5)
    assert mo.mo99_kbq == pytest.approx(401.123, rel=2e-5)
    assert mo.ratio_kbq_per_mbq == pytest.approx(401.123 / 19_997.1, rel=5e-5)


def test_over_the_limit_at_elution_has_no_use_by() -> None:
    mo = mo99_breakthrough(
        tc99m_mbq=1000.0,
        tc99m_at=T0,
        mo99_reading_kbq=100.0,
        mo99_at=T0,
        canister_factor=2.0,
        limit=MO_LIMIT_USP,
    )
    assert mo.ratio_kbq_per_mbq == pytest.approx(0.2)
    assert not mo.passed
    assert mo.use_by is None
    assert use_by_after_s(0.0, MO_LIMIT_USP) == math.inf
    with pytest.raises(ValueError, match="canister factor"):
        mo99_breakthrough(
            tc99m_mbq=1000.0,
            tc99m_at=T0,
            mo99_reading_kbq=1.0,
            mo99_at=T0,
            canister_factor=0.0,
            limit=MO_LIMIT_USP,
        )


def test_site_half_life_override_changes_the_growth() -> None:
    # Tc-99m 6.0072 h (ENSDF): k = ln2·(1/6.0072 - 1/65.94) = 0.104875 h⁻¹
    class _Override:
        half_life_s = 6.0072 * HOUR
        uncertainty_s = None
        source = "ENSDF"

    table = NuclideTable({"Tc-99m": _Override()})
    assert ratio_growth_per_s(table) * HOUR == pytest.approx(0.104875, rel=1e-5)


@pytest.mark.parametrize(
    ("limit", "colour", "conc", "passed"),
    [
        (AL_LIMIT_PH_EUR_UG_ML, "lighter", None, True),
        (AL_LIMIT_PH_EUR_UG_ML, "equal", None, True),
        (AL_LIMIT_PH_EUR_UG_ML, "darker", None, False),
        (AL_LIMIT_PH_EUR_UG_ML, None, 5.0, True),
        (AL_LIMIT_PH_EUR_UG_ML, None, 7.0, False),
        (AL_LIMIT_USP_UG_ML, None, 7.0, True),
    ],
)
def test_aluminium_spot_test(
    limit: float, colour: str | None, conc: float | None, passed: bool
) -> None:
    result = aluminium_check(limit, colour=colour, concentration_ug_ml=conc)  # type: ignore[arg-type]
    assert result.passed is passed


def test_aluminium_needs_exactly_one_observation() -> None:
    with pytest.raises(ValueError, match="colour"):
        aluminium_check(5.0)
    with pytest.raises(ValueError, match="colour"):
        aluminium_check(5.0, colour="lighter", concentration_ug_ml=1.0)


def test_generator_available_activity_and_efficiency() -> None:
    # 10 000 MBq Mo-99, column in equilibrium: 0.8773 · 10 000 · λTc/(λTc - λMo)
    # = 8773 · (1/6.015)/(1/6.015 - 1/65.94) = 8773 · 1.1003740 = 9653.59 MBq
    assert tc99m_available_mbq(10_000.0, None) == pytest.approx(9653.59, rel=1e-6)
    # 24 h after the previous elution: x (1 - e^(-0.104725·24)) = x 0.919007 → 8871.72 MBq
    assert tc99m_available_mbq(10_000.0, 24 * HOUR) == pytest.approx(8871.72, rel=1e-5)
    assert elution_efficiency_pct(8000.0, 8871.72) == pytest.approx(90.174, rel=1e-4)
    # Mo-99 one half-life after its reference: half
    assert mo99_at(10_000.0, T0, T0 + timedelta(hours=65.94)) == pytest.approx(5000.0)


def test_ge68_remeasurement_after_48_hours() -> None:
    # Eluate 1000 MBq Ga-68 at elution; 48 h later the calibrator reads 0.002 MBq (2 kBq).
    # λGe·Δt = ln2 · 2 d / 270.95 d = 0.00511640; e^0.00511640 = 1.0051295
    # % = 0.002 · 1.0051295 / 1000 · 100 = 2.010259e-4 % ≤ 0.001 %
    result = ge68_breakthrough(
        ga68_at_elution_mbq=1000.0,
        elution_time=T0,
        remeasured_mbq=0.002,
        remeasured_at=T0 + timedelta(hours=48),
        detection_limit_mbq=0.001,
    )
    assert result.percent == pytest.approx(2.010259e-4, rel=1e-6)
    assert result.above_detection_limit
    assert result.status is Ge68Status.PASSED
    assert result.passed is True


def test_ge68_over_the_limit_fails() -> None:
    # 0.02 MBq after 48 h on 1000 MBq: 0.02·1.0051295/1000·100 = 0.0020103 % > 0.001 %
    result = ge68_breakthrough(
        ga68_at_elution_mbq=1000.0,
        elution_time=T0,
        remeasured_mbq=0.02,
        remeasured_at=T0 + timedelta(hours=48),
        detection_limit_mbq=0.001,
    )
    assert result.percent == pytest.approx(0.0020103, rel=1e-4)
    assert result.status is Ge68Status.FAILED
    assert result.passed is False


def test_ge68_below_the_detection_limit_says_so() -> None:
    # Reading 0.0005 MBq below a DL of 0.001 MBq: only "< DL" is known. On 1000 MBq the DL's
    # bound 0.001·1.0051295/1000·100 = 1.005e-4 % is within the limit: compliance shown.
    shown = ge68_breakthrough(
        ga68_at_elution_mbq=1000.0,
        elution_time=T0,
        remeasured_mbq=0.0005,
        remeasured_at=T0 + timedelta(hours=48),
        detection_limit_mbq=0.001,
    )
    assert not shown.above_detection_limit
    assert shown.bound_pct == pytest.approx(1.0051295e-4, rel=1e-6)
    assert shown.status is Ge68Status.PASSED_BELOW_DL
    # On a 50 MBq eluate the bound is 0.001·1.0051295/50·100 = 0.00201 % > 0.001 %: inconclusive
    small = ge68_breakthrough(
        ga68_at_elution_mbq=50.0,
        elution_time=T0,
        remeasured_mbq=0.0005,
        remeasured_at=T0 + timedelta(hours=48),
        detection_limit_mbq=0.001,
    )
    assert small.status is Ge68Status.INCONCLUSIVE_BELOW_DL
    assert small.passed is None


def test_ge68_remeasured_too_early() -> None:
    result = ge68_breakthrough(
        ga68_at_elution_mbq=1000.0,
        elution_time=T0,
        remeasured_mbq=0.002,
        remeasured_at=T0 + timedelta(hours=47),
        detection_limit_mbq=0.001,
    )
    assert result.status is Ge68Status.TOO_EARLY
    assert result.passed is None


def test_ga68_identity_by_half_life() -> None:
    t = np.arange(0, 40 * MINUTE, 5 * MINUTE)
    ga = 500.0 * np.exp(-NUCLIDES["Ga-68"].decay_constant * t)
    assert ga68_identity(list(t), list(ga)).passed
    f18 = 500.0 * np.exp(-NUCLIDES["F-18"].decay_constant * t)
    assert not ga68_identity(list(t), list(f18)).passed


def test_waste_release_date_ten_half_lives() -> None:
    # I-131 8.0207 d · 10 = 80.207 d; with Lu-177 (6.647 d) in the same container I-131 rules
    sealed = datetime(2026, 1, 1, tzinfo=UTC)
    expected = sealed + timedelta(days=80.207)
    assert release_date(["I-131"], sealed) == expected
    assert release_date(["Lu-177", "I131"], sealed) == expected
    # Tc-99m 6.015 h · 10 = 60.15 h
    assert release_date(["Tc-99m"], sealed) == sealed + timedelta(hours=60.15)
    with pytest.raises(NotEligibleError, match="120 d"):
        release_date(["Co-57"], sealed)  # 271.74 d
    assert release_date(["Sr-89"], sealed, half_lives=7) == sealed + timedelta(
        seconds=7 * 50.53 * DAY
    )


def test_release_survey_against_background() -> None:
    # Surface 0.11, 0.13, 0.12 µSv/h (mean 0.12, s² = 1e-4); background 0.10, 0.12, 0.11
    # (mean 0.11, s² = 1e-4): u = √(1e-4/3 + 1e-4/3) = 0.0081650; excess 0.01 ≤ 2u = 0.01633
    ok = release_survey([0.11, 0.13, 0.12], [0.10, 0.12, 0.11])
    assert ok.excess == pytest.approx(0.01)
    assert ok.combined_uncertainty == pytest.approx(0.0081650, rel=1e-4)
    assert ok.passed
    # Surface 0.20, 0.22, 0.21: excess 0.10 > 0.01633 → distinguishable, not releasable
    hot = release_survey([0.20, 0.22, 0.21], [0.10, 0.12, 0.11])
    assert hot.distinguishable
    assert not hot.passed
    with pytest.raises(ValueError, match="at least 3"):
        release_survey([0.1, 0.1], [0.1, 0.1, 0.1])


def test_receipt_expected_activity_decay_corrected() -> None:
    # 500 MBq F-18 at 08:00, assayed one half-life (109.77 min) later: expected 250 MBq;
    # measured 245 → (245 - 250)/250 = -2.0 %, within a 5 % tolerance, outside 1 %.
    ref = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    at = ref + timedelta(minutes=109.77)
    check = receipt_check(
        shipped_mbq=500.0,
        reference_time=ref,
        measured_mbq=245.0,
        measured_at=at,
        half_life_s=NUCLIDES["F-18"].half_life_s,
        tolerance_pct=5.0,
    )
    assert check.expected_mbq == pytest.approx(250.0)
    assert check.difference_pct == pytest.approx(-2.0)
    assert check.within_tolerance
    strict = receipt_check(
        shipped_mbq=500.0,
        reference_time=ref,
        measured_mbq=245.0,
        measured_at=at,
        half_life_s=NUCLIDES["F-18"].half_life_s,
        tolerance_pct=1.0,
    )
    assert not strict.within_tolerance
