"""Half-lives of the nuclides a radiopharmacy meets, with their uncertainty and source.

Half-lives are those of ICRP Publication 107 (2008) as tabulated in the `radioactivedecay`
package (data set `icrp107_ame2020_nubase2020`). ICRP-107 gives no uncertainties, so a
standard uncertainty is attached only where a citable evaluation gives one: the table of the
European Pharmacopoeia, chapter 5.7 (01/2008:50700, values from the NNDC/ENSDF data base),
for C-11, N-13, O-15, F-18 and Cr-51. For C-11 the Ph. Eur. value 20.385(20) min is used
(ICRP-107 rounds it to 20.39 min). Elsewhere `uncertainty_s` is None ("not known"), never
invented. Data sets differ by up to ~0.3% (e.g. ENSDF Tc-99m 6.0072 h vs ICRP-107 6.015 h):
a site may override any value in its configuration (`[nuclides."Tc-99m"] half_life_s = ...`),
which `NuclideTable` applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
YEAR = 365.2422 * DAY  # the year used by ICRP-107 / radioactivedecay (mean tropical year)
LN2 = math.log(2.0)

ICRP107 = "ICRP-107 (2008), via radioactivedecay"
PH_EUR = "Ph. Eur. 5.7 (01/2008:50700), NNDC/ENSDF evaluation"


@dataclass(frozen=True, slots=True)
class Nuclide:
    """A nuclide's half-life (seconds) and its standard uncertainty, with the data source."""

    name: str
    half_life_s: float
    uncertainty_s: float | None
    source: str = ICRP107
    note: str = ""

    @property
    def decay_constant(self) -> float:
        """λ = ln 2 / T½ in 1/s."""
        return LN2 / self.half_life_s


def _n(name: str, value: float, unit: float, unc: float | None = None, note: str = "") -> Nuclide:
    """An ICRP-107 value (no uncertainty unless cited in `note`)."""
    return Nuclide(name, value * unit, None if unc is None else unc * unit, ICRP107, note)


def _pe(name: str, value: float, unit: float, unc: float, note: str = "") -> Nuclide:
    """A value with its standard uncertainty from the Ph. Eur. 5.7 table."""
    return Nuclide(name, value * unit, unc * unit, PH_EUR, note)


NUCLIDES: dict[str, Nuclide] = {
    n.name: n
    for n in (
        # PET
        _pe("F-18", 109.77, MINUTE, 0.05, "identity window 105-115 min (Ph. Eur., USP)"),
        _pe("C-11", 20.385, MINUTE, 0.020, "ICRP-107 20.39 min"),
        _pe("N-13", 9.965, MINUTE, 0.004),
        _pe("O-15", 122.24, 1.0, 0.16),
        _n("Rb-82", 1.273, MINUTE),
        _n("Ga-68", 67.71, MINUTE, note="newer evaluation 67.83(20) min"),
        _n("Ge-68", 270.95, DAY, note="Ga-68 generator parent; phantom sources"),
        _n("Sr-82", 25.36, DAY, note="Rb-82 generator parent"),
        _n("Cu-64", 12.700, HOUR),
        _n("Zr-89", 78.41, HOUR),
        # SPECT / therapy
        _n("Tc-99m", 6.015, HOUR, note="ENSDF 6.0072 h"),
        _n("Mo-99", 65.94, HOUR),
        _n("Ga-67", 3.2612, DAY),
        _n("I-123", 13.27, HOUR),
        _n("I-125", 59.400, DAY),
        _n("I-131", 8.0207, DAY, note="ENSDF 8.0252 d"),
        _n("In-111", 2.8047, DAY),
        _n("Tl-201", 72.912, HOUR),
        _n("Xe-133", 5.243, DAY),
        _pe("Cr-51", 27.7025, DAY, 0.0024),
        _n("P-32", 14.263, DAY, note="Ph. Eur. 5.7: 14.26(4) d"),
        _n("Lu-177", 6.647, DAY),
        _n("Y-90", 64.10, HOUR),
        _n("Ho-166", 26.80, HOUR),
        _n("Re-188", 17.0040, HOUR),
        _n("Sm-153", 46.50, HOUR),
        _n("Sr-89", 50.53, DAY),
        _n("Tb-161", 6.906, DAY),
        _n("Pb-212", 10.64, HOUR),
        _n("Ra-223", 11.43, DAY),
        _n("Ac-225", 10.0, DAY),
        # Long-lived reference (constancy / check) sources
        _n("Cs-137", 30.1671, YEAR, note="ENSDF 30.08 y; constancy reference source"),
        _n("Co-57", 271.74, DAY, note="constancy reference source"),
        _n("Ba-133", 10.52, YEAR, note="constancy reference source"),
        _n("Co-60", 5.2713, YEAR, note="check source"),
        _n("Na-22", 2.6019, YEAR, note="check source"),
    )
}

_SYMBOL_FIRST = re.compile(r"^([A-Za-z]{1,2})[\s_-]*(\d{1,3})\s*([mM]?)$")
_MASS_FIRST = re.compile(r"^(\d{1,3})\s*([mM]?)[\s_-]*([A-Za-z]{1,2})$")
_BY_KEY = {name.replace("-", "").lower(): name for name in NUCLIDES}


def normalize_nuclide(name: str | None) -> str | None:
    """Map instrument spellings to the table's names: `F 18`, `F18`, `18F`, `f-18` → `F-18`.

    Returns None when the name is not a nuclide of the table (the caller marks the
    reading `uncertain` with a reason, never crashes).
    """
    if name is None:
        return None
    text = name.strip().replace("\x00", "")
    match = _SYMBOL_FIRST.match(text)
    if match:
        symbol, mass, meta = match.groups()
    else:
        match = _MASS_FIRST.match(text)
        if not match:
            return None
        mass, meta, symbol = match.groups()
    return _BY_KEY.get(f"{symbol}{int(mass)}{meta}".lower())


def half_life_s(name: str) -> float:
    """Half-life in seconds of a nuclide (any accepted spelling); KeyError if unknown."""
    canonical = normalize_nuclide(name)
    if canonical is None:
        raise KeyError(name)
    return NUCLIDES[canonical].half_life_s


class UnknownNuclideError(KeyError):
    """A nuclide name that is not in the table (after normalisation)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown nuclide {self.name!r}; expected one of {', '.join(sorted(NUCLIDES))}"


class HalfLifeOverride(Protocol):
    """What a site override provides (`agent.service.config.NuclideOverride` has these fields)."""

    @property
    def half_life_s(self) -> float: ...  # noqa: D102
    @property
    def uncertainty_s(self) -> float | None: ...  # noqa: D102
    @property
    def source(self) -> str: ...  # noqa: D102


class NuclideTable(Mapping[str, Nuclide]):
    """The built-in table with a site's overrides applied; look-ups accept any spelling.

    An override may only name a nuclide of the built-in table: a typo such as `F-81` must not
    silently create a new nuclide.
    """

    def __init__(self, overrides: Mapping[str, HalfLifeOverride] | None = None) -> None:
        table = dict(NUCLIDES)
        for key, override in (overrides or {}).items():
            name = normalize_nuclide(key)
            if name is None:
                raise ValueError(f"nuclides.{key!r}: {UnknownNuclideError(key)}")
            if not (override.half_life_s > 0 and math.isfinite(override.half_life_s)):
                raise ValueError(f"nuclides.{key!r}.half_life_s: must be a positive number")
            base = NUCLIDES[name]
            table[name] = Nuclide(
                name,
                float(override.half_life_s),
                None if override.uncertainty_s is None else float(override.uncertainty_s),
                override.source,
                note=f"site override of {base.half_life_s:g} s ({base.source})",
            )
        self._table = table

    def normalize(self, name: str | None) -> str | None:
        """Canonical name, or None when the nuclide is unknown."""
        return normalize_nuclide(name)

    def __getitem__(self, name: str) -> Nuclide:
        canonical = normalize_nuclide(name)
        if canonical is None:
            raise UnknownNuclideError(name)
        return self._table[canonical]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_nuclide(name) is not None

    def half_life_s(self, name: str) -> float:
        """Half-life in seconds (override applied); `UnknownNuclideError` if unknown."""
        return self[name].half_life_s

    @property
    def overridden(self) -> list[str]:
        """Names whose value comes from the site configuration."""
        return [name for name, n in self._table.items() if n is not NUCLIDES[name]]


def decay_value(activity: float, elapsed_s: float, half_life_s: float) -> float:
    """Scalar fast path (no numpy): activity after `elapsed_s` seconds (negative: before)."""
    return activity * math.exp(-LN2 * elapsed_s / half_life_s)


# Radionuclidic identity: measured half-life acceptance windows (F-18: Ph. Eur., USP, BP;
# Ga-68: Ph. Eur. 2464 Gallium (68Ga) chloride solution for radiolabelling).
ACCEPTANCE_WINDOWS: dict[str, tuple[float, float]] = {
    "F-18": (105 * MINUTE, 115 * MINUTE),
    "Ga-68": (62 * MINUTE, 74 * MINUTE),
}
