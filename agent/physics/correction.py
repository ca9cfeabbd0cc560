"""Decay correction to any reference time, scalar or vectorised, with uncertainty propagation.

A(t1) = A(t0) · exp(-ln2 · Δt / T½), Δt = t1 - t0 (negative Δt corrects backwards).

The standard uncertainty of the result propagates the half-life uncertainty u(T½) (first order,
GUM): ∂A1/∂T½ = A1 · ln2 · Δt / T½², so u_T(A1) = |A1 · ln2 · Δt / T½²| · u(T½); an optional
uncertainty of the input activity adds in quadrature, relative: u_rel(A1)² = u_rel(A0)² +
(ln2 · Δt · u(T½) / T½²)². Time stamps are taken as exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

# decay_value (scalar, no numpy) lives with the table; re-exported here for callers.
from agent.physics.nuclides import LN2, NuclideTable
from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

_Value = TypeVar("_Value", float, "npt.NDArray[np.float64]")

# Units offered to people (TBq is accepted too); µ may be typed as u, µ or μ.
ACTIVITY_UNITS = ("Bq", "kBq", "MBq", "GBq", "TBq", "uCi", "mCi", "Ci")


class UnknownUnitError(ValueError):
    """An activity unit that is not one of `ACTIVITY_UNITS`."""

    def __init__(self, unit: str) -> None:
        super().__init__(
            f"unknown activity unit {unit!r}; expected one of {', '.join(ACTIVITY_UNITS)} "
            "(uCi may be written µCi)"
        )
        self.unit = unit


def activity_unit(unit: str) -> str:
    """Canonical spelling of an activity unit (`µCi` → `uCi`); `UnknownUnitError` otherwise."""
    canonical = canonical_unit(unit)
    if canonical not in ACTIVITY_TO_MBQ:
        raise UnknownUnitError(unit)
    return canonical


def convert_activity(value: _Value, from_unit: str, to_unit: str) -> _Value:
    """Convert an activity (scalar or numpy array) between Bq, kBq, MBq, GBq, µCi, mCi, Ci."""
    factor = ACTIVITY_TO_MBQ[activity_unit(from_unit)] / ACTIVITY_TO_MBQ[activity_unit(to_unit)]
    return value * factor




def decay_correct(
    activity: npt.ArrayLike,
    elapsed_s: npt.ArrayLike,
    half_life_s: float,
    half_life_uncertainty_s: float | None = None,
    activity_uncertainty: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray | None]:
    """Decay-correct activities by `elapsed_s` (broadcast), returning (values, uncertainties).

    Uncertainties are None when neither the half-life nor the activity uncertainty is known.
    """
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    if not half_life_s > 0:
        raise ValueError("half-life must be positive")
    a0 = np.asarray(activity, dtype=np.float64)
    dt = np.asarray(elapsed_s, dtype=np.float64)
    k = LN2 * dt / half_life_s
    with np.errstate(over="ignore"):  # centuries backwards overflow to inf; callers check
        a1: FloatArray = a0 * np.exp(-k)
    if half_life_uncertainty_s is None and activity_uncertainty is None:
        return a1, None
    rel_sq = np.zeros(np.broadcast(a1, k).shape, dtype=np.float64)
    if half_life_uncertainty_s is not None:
        rel_sq = rel_sq + (k * half_life_uncertainty_s / half_life_s) ** 2
    if activity_uncertainty is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_in = np.where(a0 != 0, np.asarray(activity_uncertainty, np.float64) / a0, 0.0)
        rel_sq = rel_sq + rel_in**2
    unc: FloatArray = np.abs(a1) * np.sqrt(rel_sq)
    return a1, unc


def epoch_seconds(times: Sequence[datetime] | npt.NDArray[Any]) -> FloatArray:
    """UTC seconds since the epoch of aware datetimes or numpy datetime64 values (UTC)."""
    import numpy as np  # noqa: PLC0415 - numpy (~10 MB) only when this runs
    arr = np.asarray(times)
    if np.issubdtype(arr.dtype, np.datetime64):
        micros = arr.astype("datetime64[us]").astype(np.int64)
        return micros.astype(np.float64) * 1e-6
    return np.fromiter((_aware(t).timestamp() for t in arr.ravel()), np.float64).reshape(arr.shape)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"time {t.isoformat()} has no time zone; give UTC or an offset")
    return t


@dataclass(frozen=True, slots=True)
class DecayResult:
    """One decay correction: the result, its standard uncertainty and what it rests on."""

    nuclide: str
    activity: float
    unit: str
    uncertainty: float | None
    half_life_s: float
    half_life_uncertainty_s: float | None
    source: str
    t_from: datetime
    t_to: datetime

    @property
    def elapsed_s(self) -> float:
        """t_to - t_from in seconds (negative for a backward correction)."""
        return (self.t_to - self.t_from).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """The `isoedge decay --json` object."""
        return {
            "activity": self.activity,
            "unit": self.unit,
            "uncertainty": self.uncertainty,
            "nuclide": self.nuclide,
            "half_life_s": self.half_life_s,
            "half_life_uncertainty_s": self.half_life_uncertainty_s,
            "from": _iso(self.t_from),
            "to": _iso(self.t_to),
            "elapsed_s": self.elapsed_s,
            "source": self.source,
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def correct(  # noqa: PLR0917 - reads as the verb: nuclide, activity, unit, from, to
    table: NuclideTable,
    nuclide: str,
    activity: float,
    unit: str,
    t_from: datetime,
    t_to: datetime,
    out_unit: str | None = None,
) -> DecayResult:
    """Decay-correct one activity from `t_from` to `t_to` (aware datetimes).

    Raises `UnknownNuclideError`, `UnknownUnitError` or `ValueError` (naive time, non-finite
    activity) with a message fit to show a person.
    """
    data = table[nuclide]
    in_unit = activity_unit(unit)
    shown_unit = activity_unit(out_unit) if out_unit else in_unit
    if not math.isfinite(activity):
        raise ValueError(f"activity must be a finite number (got {activity!r})")
    elapsed = (_aware(t_to) - _aware(t_from)).total_seconds()
    value, unc = decay_correct(
        convert_activity(activity, in_unit, shown_unit),
        elapsed,
        data.half_life_s,
        data.uncertainty_s,
    )
    return DecayResult(
        nuclide=data.name,
        activity=float(value),
        unit=shown_unit,
        uncertainty=None if unc is None else float(unc),
        half_life_s=data.half_life_s,
        half_life_uncertainty_s=data.uncertainty_s,
        source=data.source,
        t_from=t_from,
        t_to=t_to,
    )


def correct_to_reference(
    table: NuclideTable,
    nuclide: str,
    activities: npt.ArrayLike,
    times: Sequence[datetime] | npt.NDArray[Any],
    ref_time: datetime,
) -> tuple[FloatArray, FloatArray | None]:
    """Batch: each activity measured at `times[i]`, expressed at `ref_time` (same unit)."""
    data = table[nuclide]
    elapsed = _aware(ref_time).timestamp() - epoch_seconds(times)
    return decay_correct(activities, elapsed, data.half_life_s, data.uncertainty_s)
