"""Linearity by the decay method: one sample measured as it decays, against a fitted exponential.

A high-activity Tc-99m or F-18 sample is measured repeatedly over days while it decays from
the top of the range in use to the bottom. ln A(t) is fitted with a straight line robustly:
a Theil-Sen start (median of pairwise slopes), least trimmed squares on the best 70 % of the
points, then least squares on every point within 3 standard deviations of that line. Points
where the calibrator is not linear (typically the highest activities, where ion
recombination lowers the reading) therefore do not drag the fit, as long as they are fewer
than about 30 % of the series: the exponential follows the linear part of the range, and
those points stand out. Each point's deviation from the fit is
judged against the linearity tolerance; the fitted half-life is compared with the table, which
checks the series itself (wrong nuclide, clock or time-scale problems, a drift over the whole
range). The fitted half-life's uncertainty comes from an ordinary least-squares fit of the
points the robust fit kept (agent.physics.halflife).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.core.messages import Message, msg, rounded
from agent.core.reading import rfc3339
from agent.physics.halflife import FitError, fit_half_life

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from agent.qc.programme import Tolerance

_KEEP = 0.7  # least trimmed squares: the fit rests on the best 70 % of the points
_REJECT_SIGMA = 3.0
_SCALE_FLOOR = 2e-4  # relative: noise-free data must not make every point an outlier
_ITERATIONS = 30
_PAIRS_MAX_POINTS = 1500  # Theil-Sen on at most this many points (pairs grow as n²)
_RANK = {"pass": 0, "action": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class LinearityPoint:
    """One measurement of the series and its deviation from the fit."""

    index: int
    t: datetime
    measured_mbq: float
    fit_mbq: float
    deviation_pct: float
    result: str
    used_in_fit: bool
    reading_id: str | None = None
    elapsed_s: float = 0.0

    def describe(self) -> str:
        """`point 3 (+12.0 h, 45.20 GBq): -8.00 % fail`."""
        return (
            f"point {self.index} (+{self.elapsed_s / 3600:.1f} h, "
            f"{_pretty(self.measured_mbq)}): {self.deviation_pct:+.2f} % {self.result}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON form (records, reports)."""
        return {
            "index": self.index,
            "t": rfc3339(self.t),
            "measured_mbq": self.measured_mbq,
            "fit_mbq": self.fit_mbq,
            "deviation_pct": round(self.deviation_pct, 4),
            "result": self.result,
            "used_in_fit": self.used_in_fit,
            "reading": self.reading_id,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True, slots=True)
class LinearityResult:
    """The analysed decay series."""

    nuclide: str
    points: list[LinearityPoint]
    half_life_fit_s: float
    half_life_fit_uncertainty_s: float
    half_life_table_s: float
    half_life_deviation_pct: float
    half_life_ok: bool
    result: str

    @property
    def failing(self) -> list[LinearityPoint]:
        """Points outside the action band, in time order."""
        return [p for p in self.points if p.result != "pass"]

    @property
    def worst(self) -> LinearityPoint:
        """The point deviating most from the fit."""
        return max(self.points, key=lambda p: abs(p.deviation_pct))

    @property
    def range_mbq(self) -> tuple[float, float]:
        """Lowest and highest activity measured."""
        values = [p.measured_mbq for p in self.points]
        return min(values), max(values)

    def summary(self) -> str:
        """One paragraph for a person."""
        low, high = self.range_mbq
        text = (
            f"linearity {self.result}: {len(self.points)} points from {_pretty(high)} to "
            f"{_pretty(low)}; worst {self.worst.deviation_pct:+.2f} %; fitted T½ "
            f"{self.half_life_fit_s / 3600:.4f} ± {self.half_life_fit_uncertainty_s / 3600:.4f} h"
            f" vs table {self.half_life_table_s / 3600:.4f} h "
            f"({self.half_life_deviation_pct:+.2f} %{'' if self.half_life_ok else ', OUTSIDE'})"
        )
        if self.failing:
            text += "; outside tolerance: " + "; ".join(p.describe() for p in self.failing)
        return text

    def summary_message(self) -> Message:
        """`summary()` as data, for a person in any language (agent/core/messages.py)."""
        low, high = self.range_mbq
        text = msg(
            "qc.run.linearity", result=self.result, points=len(self.points),
            high=rounded(high, 5), low=rounded(low, 5),
            deviation=round(self.worst.deviation_pct, 2),
            fit=round(self.half_life_fit_s / 3600, 4),
            uncertainty=round(self.half_life_fit_uncertainty_s / 3600, 4),
            table=round(self.half_life_table_s / 3600, 4),
            half_life_deviation=round(self.half_life_deviation_pct, 2),
        )
        if not self.failing:
            return text
        return msg("qc.run.linearity.failing", summary=text, failing=[
            msg("qc.run.linearity.point", index=p.index, elapsed=round(p.elapsed_s / 3600, 1),
                measured=rounded(p.measured_mbq, 5), deviation=round(p.deviation_pct, 2),
                result=p.result)
            for p in self.failing
        ])

    def as_dict(self) -> dict[str, Any]:
        """The `linearity` object of a QC record."""
        low, high = self.range_mbq
        return {
            "nuclide": self.nuclide,
            "method": "decay",
            "points": [p.as_dict() for p in self.points],
            "range_mbq": [low, high],
            "half_life_fit_s": self.half_life_fit_s,
            "half_life_fit_uncertainty_s": self.half_life_fit_uncertainty_s,
            "half_life_table_s": self.half_life_table_s,
            "half_life_deviation_pct": round(self.half_life_deviation_pct, 4),
            "half_life_ok": self.half_life_ok,
            "failing_points": [p.describe() for p in self.failing],
        }


def _pretty(mbq: float) -> str:
    if mbq >= 1000:  # noqa: PLR2004
        return f"{mbq / 1000:.2f} GBq"
    return f"{mbq:.4g} MBq"


def robust_exponential_fit(
    t_s: Sequence[float], activity: Sequence[float]
) -> tuple[float, float, np.ndarray]:
    """Fit ln A = a - λ t robustly; returns (a, λ, weights: 1 kept, 0 not) with t from t_s[0].

    Theil-Sen start, then least trimmed squares by concentration steps (the `_KEEP` share of
    points with the smallest residuals, refitted until the subset is stable), then the points
    within 3 standard deviations of that fit are fitted by least squares.
    """
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    t = np.asarray(t_s, dtype=np.float64)
    t = t - t[0]
    y = np.log(np.asarray(activity, dtype=np.float64))
    a, b = _theil_sen(t, y)
    h = max(3, math.ceil(_KEEP * t.size))
    subset: np.ndarray = np.arange(t.size)
    for _ in range(_ITERATIONS):
        chosen = np.sort(np.argsort(np.abs(y - (a + b * t)))[:h])
        a, b = _ols(t[chosen], y[chosen])
        if np.array_equal(chosen, subset):
            break
        subset = chosen
    resid = y - (a + b * t)
    # The spread of the kept share understates the SD; 0.6 is the ratio for a normal sample.
    sigma = max(float(np.std(resid[subset], ddof=2)) / 0.6, _SCALE_FLOOR)
    keep = np.abs(resid) <= _REJECT_SIGMA * sigma
    if np.count_nonzero(keep) >= 3:  # noqa: PLR2004 - a line and its scatter
        a, b = _ols(t[keep], y[keep])
    weights: np.ndarray = keep.astype(np.float64)
    return a, -b, weights


def _ols(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    t_mean, y_mean = float(np.mean(t)), float(np.mean(y))
    sxx = float(np.sum((t - t_mean) ** 2))
    if sxx <= 0:
        raise FitError("the points the fit kept span no time")
    b = float(np.sum((t - t_mean) * (y - y_mean)) / sxx)
    return y_mean - b * t_mean, b


def _theil_sen(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope: median of pairwise slopes, median intercept (29 % breakdown)."""
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    step = max(1, t.size // _PAIRS_MAX_POINTS)
    ts, ys = t[::step], y[::step]
    i, j = np.triu_indices(ts.size, k=1)
    dt = ts[j] - ts[i]
    keep = dt > 0
    slope = float(np.median((ys[j] - ys[i])[keep] / dt[keep])) if np.any(keep) else 0.0
    return float(np.median(y - slope * t)), slope


def analyse_decay(  # noqa: PLR0917 - the series and what it is judged against
    nuclide: str,
    times: Sequence[datetime],
    activities_mbq: Sequence[float],
    half_life_table_s: float,
    tolerance: Tolerance,
    half_life_pct: float,
    reading_ids: Sequence[str | None] | None = None,
    time_scale: float = 1.0,
) -> LinearityResult:
    """Analyse a decay series. `time_scale` > 1 only for a simulated, accelerated decay.

    Raises FitError for fewer than four points, non-positive activities or no time span.
    """
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    if len(times) != len(activities_mbq) or len(times) < 4:  # noqa: PLR2004
        raise FitError(f"need at least 4 measurements of the sample, got {len(times)}")
    if any(not (math.isfinite(a) and a > 0) for a in activities_mbq):
        raise FitError("activities must be positive")
    t0 = times[0]
    t_s = [(t - t0).total_seconds() * time_scale for t in times]
    a, lam, weights = robust_exponential_fit(t_s, activities_mbq)
    kept = weights > 0
    t_arr = np.asarray(t_s)
    a_arr = np.asarray(activities_mbq, dtype=np.float64)
    ols = fit_half_life(t_arr[kept], a_arr[kept])
    if lam <= 0:
        raise FitError("the series does not decay")
    half_life = math.log(2) / lam
    uncertainty = ols.uncertainty_s if math.isfinite(ols.uncertainty_s) else math.inf
    ids = list(reading_ids) if reading_ids is not None else [None] * len(times)
    points = []
    for index, (t, measured, ts, used, rid) in enumerate(
        zip(times, activities_mbq, t_s, kept, ids, strict=True), start=1
    ):
        fit = math.exp(a - lam * ts)
        deviation = (measured / fit - 1.0) * 100.0
        points.append(
            LinearityPoint(
                index, t, float(measured), fit, deviation, tolerance.judge(deviation),
                bool(used), rid, ts,
            )
        )  # fmt: skip
    hl_dev = (half_life - half_life_table_s) / half_life_table_s * 100.0
    hl_ok = abs(hl_dev) <= half_life_pct
    result = max((p.result for p in points), key=_RANK.__getitem__)
    if not hl_ok:
        result = "fail"
    return LinearityResult(
        nuclide, points, half_life, uncertainty, half_life_table_s, hl_dev, hl_ok, result
    )


__all__ = ["LinearityPoint", "LinearityResult", "analyse_decay", "robust_exponential_fit"]
