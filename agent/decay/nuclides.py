"""Half-lives of the nuclides a radiopharmacy meets, with their uncertainty and source.

Values are those of ICRP Publication 107 (2008) as tabulated in the `radioactivedecay`
package, with the evaluated uncertainties where ICRP-107/DDEP give them. Data sets differ by
up to ~0.3% (e.g. ENSDF Tc-99m 6.0072 h vs ICRP-107 6.015 h): a site may override any value
in its configuration (`[nuclides."Tc-99m"] half_life_s = ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
YEAR = 365.2422 * DAY  # the year used by ICRP-107 / radioactivedecay (mean tropical year)

ICRP107 = "ICRP-107 (2008), via radioactivedecay"


@dataclass(frozen=True, slots=True)
class Nuclide:
    """A nuclide's half-life (seconds) and its standard uncertainty, with the data source."""

    name: str
    half_life_s: float
    uncertainty_s: float | None
    source: str = ICRP107
    note: str = ""


def _n(name: str, value: float, unit: float, unc: float | None = None, note: str = "") -> Nuclide:
    return Nuclide(name, value * unit, None if unc is None else unc * unit, ICRP107, note)


NUCLIDES: dict[str, Nuclide] = {
    n.name: n
    for n in (
        _n("F-18", 109.77, MINUTE, 0.05),
        _n("C-11", 20.385, MINUTE, 0.020),
        _n("N-13", 9.965, MINUTE, 0.004),
        _n("O-15", 122.24, 1.0, 0.16),
        _n("Rb-82", 1.273, MINUTE),
        _n("Ga-68", 67.71, MINUTE, note="newer evaluation 67.83(20) min"),
        _n("Ge-68", 270.95, DAY),
        _n("Cu-64", 12.700, HOUR),
        _n("Zr-89", 78.41, HOUR),
        _n("Tc-99m", 6.015, HOUR, note="ENSDF 6.0072 h"),
        _n("Mo-99", 65.94, HOUR),
        _n("I-123", 13.27, HOUR),
        _n("I-131", 8.0207, DAY, note="ENSDF 8.0252 d"),
        _n("In-111", 2.8047, DAY),
        _n("Lu-177", 6.647, DAY),
        _n("Y-90", 64.10, HOUR),
        _n("Ra-223", 11.43, DAY),
        _n("Ac-225", 10.0, DAY),
        _n("Tl-201", 72.912, HOUR),
        _n("Sr-89", 50.53, DAY),
        _n("Sm-153", 46.50, HOUR),
        _n("Cs-137", 30.1671, YEAR, note="ENSDF 30.08 y; constancy reference source"),
        _n("Co-57", 271.74, DAY, note="constancy reference source"),
        _n("Ba-133", 10.52, YEAR, note="constancy reference source"),
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
