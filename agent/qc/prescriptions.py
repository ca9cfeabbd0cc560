"""Prescribed dosages the dosage rule checks measurements against.

Prescriptions come from the configuration (`prescriptions` of a dosage rule) and from
`QCEngine.add_prescription()` (the web console, a pharmacy system). They carry an order id,
never patient data. They live in memory: a console that adds them re-sends them after a
restart; each addition and removal is in the audit trail.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.reading import rfc3339
from agent.physics.nuclides import normalize_nuclide
from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(slots=True)
class Prescription:
    """A dosage due at `scheduled`; `result` is the last check of a measurement against it."""

    id: str
    nuclide: str
    activity_mbq: float
    scheduled: datetime
    device: str | None = None
    note: str = ""
    origin: str = "api"
    result: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """A measurement within the site tolerance was recorded."""
        return self.result is not None and self.result.get("result") == "pass"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "nuclide": self.nuclide,
            "activity_mbq": self.activity_mbq,
            "scheduled": rfc3339(self.scheduled),
            "device": self.device,
            "note": self.note,
            "origin": self.origin,
            "result": self.result,
        }


def make_prescription(  # noqa: PLR0917 - what a prescription is, in reading order
    prescription_id: str,
    nuclide: str,
    activity: float,
    unit: str,
    scheduled: datetime,
    device: str | None = None,
    note: str = "",
    origin: str = "api",
) -> Prescription:
    """Validate and build a prescription; ValueError with a clear message otherwise."""
    if not prescription_id or not prescription_id.strip():
        raise ValueError("a prescription needs an id")
    name = normalize_nuclide(nuclide)
    if name is None:
        raise ValueError(f"unknown nuclide {nuclide!r}")
    canonical = canonical_unit(unit)
    if canonical not in ACTIVITY_TO_MBQ:
        raise ValueError(f"not an activity unit: {unit!r}")
    if not (math.isfinite(activity) and activity > 0):
        raise ValueError("prescribed activity must be a positive number")
    if scheduled.tzinfo is None:
        raise ValueError("scheduled time needs a time zone")
    return Prescription(
        prescription_id.strip(),
        name,
        activity * ACTIVITY_TO_MBQ[canonical],
        scheduled,
        device,
        note,
        origin,
    )


@dataclass
class PrescriptionBook:
    """All prescriptions, shared by the dosage rules; thread-safe (the console may call in)."""

    _items: dict[str, Prescription] = field(default_factory=dict)
    _armed: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, prescription: Prescription, *, replace: bool = False) -> None:
        """Add one; an existing id is refused unless `replace`."""
        with self._lock:
            if prescription.id in self._items and not replace:
                raise ValueError(f"prescription {prescription.id!r} exists already")
            self._items[prescription.id] = prescription

    def remove(self, prescription_id: str) -> Prescription:
        """Remove one; KeyError if unknown."""
        with self._lock:
            self._armed = {d: p for d, p in self._armed.items() if p != prescription_id}
            return self._items.pop(prescription_id)

    def get(self, prescription_id: str) -> Prescription:
        """One prescription; KeyError if unknown."""
        return self._items[prescription_id]

    def all(self) -> list[Prescription]:
        """Every prescription, by scheduled time."""
        with self._lock:
            return sorted(self._items.values(), key=lambda p: p.scheduled)

    def arm(self, device: str, prescription_id: str | None) -> None:
        """The next measurement on `device` is for this prescription (None: disarm)."""
        with self._lock:
            if prescription_id is None:
                self._armed.pop(device, None)
                return
            if prescription_id not in self._items:
                raise KeyError(prescription_id)
            self._armed[device] = prescription_id

    def armed(self, device: str) -> Prescription | None:
        """The prescription armed on `device`, if any."""
        pid = self._armed.get(device)
        return None if pid is None else self._items.get(pid)

    def disarm_if(self, device: str, prescription_id: str) -> None:
        """Disarm after a measurement was judged against it."""
        with self._lock:
            if self._armed.get(device) == prescription_id:
                del self._armed[device]

    def candidates(
        self, device: str, nuclide: str, t: datetime, window_s: float
    ) -> list[Prescription]:
        """Prescriptions a measurement at `t` on `device` could be for (not yet passed)."""
        with self._lock:
            return [
                p
                for p in self._items.values()
                if p.nuclide == nuclide
                and (p.device is None or p.device == device)
                and not p.passed
                and abs((p.scheduled - t).total_seconds()) <= window_s
            ]
