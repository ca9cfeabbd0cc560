"""Plausible patient activities per nuclide: a typed activity beyond them needs a reason.

A prescription's activity is checked before it is stored: a value outside the range for its
nuclide (a decimal comma read as a thousands separator makes 370,5 MBq into 3705) is refused
until the person confirms it with a reason, which goes to the audit trail with the entry. The
shipped ranges are wide bounds of single adult administrations in nuclear medicine (diagnostic
and, for I-131, Lu-177, Y-90 and Ra-223, therapeutic), not dosage guidance; a site sets its
own in `[qc.activity_limits]` (SOP, the regulator's diagnostic reference levels).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.core.settings import StrictSection
from agent.physics.nuclides import normalize_nuclide


class ActivityLimit(StrictSection):
    """The plausible range of one administration of a nuclide, in MBq."""

    min_mbq: float = Field(default=0.0, ge=0)
    max_mbq: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ActivityLimit:
        if self.min_mbq >= self.max_mbq:
            raise ValueError("min_mbq must be below max_mbq")
        return self


# Wide bounds (MBq) of one adult administration; a site narrows them to its own practice.
DEFAULT_LIMITS: dict[str, ActivityLimit] = {
    "F-18": ActivityLimit(min_mbq=20, max_mbq=800),
    "Ga-68": ActivityLimit(min_mbq=20, max_mbq=400),
    "C-11": ActivityLimit(min_mbq=50, max_mbq=1000),
    "N-13": ActivityLimit(min_mbq=50, max_mbq=1000),
    "Rb-82": ActivityLimit(min_mbq=300, max_mbq=2500),
    "Tc-99m": ActivityLimit(min_mbq=10, max_mbq=1500),
    "I-123": ActivityLimit(min_mbq=5, max_mbq=500),
    "In-111": ActivityLimit(min_mbq=5, max_mbq=500),
    "Tl-201": ActivityLimit(min_mbq=20, max_mbq=200),
    "I-131": ActivityLimit(min_mbq=1, max_mbq=11100),
    "Lu-177": ActivityLimit(min_mbq=500, max_mbq=9000),
    "Y-90": ActivityLimit(min_mbq=100, max_mbq=6000),
    "Ra-223": ActivityLimit(min_mbq=0.5, max_mbq=15),
}


def limit_for(nuclide: str, site: dict[str, ActivityLimit]) -> ActivityLimit | None:
    """The site's range for `nuclide`, else the shipped one (None: no range known)."""
    key = normalize_nuclide(nuclide)
    if key is None:
        return None
    for name, limit in site.items():
        if normalize_nuclide(name) == key:
            return limit
    return DEFAULT_LIMITS.get(key)


def implausible(nuclide: str, activity_mbq: float,
                site: dict[str, ActivityLimit]) -> ActivityLimit | None:  # fmt: skip
    """The range `activity_mbq` lies outside of (None when plausible or no range is known)."""
    limit = limit_for(nuclide, site)
    if limit is None or limit.min_mbq <= activity_mbq <= limit.max_mbq:
        return None
    return limit
