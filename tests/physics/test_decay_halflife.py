"""Half-life fit and radionuclidic identity check on simulated noisy series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.physics import NUCLIDES, FitError, check_identity, fit_half_life
from agent.physics.nuclides import MINUTE


def _series(half_life_s, rng, *, n=12, span_s=60 * MINUTE, a0=5000.0, rel_noise=0.01):
    t = np.linspace(0.0, span_s, n)
    true = a0 * np.exp(-math.log(2) * t / half_life_s)
    return t, true * (1 + rel_noise * rng.standard_normal(n)), true * rel_noise


def test_exact_series_gives_exact_half_life():
    t = np.arange(0, 3600, 300.0)
    a = 1000 * 2 ** (-t / 6586.2)
    fit = fit_half_life(t, a)
    assert fit.half_life_s == pytest.approx(6586.2, rel=1e-9)
    assert fit.activity_at_first == pytest.approx(1000.0, rel=1e-9)
    assert fit.span_s == 3300.0


@pytest.mark.parametrize("with_sigma", [False, True])
def test_fit_recovers_true_half_life_within_stated_uncertainty(with_sigma):
    true = NUCLIDES["F-18"].half_life_s
    rng = np.random.default_rng(20261122)
    within_1u = within_3u = 0
    trials = 400
    for _ in range(trials):
        t, a, sigma = _series(true, rng)
        fit = fit_half_life(t, a, sigma if with_sigma else None)
        error = abs(fit.half_life_s - true)
        within_1u += error <= fit.uncertainty_s
        within_3u += error <= 3 * fit.uncertainty_s
    # A correct standard uncertainty covers the truth ~68% of the time at 1u, >99% at 3u.
    assert 0.60 <= within_1u / trials <= 0.78
    assert within_3u / trials >= 0.98


def test_single_noisy_f18_series_passes_identity():
    rng = np.random.default_rng(7)
    t, a, sigma = _series(NUCLIDES["F-18"].half_life_s, rng, n=10, span_s=30 * MINUTE)
    result = check_identity("F-18", t, a, sigma=sigma)
    assert result.passed
    assert 105 * MINUTE < result.fit.half_life_s < 115 * MINUTE
    assert "within 105-115 min" in result.message


def test_ga68_labelled_f18_is_flagged():
    rng = np.random.default_rng(11)
    t, a, _ = _series(NUCLIDES["Ga-68"].half_life_s, rng, n=10, span_s=30 * MINUTE)
    result = check_identity("F-18", t, a)
    assert not result.passed
    assert result.conclusive
    assert result.fit.half_life_s == pytest.approx(NUCLIDES["Ga-68"].half_life_s, rel=0.05)
    assert "OUTSIDE" in result.message
    assert "not F-18?" in result.message


def test_series_that_does_not_decay_fails_without_nan():
    t = np.arange(0, 1800, 180.0)
    a = np.full(t.shape, 100.0) + np.linspace(0, 0.5, t.size)  # a long-lived source
    result = check_identity("F-18", t, a)
    assert math.isinf(result.fit.half_life_s)
    assert not result.passed
    assert "no decay measured" in result.message


@pytest.mark.parametrize(
    ("t", "a", "match"),
    [([0, 1], [10, 9], "at least 3"), ([0, 1, 2], [10, 0, 8], "positive"),
     ([5, 5, 5], [10, 9, 8], "same time"), ([0, 1, 2], [10, float("nan"), 8], "finite")],
)  # fmt: skip
def test_unfittable_series_raise_fit_error(t, a, match):
    with pytest.raises(FitError, match=match):
        fit_half_life(t, a)


def test_window_is_required_without_a_default():
    with pytest.raises(ValueError, match="no default"):
        check_identity("Tc-99m", [0, 1, 2], [3, 2, 1])
