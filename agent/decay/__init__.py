"""Nuclide data and decay correction."""

from agent.decay.nuclides import NUCLIDES, Nuclide, half_life_s, normalize_nuclide

__all__ = ["NUCLIDES", "Nuclide", "half_life_s", "normalize_nuclide"]
