"""Waste decay-in-storage: the release date and the release survey against background.

10 CFR 35.92: material with a physical half-life of at most 120 days may be held for decay in
storage and disposed of without regard to its radioactivity once a survey of the container's
surface, with an appropriate meter and without interposed shielding, cannot distinguish it from
background. Many sites (and regulators elsewhere) still plan the hold as a number of
half-lives (10 half-lives leave 2^-10 ≈ 0.1 % of the activity): the release date here is the
date sealed + n · T½ of the longest-lived nuclide in the container, n from the site's
configuration; the survey decides, the date only schedules it.

"Cannot be distinguished from background": the mean surface reading exceeds the mean
background by no more than k combined standard uncertainties of the two means,
u = √(s_s²/n_s + s_b²/n_b) (sample standard deviations of the monitor's readings), k = 2 by
default. With identical readings (u = 0) any excess distinguishes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.physics.nuclides import (
    DAY,
    LN2,
    NUCLIDES,
    Nuclide,
    UnknownNuclideError,
    normalize_nuclide,
)

MAX_HALF_LIFE_S = 120 * DAY
"""10 CFR 35.92(a): decay-in-storage only for half-lives of at most 120 days."""
DEFAULT_HALF_LIVES = 10


class NotEligibleError(ValueError):
    """A nuclide whose half-life is too long for decay-in-storage."""

    def __init__(self, nuclide: str, half_life_s: float) -> None:
        super().__init__(
            f"{nuclide}: half-life {half_life_s / DAY:.4g} d exceeds 120 d; "
            "not for decay-in-storage"
        )
        self.nuclide = nuclide
        self.half_life_s = half_life_s


def release_date(
    nuclides: Iterable[str],
    sealed_at: datetime,
    half_lives: float = DEFAULT_HALF_LIVES,
    table: Mapping[str, Nuclide] = NUCLIDES,
    max_half_life_s: float = MAX_HALF_LIFE_S,
) -> datetime:
    """sealed_at + `half_lives` x the longest half-life; `NotEligibleError` over 120 d."""
    names = list(nuclides)
    if not names:
        raise ValueError("a container holds at least one nuclide")
    if not half_lives > 0:
        raise ValueError("the number of half-lives must be positive")
    longest = 0.0
    for name in names:
        canonical = normalize_nuclide(name)
        if canonical is None:
            raise UnknownNuclideError(name)
        nuclide = table[canonical]
        if nuclide.half_life_s > max_half_life_s:
            raise NotEligibleError(nuclide.name, nuclide.half_life_s)
        longest = max(longest, nuclide.half_life_s)
    return sealed_at + timedelta(seconds=half_lives * longest)


def remaining_fraction(elapsed_s: float, half_life_s: float) -> float:
    """A(t)/A(0) after `elapsed_s`."""
    return math.exp(-LN2 * elapsed_s / half_life_s)


@dataclass(frozen=True, slots=True)
class SurveyResult:
    """A release survey: surface readings against background readings (same unit)."""

    surface_mean: float
    background_mean: float
    combined_uncertainty: float
    k: float
    n_surface: int
    n_background: int

    @property
    def excess(self) -> float:
        """Mean surface minus mean background."""
        return self.surface_mean - self.background_mean

    @property
    def distinguishable(self) -> bool:
        """The surface can be told from background (the container is not yet releasable)."""
        return self.excess > self.k * self.combined_uncertainty

    @property
    def passed(self) -> bool:
        """Indistinguishable from background: the container may be released."""
        return not self.distinguishable


def release_survey(
    surface: Sequence[float],
    background: Sequence[float],
    k: float = 2.0,
    min_readings: int = 3,
) -> SurveyResult:
    """Compare a monitor's readings at the container's surface with its background readings."""
    if len(surface) < min_readings or len(background) < min_readings:
        raise ValueError(f"need at least {min_readings} surface and background readings")
    values = [*surface, *background]
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError("readings must be finite numbers ≥ 0")
    u = math.sqrt(
        statistics.variance(surface) / len(surface)
        + statistics.variance(background) / len(background)
    )
    return SurveyResult(
        statistics.fmean(surface),
        statistics.fmean(background),
        u,
        k,
        len(surface),
        len(background),
    )
