"""Nuclide data, decay correction and the half-life identity check."""

from agent.decay.correction import (
    ACTIVITY_UNITS,
    DecayResult,
    UnknownUnitError,
    activity_unit,
    convert_activity,
    correct,
    correct_to_reference,
    decay_correct,
    decay_value,
)
from agent.decay.halflife import (
    ACCEPTANCE_WINDOWS,
    FitError,
    HalfLifeFit,
    IdentityResult,
    check_identity,
    fit_half_life,
)
from agent.decay.nuclides import (
    NUCLIDES,
    Nuclide,
    NuclideTable,
    UnknownNuclideError,
    half_life_s,
    normalize_nuclide,
)

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
