"""Nuclide data, units, decay correction and the half-life identity check.

The nuclide table and the scalar correction import no numpy; the vectorised correction and the
half-life fit (numpy) load on first use, which keeps a running agent small (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.physics.nuclides import (
    ACCEPTANCE_WINDOWS,
    NUCLIDES,
    Nuclide,
    NuclideTable,
    UnknownNuclideError,
    decay_value,
    half_life_s,
    normalize_nuclide,
)

_LAZY = {
    "ACTIVITY_UNITS": "agent.physics.correction",
    "DecayResult": "agent.physics.correction",
    "UnknownUnitError": "agent.physics.correction",
    "activity_unit": "agent.physics.correction",
    "convert_activity": "agent.physics.correction",
    "correct": "agent.physics.correction",
    "correct_to_reference": "agent.physics.correction",
    "decay_correct": "agent.physics.correction",
    "FitError": "agent.physics.halflife",
    "HalfLifeFit": "agent.physics.halflife",
    "IdentityResult": "agent.physics.halflife",
    "check_identity": "agent.physics.halflife",
    "fit_half_life": "agent.physics.halflife",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ACCEPTANCE_WINDOWS",
    "ACTIVITY_UNITS",
    "NUCLIDES",
    "DecayResult",
    "FitError",
    "HalfLifeFit",
    "IdentityResult",
    "Nuclide",
    "NuclideTable",
    "UnknownNuclideError",
    "UnknownUnitError",
    "activity_unit",
    "check_identity",
    "convert_activity",
    "correct",
    "correct_to_reference",
    "decay_correct",
    "decay_value",
    "fit_half_life",
    "half_life_s",
    "normalize_nuclide",
]
