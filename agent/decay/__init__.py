"""Nuclide data, decay correction and the half-life identity check.

The nuclide table and the scalar correction import no numpy; the vectorised correction and the
half-life fit (numpy) load on first use, which keeps a running agent small (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from agent.decay.nuclides import (
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
    "ACTIVITY_UNITS": "agent.decay.correction",
    "DecayResult": "agent.decay.correction",
    "UnknownUnitError": "agent.decay.correction",
    "activity_unit": "agent.decay.correction",
    "convert_activity": "agent.decay.correction",
    "correct": "agent.decay.correction",
    "correct_to_reference": "agent.decay.correction",
    "decay_correct": "agent.decay.correction",
    "FitError": "agent.decay.halflife",
    "HalfLifeFit": "agent.decay.halflife",
    "IdentityResult": "agent.decay.halflife",
    "check_identity": "agent.decay.halflife",
    "fit_half_life": "agent.decay.halflife",
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
