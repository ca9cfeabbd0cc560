"""`[records]` rules of the generator, waste and shipment records, as cited data.

Defaults are the cited values (agent/physics/breakthrough.py, storage.py; docs/qa-guide.md);
a site changes them in its configuration, never in code:

```toml
[records.elution]
mo99_limit = "usp"            # or "ph_eur" (0.1 % of the total activity)
aluminium_limit = "ph_eur"    # 5 µg/mL; "usp": 10 µg/mL

[[records.elution.canisters]]
id = "MOLY-1"
factor = 2.31                  # Mo-99 reading in the canister x factor = Mo-99 activity
validated = 2026-06-01
basis = "vendor's canister factor, verified with a Mo-99 source (SOP-CAL-07)"

[[records.generators]]
id = "TCG-2026-49"
nuclide = "Tc-99m"
calibrator = "dc1"
canister = "MOLY-1"
supplier = "..."
lot = "..."
reference_mbq = 20000          # Mo-99 at the reference time
reference_time = 2026-12-04T12:00:00Z
```
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from agent.core.settings import StrictSection
from agent.physics.breakthrough import (
    AL_LIMITS,
    GE68_LIMIT_PCT,
    MO_LIMITS,
    MoLimit,
)
from agent.physics.storage import DEFAULT_HALF_LIVES


class Canister(StrictSection):
    """A lead Mo-99 assay canister with its transmission correction factor."""

    id: str = Field(min_length=1)
    factor: float = Field(gt=0, description="Mo-99 activity = reading in the canister x factor.")
    validated: dt.date = Field(description="When the factor was last determined or verified.")
    basis: str = Field(min_length=1, description="How the factor was found (procedure, source).")


class Generator(StrictSection):
    """A radionuclide generator in use (Mo-99/Tc-99m or Ge-68/Ga-68)."""

    id: str = Field(min_length=1)
    nuclide: Literal["Tc-99m", "Ga-68"] = Field(description="What it is eluted for.")
    calibrator: str = Field(min_length=1, description="The dose calibrator assaying eluates.")
    channel: str = Field(default="activity", min_length=1)
    canister: str | None = Field(default=None, description="Tc-99m: the Mo-99 canister's id.")
    supplier: str = ""
    lot: str = ""
    reference_mbq: float = Field(gt=0, description="Parent (Mo-99, Ge-68) activity at reference.")
    reference_time: dt.datetime
    received: dt.datetime | None = None

    @model_validator(mode="after")
    def _aware(self) -> Generator:
        for name in ("reference_time", "received"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"generator {self.id}: {name} needs a time zone (e.g. Z)")
        return self


class ElutionRules(StrictSection):
    """How eluates are measured and judged."""

    mo99_limit: Literal["usp", "ph_eur"] = Field(
        default="usp",
        description="usp: 0.15 kBq Mo-99/MBq Tc-99m (10 CFR 35.204, USP); "
        "ph_eur: 0.1 % of the total radioactivity (Ph. Eur. 0124).",
    )
    aluminium_limit: Literal["ph_eur", "usp"] = Field(
        default="ph_eur", description="ph_eur: 5 µg/mL (Ph. Eur. 0124); usp: 10 µg/mL (USP)."
    )
    canisters: list[Canister] = Field(default_factory=list)
    canister_validity_days: int = Field(
        default=365, gt=0, description="A canister factor older than this holds the eluate."
    )
    settle_readings: int = Field(default=3, ge=1, le=100)
    stability_pct: float = Field(default=2.0, gt=0, le=50)
    stability_floor_mbq: float = Field(
        default=0.01,
        ge=0,
        description="Readings agree when their spread is within stability_pct or this (the "
        "canister's small Mo-99 readings are noisy in relative terms).",
    )
    detection_limit_mbq: float = Field(
        default=0.001,
        ge=0,
        description="The calibrator's detection limit: a Mo-99 reading below it counts as it "
        "(a bound), and a Ge-68 remeasurement below it gives only a bound.",
    )
    shelf_life_h: float = Field(
        default=12.0, gt=0, description="Use-by at the latest (site's eluate shelf life)."
    )
    shelf_life_basis: str = Field(default="generator's package insert: use within 12 h")
    ge68_wait_h: float = Field(default=48.0, ge=48.0, description="Ga-68: remeasure after.")
    ge68_limit_pct: float = Field(default=GE68_LIMIT_PCT, gt=0)
    ge68_basis: str = Field(default="Ph. Eur. 2464: Ge-68 ≤ 0.001 % of the total radioactivity")
    identity_points: int = Field(default=5, ge=3, description="Ga-68: readings for the fit.")
    identity_interval_s: float = Field(default=120.0, ge=0)

    @property
    def mo_limit(self) -> MoLimit:
        """The chosen Mo-99 limit with its source."""
        return MO_LIMITS[self.mo99_limit]

    @property
    def aluminium_limit_ug_ml(self) -> float:
        """The chosen Al3+ limit."""
        return AL_LIMITS[self.aluminium_limit]

    def canister(self, canister_id: str) -> Canister:
        """The canister with this id (KeyError if none)."""
        for canister in self.canisters:
            if canister.id == canister_id:
                return canister
        raise KeyError(canister_id)


class AreaMonitor(StrictSection):
    """The area monitor whose readings make a release survey."""

    device: str = Field(min_length=1)
    channel: str = Field(default="dose_rate", min_length=1)


class WasteRules(StrictSection):
    """Decay-in-storage (10 CFR 35.92)."""

    half_lives: float = Field(default=DEFAULT_HALF_LIVES, gt=0)
    half_lives_basis: str = Field(
        default="site radiation protection programme: hold for 10 half-lives, then survey"
    )
    monitor: AreaMonitor | None = None
    readings: int = Field(default=3, ge=3, le=100, description="Per background and surface.")
    k: float = Field(default=2.0, gt=0, description="Coverage factor of the survey's test.")
    basis: str = Field(
        default="10 CFR 35.92: T½ ≤ 120 d; released when the surface survey cannot be "
        "distinguished from background"
    )


class ShipmentRules(StrictSection):
    """Shipments between sites and their receipt."""

    tolerance_pct: float = Field(
        default=10.0, gt=0, description="Receipt: measured vs decay-corrected shipped activity."
    )
    basis: str = Field(default="site agreement between sender and receiver")


def check_generators(generators: list[Generator], elution: ElutionRules) -> None:
    """Cross-checks: unique ids, a Tc-99m generator's canister exists."""
    ids = [g.id for g in generators]
    if len(set(ids)) != len(ids):
        raise ValueError("records.generators: duplicate generator id")
    canisters = {c.id for c in elution.canisters}
    for generator in generators:
        if generator.nuclide == "Tc-99m" and generator.canister not in canisters:
            raise ValueError(
                f"records.generators {generator.id}: canister {generator.canister!r} is not "
                "in records.elution.canisters"
            )


__all__ = [
    "AreaMonitor",
    "Canister",
    "ElutionRules",
    "Generator",
    "ShipmentRules",
    "WasteRules",
    "check_generators",
]
