"""Unit conversion to the published units: MBq, uSv/h, Pa, Cel (docs/contract.md §3)."""

from __future__ import annotations

import functools
from collections.abc import Callable

_CI_IN_MBQ = 37_000.0  # 1 Ci = 3.7e10 Bq exactly (definition)

# Activity → MBq.
ACTIVITY_TO_MBQ: dict[str, float] = {
    "Bq": 1e-6,
    "kBq": 1e-3,
    "MBq": 1.0,
    "GBq": 1e3,
    "TBq": 1e6,
    "uCi": _CI_IN_MBQ * 1e-6,
    "mCi": _CI_IN_MBQ * 1e-3,
    "Ci": _CI_IN_MBQ,
}

# Dose rate → µSv/h. Roentgen-based units use the survey-meter convention 1 R ≈ 10 mSv
# (ambient dose equivalent for photons); the raw value and unit are always kept in `raw`.
DOSE_RATE_TO_USVH: dict[str, float] = {
    "nSv/h": 1e-3,
    "uSv/h": 1.0,
    "mSv/h": 1e3,
    "Sv/h": 1e6,
    "uR/h": 0.01,
    "mR/h": 10.0,
    "R/h": 1e4,
    "uGy/h": 1.0,  # air kerma rate reported by some monitors; H*(10) ≈ Ka for these uses
}

PRESSURE_TO_PA: dict[str, float] = {
    "Pa": 1.0,
    "hPa": 100.0,
    "kPa": 1000.0,
    "mbar": 100.0,
    "bar": 1e5,
    "psi": 6894.757293168,
    "mmH2O": 9.80665,
    "inH2O": 249.08891,
}

TEMPERATURE_TO_CEL: dict[str, Callable[[float], float]] = {
    "Cel": lambda v: v,
    "K": lambda v: v - 273.15,
    "degF": lambda v: (v - 32.0) * 5.0 / 9.0,
}

_ALIASES = {
    "µ": "u",
    "μ": "u",  # Greek mu and micro sign both appear in instrument output
}
_UNIT_ALIASES = {
    "°C": "Cel",
    "C": "Cel",
    "degC": "Cel",
    "celsius": "Cel",
    "°F": "degF",
    "F": "degF",
    "bq": "Bq",
    "kbq": "kBq",
    "mbq": "MBq",
    "gbq": "GBq",
    "uci": "uCi",
    "mci": "mCi",
    "ci": "Ci",
    "usv/h": "uSv/h",
    "msv/h": "mSv/h",
    "mr/h": "mR/h",
    "ur/h": "uR/h",
    "kpa": "kPa",
    "pa": "Pa",
}

KNOWN_TARGETS = {"MBq", "uSv/h", "Pa", "Cel"}


def canonical_unit(unit: str) -> str:
    """Normalise spelling: `µCi`→`uCi`, `°C`→`Cel`, `MBQ`→`MBq` ..."""
    u = unit.strip()
    for src, dst in _ALIASES.items():
        u = u.replace(src, dst)
    if u in ACTIVITY_TO_MBQ or u in DOSE_RATE_TO_USVH or u in PRESSURE_TO_PA:
        return u
    return _UNIT_ALIASES.get(u, _UNIT_ALIASES.get(u.lower(), u))


def is_activity_unit(unit: str | None) -> bool:
    """True for Bq/Ci-family units."""
    return unit is not None and canonical_unit(unit) in ACTIVITY_TO_MBQ


@functools.lru_cache(maxsize=256)
def _conversion(unit: str) -> tuple[float, Callable[[float], float] | None, str]:
    """(factor, function, published unit) for a raw unit; looked up once per unit string."""
    u = canonical_unit(unit)
    if u in ACTIVITY_TO_MBQ:
        return ACTIVITY_TO_MBQ[u], None, "MBq"
    if u in DOSE_RATE_TO_USVH:
        return DOSE_RATE_TO_USVH[u], None, "uSv/h"
    if u in PRESSURE_TO_PA:
        return PRESSURE_TO_PA[u], None, "Pa"
    if u in TEMPERATURE_TO_CEL:
        return 1.0, TEMPERATURE_TO_CEL[u], "Cel"
    return 1.0, None, u


def conversion(unit: str) -> tuple[float, Callable[[float], float] | None, str]:
    """(factor, function, published unit) for a raw unit: apply to a whole batch at once."""
    return _conversion(unit)


def convert(value: float, unit: str) -> tuple[float, str]:
    """Convert to the published unit of the quantity; other units pass through unchanged."""
    factor, function, target = _conversion(unit)
    if function is not None:
        return function(value), target
    return value * factor if factor != 1.0 else value, target


def activity_to(value_mbq: float, unit: str) -> float:
    """Express an activity in MBq in another activity unit."""
    return value_mbq / ACTIVITY_TO_MBQ[canonical_unit(unit)]
