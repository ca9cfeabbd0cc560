"""Radionuclidic identity: fit a half-life to repeated measurements of one sample.

Weighted linear least squares on ln A(t) = ln A0 - λ t. With standard uncertainties sigma_i of the
activities, ln A_i has sigma_i / A_i and weight w_i = (A_i / sigma_i)²; the variance of λ is
1 / Σ w_i (t_i - t̄)², t̄ the weighted mean time. When the scatter is larger than the stated
sigma_i (reduced χ² > 1) the variance is scaled by χ² (Birge ratio), so the stated uncertainty is
never optimistic. Without sigma_i the readings are taken to share one relative uncertainty, which
is estimated from the residuals (n ≥ 3). T½ = ln2 / λ, u(T½) = T½ · u(λ) / λ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.physics.nuclides import ACCEPTANCE_WINDOWS, LN2, MINUTE

if TYPE_CHECKING:
    import numpy.typing as npt

# Acceptance windows for the radionuclidic identity test by half-life, in seconds.
# F-18: 105-115 min (Ph. Eur. monographs of F-18 preparations, USP <Fludeoxyglucose F 18>).
# Radionuclidic identity windows live with the nuclide data (no numpy needed to read them).


class FitError(ValueError):
    """The series cannot be fitted (too few points, non-positive activity, no time span)."""


@dataclass(frozen=True, slots=True)
class HalfLifeFit:
    """The fitted decay of one sample."""

    decay_constant: float  # λ, 1/s (≤ 0 when the series does not decay)
    decay_constant_uncertainty: float
    activity_at_first: float  # fitted activity at the first time point
    n_points: int
    span_s: float
    chi2_reduced: float | None  # None when no sigma was given (χ² then defines the scatter)

    @property
    def half_life_s(self) -> float:
        """T½ in seconds; infinity when the series does not decay."""
        return LN2 / self.decay_constant if self.decay_constant > 0 else math.inf

    @property
    def uncertainty_s(self) -> float:
        """Standard uncertainty of T½ (infinity when the series does not decay)."""
        if self.decay_constant <= 0:
            return math.inf
        return self.half_life_s * self.decay_constant_uncertainty / self.decay_constant


def fit_half_life(
    t_s: npt.ArrayLike,
    activity: npt.ArrayLike,
    sigma: npt.ArrayLike | None = None,
) -> HalfLifeFit:
    """Fit λ and T½ to activities measured at times `t_s` (seconds, any origin)."""
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    t = np.asarray(t_s, dtype=np.float64).ravel()
    a = np.asarray(activity, dtype=np.float64).ravel()
    if t.shape != a.shape:
        raise FitError("times and activities differ in length")
    n = t.size
    # Two points define the line; without stated sigma a third is needed to estimate the scatter.
    min_points = 3 if sigma is None else 2
    if n < min_points:
        raise FitError(f"need at least {min_points} measurements, got {n}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(t))):
        raise FitError("times and activities must be finite")
    if np.any(a <= 0):
        raise FitError("activities must be positive")
    y = np.log(a)
    if sigma is None:
        w = np.ones(n)
    else:
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), a.shape)
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise FitError("uncertainties must be positive")
        w = (a / s) ** 2
    t_mean = float(np.sum(w * t) / np.sum(w))
    tc = t - t_mean
    sxx = float(np.sum(w * tc * tc))
    if sxx <= 0:
        raise FitError("all measurements at the same time")
    slope = float(np.sum(w * tc * y) / sxx)
    intercept = float(np.sum(w * y) / np.sum(w))  # ln A at t_mean
    resid = y - (intercept + slope * tc)
    chi2 = float(np.sum(w * resid * resid))
    dof = n - 2
    if sigma is None:
        var_slope = chi2 / dof / sxx
        chi2_red = None
    else:
        chi2_red = chi2 / dof if dof > 0 else None
        var_slope = max(1.0, chi2_red or 0.0) / sxx
    t0 = float(np.min(t))
    return HalfLifeFit(
        decay_constant=-slope,
        decay_constant_uncertainty=math.sqrt(var_slope),
        activity_at_first=math.exp(intercept + slope * (t0 - t_mean)),
        n_points=n,
        span_s=float(np.max(t) - t0),
        chi2_reduced=chi2_red,
    )


@dataclass(frozen=True, slots=True)
class IdentityResult:
    """A half-life identity check: the fit against an acceptance window."""

    nuclide: str
    fit: HalfLifeFit
    window_s: tuple[float, float]

    @property
    def passed(self) -> bool:
        """The fitted half-life lies in the window (as the pharmacopoeias state the test)."""
        low, high = self.window_s
        return low <= self.fit.half_life_s <= high

    @property
    def conclusive(self) -> bool:
        """The ±2u interval of the fit lies wholly inside (pass) or outside (fail) the window."""
        low, high = self.window_s
        t, u = self.fit.half_life_s, 2 * self.fit.uncertainty_s
        if self.passed:
            return low <= t - u and t + u <= high
        return t + u < low or t - u > high

    @property
    def message(self) -> str:
        """One line for a person."""
        low, high = (w / MINUTE for w in self.window_s)
        fit = self.fit
        if math.isinf(fit.half_life_s):
            measured = "no decay measured"
        else:
            measured = f"T½ {fit.half_life_s / MINUTE:.2f} ± {fit.uncertainty_s / MINUTE:.2f} min"
        verdict = "within" if self.passed else "OUTSIDE"
        hint = "" if self.passed else f"; not {self.nuclide}?"
        return (
            f"{self.nuclide} identity: {measured} ({fit.n_points} points over "
            f"{fit.span_s / MINUTE:.1f} min), {verdict} {low:g}-{high:g} min{hint}"
        )


def check_identity(
    nuclide: str,
    t_s: npt.ArrayLike,
    activity: npt.ArrayLike,
    window_s: tuple[float, float] | None = None,
    sigma: npt.ArrayLike | None = None,
) -> IdentityResult:
    """Fit the series and compare with the window (default: `ACCEPTANCE_WINDOWS[nuclide]`)."""
    if window_s is None:
        if nuclide not in ACCEPTANCE_WINDOWS:
            raise ValueError(f"no default half-life acceptance window for {nuclide}; give one")
        window_s = ACCEPTANCE_WINDOWS[nuclide]
    return IdentityResult(nuclide, fit_half_life(t_s, activity, sigma), window_s)
