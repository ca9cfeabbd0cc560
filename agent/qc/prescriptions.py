"""Prescribed dosages the dosage rule checks measurements against.

Prescriptions come from the configuration (`prescriptions` of a dosage rule) and from
`DosageDesk.add_prescription()` (the web console, a pharmacy system). They carry an order id,
never patient data. Those added through the API are kept in `PrescriptionStore` (tables of
the agent's state database), so they survive a restart; each addition and removal is in
the audit trail with who and why. Each judged measurement writes a dispensing record
(prescription, measured and decay-corrected activity, time, calibrator and its release
state, who) to the same store and the audit trail.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.core.reading import dumps_item, rfc3339
from agent.physics.nuclides import normalize_nuclide
from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit
from agent.qc.audit import AuditLog

if TYPE_CHECKING:
    from agent.state.writer import StateWriter


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prescription:
        """Back from `to_dict()` (the store)."""
        return cls(
            id=data["id"],
            nuclide=data["nuclide"],
            activity_mbq=float(data["activity_mbq"]),
            scheduled=datetime.fromisoformat(data["scheduled"]),
            device=data.get("device"),
            note=data.get("note", ""),
            origin=data.get("origin", "api"),
            result=data.get("result"),
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS prescriptions (
    id      TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dispensing (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    id   TEXT NOT NULL UNIQUE,
    prescription TEXT NOT NULL,
    t    TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dispensing_rx ON dispensing (prescription);
CREATE TRIGGER IF NOT EXISTS dispensing_no_update BEFORE UPDATE ON dispensing
BEGIN SELECT RAISE(ABORT, 'dispensing records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS dispensing_no_delete BEFORE DELETE ON dispensing
BEGIN SELECT RAISE(ABORT, 'dispensing records are append-only'); END;
"""


class PrescriptionStore:
    """Prescriptions (current state) and dispensing records (append-only).

    Tables of the agent's state database, written by its owner thread: never blocks.
    """

    def __init__(self, store: StateWriter) -> None:
        self.store = store

    async def open(self) -> None:
        """Create the tables if missing."""
        await self.store.run(lambda db: db.executescript(_SCHEMA))

    async def load(self) -> list[Prescription]:
        """Every stored prescription."""

        def _load(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT body FROM prescriptions ORDER BY id")]

        return [Prescription.from_dict(json.loads(b)) for b in await self.store.run(_load)]

    @staticmethod
    def save_op(prescription: Prescription) -> Callable[[sqlite3.Connection], Any]:
        """The write that inserts or replaces one prescription (for a transaction)."""
        body = json.dumps(prescription.to_dict(), sort_keys=True, default=str)
        stamp = rfc3339(datetime.now(UTC))
        return lambda db: db.execute(
            "INSERT OR REPLACE INTO prescriptions (id, body, updated) VALUES (?, ?, ?)",
            (prescription.id, body, stamp),
        )

    @staticmethod
    def delete_op(prescription_id: str) -> Callable[[sqlite3.Connection], Any]:
        """The write that forgets a withdrawn prescription (its history is in the audit trail)."""
        return lambda db: db.execute("DELETE FROM prescriptions WHERE id = ?", (prescription_id,))

    def save(self, prescription: Prescription) -> None:
        """Insert or replace one prescription (queued for the next commit)."""
        self.store.transact(self.save_op(prescription), tag="prescription.save")

    def add_dispensing(
        self, record: dict[str, Any], audit_item: dict[str, Any] | None = None
    ) -> Future[Any]:
        """Append a dispensing record (and its audit record, in the same transaction)."""
        body = json.dumps(record, sort_keys=True, default=str)
        items = [] if audit_item is None else [("audit", "", dumps_item(audit_item))]

        def _apply(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO dispensing (id, prescription, t, body) VALUES (?, ?, ?, ?)",
                (record["id"], record["prescription"], record["t"], body),
            )
            if audit_item is not None:
                AuditLog.insert(db, audit_item)

        return self.store.transact(_apply, items, tag="dosage.dispensed")

    async def dispensing(self, prescription_id: str | None = None) -> list[dict[str, Any]]:
        """Dispensing records, oldest first (of one prescription, or all)."""

        def _read(db: sqlite3.Connection) -> list[str]:
            if prescription_id is None:
                rows = db.execute("SELECT body FROM dispensing ORDER BY seq")
            else:
                rows = db.execute(
                    "SELECT body FROM dispensing WHERE prescription = ? ORDER BY seq",
                    (prescription_id,),
                )
            return [r[0] for r in rows]

        return [json.loads(b) for b in await self.store.run(_read)]


DispensedHook = Callable[[str, dict[str, Any]], dict[str, Any]]
"""(device, dispensing record) -> the record with what the hook adds (calibrator release)."""


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
    try:
        scheduled.astimezone(UTC)
    except OverflowError:
        raise ValueError("scheduled time is out of range") from None
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
    _armed_by: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    store: PrescriptionStore | None = None
    on_dispensed: DispensedHook | None = None

    async def attach(self, store: PrescriptionStore) -> None:
        """Keep prescriptions in `store` from now on; load the ones it holds."""
        self.store = store
        await store.open()
        stored = await store.load()
        with self._lock:
            for rx in stored:
                self._items[rx.id] = rx

    def add(
        self, prescription: Prescription, *, replace: bool = False, persist: bool = True
    ) -> None:
        """Add one; an existing id is refused unless `replace`. Stored unless `persist=False`."""
        with self._lock:
            if prescription.id in self._items and not replace:
                raise ValueError(f"prescription {prescription.id!r} exists already")
            self._items[prescription.id] = prescription
        if persist and self.store is not None:
            self.store.save(prescription)

    def remove(self, prescription_id: str) -> Prescription:
        """Remove one from memory; KeyError if unknown.

        The caller writes the store with its audit record (`PrescriptionStore.delete_op`).
        """
        with self._lock:
            rx = self._items.pop(prescription_id)
            self._armed = {d: p for d, p in self._armed.items() if p != prescription_id}
        return rx

    def save(self, prescription: Prescription) -> None:
        """Persist a prescription's new state (its result)."""
        if self.store is not None and not prescription.origin.startswith("config:"):
            self.store.save(prescription)

    def armed_by(self, device: str) -> str | None:
        """Who armed the prescription on `device`."""
        return self._armed_by.get(device)

    def get(self, prescription_id: str) -> Prescription:
        """One prescription; KeyError if unknown."""
        return self._items[prescription_id]

    def all(self) -> list[Prescription]:
        """Every prescription, by scheduled time."""
        with self._lock:
            return sorted(self._items.values(), key=lambda p: p.scheduled)

    def arm(self, device: str, prescription_id: str | None, by: str = "") -> None:
        """The next measurement on `device` is for this prescription (None: disarm)."""
        with self._lock:
            if prescription_id is None:
                self._armed.pop(device, None)
                self._armed_by.pop(device, None)
                return
            if prescription_id not in self._items:
                raise KeyError(prescription_id)
            self._armed[device] = prescription_id
            self._armed_by[device] = by

    def armed(self, device: str) -> Prescription | None:
        """The prescription armed on `device`, if any."""
        pid = self._armed.get(device)
        return None if pid is None else self._items.get(pid)

    def disarm_if(self, device: str, prescription_id: str) -> None:
        """Disarm after a measurement was judged against it."""
        with self._lock:
            if self._armed.get(device) == prescription_id:
                del self._armed[device]
                self._armed_by.pop(device, None)

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
