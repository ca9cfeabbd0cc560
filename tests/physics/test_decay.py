"""Decay correction, nuclide table and unit conversion, against radioactivedecay (ICRP-107)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import radioactivedecay as rd
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.physics import (
    NUCLIDES,
    NuclideTable,
    UnknownNuclideError,
    UnknownUnitError,
    convert_activity,
    correct,
    correct_to_reference,
    decay_correct,
    decay_value,
    normalize_nuclide,
)
from agent.physics.nuclides import DAY, HOUR, LN2, MINUTE, PH_EUR
from agent.service.config import NuclideOverride

T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
SPANS_S = [5 * MINUTE, 90 * MINUTE, 6 * HOUR, 3 * DAY, 30 * DAY, 365 * DAY]
DEVICES_MD_NUCLIDES = [
    "F-18", "C-11", "N-13", "O-15", "Rb-82", "Ga-68", "Ge-68", "Cu-64", "Zr-89", "Tc-99m",
    "Mo-99", "I-123", "I-131", "In-111", "Lu-177", "Y-90", "Ra-223", "Ac-225", "Tl-201",
    "Sr-89", "Sm-153", "Cs-137", "Co-57", "Ba-133",
]  # fmt: skip


def test_table_has_every_nuclide_of_devices_md_with_a_source():
    for name in DEVICES_MD_NUCLIDES:
        nuclide = NUCLIDES[name]
        assert nuclide.half_life_s > 0
        assert nuclide.source


@pytest.mark.parametrize("name", sorted(NUCLIDES))
def test_half_life_agrees_with_radioactivedecay(name):
    reference = rd.Nuclide(name).half_life("s")
    ours = NUCLIDES[name]
    if ours.source == PH_EUR and ours.uncertainty_s is not None:
        # Ph. Eur./ENSDF values agree with ICRP-107 within their stated uncertainty
        assert abs(ours.half_life_s - reference) <= ours.uncertainty_s
    else:
        assert ours.half_life_s == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("name", sorted(NUCLIDES))
def test_decay_agrees_with_radioactivedecay_from_minutes_to_a_year(name):
    ours = NUCLIDES[name]
    reference_half_life = rd.Nuclide(name).half_life("s")
    checked = 0
    for span in SPANS_S:
        if span / ours.half_life_s > 30:  # below 1e-9 of the start: nothing left to compare
            continue
        expected = rd.Inventory({name: 1.0e9}, "Bq").decay(span, "s").activities("Bq")[name]
        result = correct(NuclideTable(), name, 1000.0, "MBq", T0, T0 + timedelta(seconds=span))
        # "Within the difference of the data sets": the two half-lives decay apart by
        # |Δλ|·t; identical data agree to rounding.
        d_lambda = abs(LN2 / ours.half_life_s - LN2 / reference_half_life)
        allowed = math.expm1(d_lambda * span) + 1e-9
        assert result.activity * 1e6 == pytest.approx(expected, rel=allowed), span
        checked += 1
    assert checked >= 1


def test_at_least_ten_nuclides_compared_over_a_year():
    long_lived = [n for n in NUCLIDES.values() if 365 * DAY / n.half_life_s <= 30]
    assert len(long_lived) >= 10


def test_backward_correction_increases_activity():
    result = correct(NuclideTable(), "F-18", 500, "MBq", T0, T0 - timedelta(minutes=109.77))
    assert result.activity == pytest.approx(1000.0, rel=1e-12)
    assert result.elapsed_s < 0


def test_uncertainty_matches_numerical_derivative():
    f18 = NUCLIDES["F-18"]
    dt = 4 * HOUR
    value, unc = decay_correct(1000.0, dt, f18.half_life_s, f18.uncertainty_s)
    assert unc is not None
    h = 1e-3
    deriv = (
        decay_value(1000.0, dt, f18.half_life_s + h) - decay_value(1000.0, dt, f18.half_life_s - h)
    ) / (2 * h)
    assert float(unc) == pytest.approx(abs(deriv) * f18.uncertainty_s, rel=1e-6)
    assert float(value) == pytest.approx(1000.0 * 2 ** (-dt / f18.half_life_s))


def test_uncertainty_combines_activity_uncertainty_in_quadrature():
    _, unc = decay_correct(100.0, 0.0, 6586.2, 3.0, activity_uncertainty=2.0)
    assert unc is not None
    assert float(unc) == pytest.approx(2.0)  # no elapsed time: only the activity's own
    _, unc = decay_correct(100.0, 6586.2, 6586.2, 3.0, activity_uncertainty=2.0)
    assert unc is not None
    rel_t = LN2 * 3.0 / 6586.2
    assert float(unc) == pytest.approx(50.0 * math.hypot(0.02, rel_t))


def test_no_uncertainty_when_none_is_known():
    result = correct(NuclideTable(), "Tc-99m", 1, "GBq", T0, T0 + timedelta(hours=6))
    assert result.uncertainty is None
    assert result.to_json()["uncertainty"] is None


def test_batch_equals_scalar_and_broadcasts():
    f18 = NUCLIDES["F-18"]
    activities = np.array([100.0, 200.0, 300.0])
    times = [T0 + timedelta(minutes=m) for m in (0, 30, 60)]
    ref = T0 + timedelta(minutes=120)
    values, unc = correct_to_reference(NuclideTable(), "F-18", activities, times, ref)
    assert unc is not None
    for value, a, t in zip(values, activities, times, strict=True):
        assert value == pytest.approx(decay_value(a, (ref - t).total_seconds(), f18.half_life_s))
    datetimes64 = np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[us]")
    values64, _ = correct_to_reference(NuclideTable(), "F-18", activities, datetimes64, ref)
    np.testing.assert_allclose(values64, values, rtol=1e-12)


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        correct(NuclideTable(), "F-18", 1, "MBq", T0.replace(tzinfo=None), T0)


@given(
    name=st.sampled_from(sorted(NUCLIDES)),
    activity=st.floats(min_value=1e-6, max_value=1e6),
    half_lives=st.floats(min_value=-20, max_value=20),
)
@settings(max_examples=300, deadline=None)
def test_forward_then_back_returns_the_input(name, activity, half_lives):
    table = NuclideTable()
    t1 = T0 + timedelta(seconds=half_lives * NUCLIDES[name].half_life_s)
    forward = correct(table, name, activity, "MBq", T0, t1)
    back = correct(table, name, forward.activity, "MBq", t1, T0)
    assert back.activity == pytest.approx(activity, rel=1e-9)


@given(
    value=st.floats(min_value=1e-9, max_value=1e12),
    a=st.sampled_from(["Bq", "kBq", "MBq", "GBq", "µCi", "uCi", "mCi", "Ci"]),
    b=st.sampled_from(["Bq", "kBq", "MBq", "GBq", "μCi", "uCi", "mCi", "Ci"]),
)
def test_unit_conversion_round_trips(value, a, b):
    assert convert_activity(convert_activity(value, a, b), b, a) == pytest.approx(value, rel=1e-12)


def test_unit_conversion_values():
    assert convert_activity(1.0, "mCi", "MBq") == pytest.approx(37.0)
    assert convert_activity(1.0, "Ci", "GBq") == pytest.approx(37.0)
    assert convert_activity(1.0, "µCi", "kBq") == pytest.approx(37.0)
    assert convert_activity(1.0, "GBq", "Bq") == pytest.approx(1e9)
    with pytest.raises(UnknownUnitError, match="unknown activity unit 'mSv'"):
        convert_activity(1.0, "mSv", "MBq")


def test_result_in_another_unit():
    result = correct(NuclideTable(), "F-18", 10, "mCi", T0, T0, out_unit="MBq")
    assert result.activity == pytest.approx(370.0)
    assert result.unit == "MBq"


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("F 18", "F-18"), ("18F", "F-18"), ("f-18", "F-18"), ("Tc99m", "Tc-99m"), ("99mTc", "Tc-99m"),
     ("CS-137", "Cs-137"), ("Ga 68", "Ga-68"), ("Xx-1", None), ("", None)],
)  # fmt: skip
def test_spellings(spelling, name):
    assert normalize_nuclide(spelling) == name


@dataclass
class _Override:
    half_life_s: float
    uncertainty_s: float | None
    source: str


def test_site_override_is_applied_with_its_source():
    table = NuclideTable(
        {
            "tc99m": NuclideOverride(
                half_life_s=6.0072 * HOUR, uncertainty_s=3.2, source="ENSDF 2024"
            )
        }
    )
    assert table["Tc-99m"].half_life_s == pytest.approx(6.0072 * HOUR)
    assert table["Tc-99m"].source == "ENSDF 2024"
    assert table.overridden == ["Tc-99m"]
    result = correct(table, "Tc-99m", 1000, "MBq", T0, T0 + timedelta(hours=6))
    assert result.uncertainty is not None
    assert result.source == "ENSDF 2024"
    assert NuclideTable()["Tc-99m"].half_life_s == pytest.approx(6.015 * HOUR)


def test_override_of_unknown_nuclide_is_refused():
    with pytest.raises(ValueError, match=r"nuclides\.'F-81'"):
        NuclideTable({"F-81": _Override(100.0, None, "typo")})


def test_unknown_nuclide_message_lists_the_table():
    with pytest.raises(UnknownNuclideError) as info:
        NuclideTable()["Unobtainium-1"]
    assert "F-18" in str(info.value)
    assert "unknown nuclide" in str(info.value)
