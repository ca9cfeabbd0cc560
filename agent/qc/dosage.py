"""The dosage desk: prescriptions and dispensing records (the console's dosage page).

The agent's `dosage`. A prescription is added, changed, withdrawn or armed here, each with its
audit record in one transaction with its row; the rule engine's dosage rule checks the next
settled measurement on the armed calibrator against it and makes the dispensing record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.qc.prescriptions import Prescription, PrescriptionBook, make_prescription

if TYPE_CHECKING:
    from datetime import datetime

    from agent.qc.audit import AuditLog
    from agent.qc.prescriptions import PrescriptionStore


class DosageDesk:
    """Prescriptions (stored, audited) and the dispensing records made against them."""

    def __init__(self, audit: AuditLog, store: PrescriptionStore | None = None) -> None:
        self.audit = audit
        self.prescriptions = PrescriptionBook()
        self._store = store

    async def open(self) -> None:
        """Load the stored prescriptions (after the state database is open)."""
        if self._store is not None:
            await self.prescriptions.attach(self._store)

    def add_prescription(
        self,
        prescription_id: str,
        nuclide: str,
        activity: float,
        unit: str,
        scheduled: datetime,
        *,
        device: str | None = None,
        note: str = "",
        actor: str = "api",
        reason: str = "",
        replace: bool = False,
    ) -> Prescription:
        """Add a prescribed dosage (console, hospital system); stored and audited (who, why).

        Raises ValueError with a clear message for a bad nuclide, unit, activity, naive time or
        an id that exists (unless `replace`). Never blocks: the store is written by the state
        writer.
        """
        rx = make_prescription(
            prescription_id, nuclide, activity, unit, scheduled, device, note, origin=actor
        )
        old = None
        if replace:
            try:
                old = self.prescriptions.get(rx.id).to_dict()
            except KeyError:
                old = None
        # Audit first: the record is built (and its texts checked) before anything changes,
        # then the prescription's row and the audit record are one transaction.
        staged = self.audit.stage(
            "prescription.changed" if old is not None else "prescription.added",
            actor, f"prescription/{rx.id}", old=old, new=rx.to_dict(), reason=reason or None,
        )  # fmt: skip
        self.prescriptions.add(rx, replace=replace, persist=False)
        store = self.prescriptions.store
        self.audit.commit(
            staged, None if store is None else store.save_op(rx), tag="prescription.save"
        )
        return rx

    def remove_prescription(self, prescription_id: str, *, actor: str, reason: str) -> None:
        """Withdraw a prescription (KeyError if unknown); recorded with who and why."""
        if not actor.strip() or not reason.strip():
            raise ValueError("removing a prescription needs the person's name and a reason")
        current = self.prescriptions.get(prescription_id)
        staged = self.audit.stage(
            "prescription.removed", actor, f"prescription/{current.id}", old=current.to_dict(),
            reason=reason,
        )  # fmt: skip
        self.prescriptions.remove(prescription_id)
        store = self.prescriptions.store
        self.audit.commit(
            staged, None if store is None else store.delete_op(prescription_id),
            tag="prescription.delete",
        )  # fmt: skip

    def arm_prescription(self, device: str, prescription_id: str | None, by: str = "") -> None:
        """The next settled measurement on `device` is checked against this prescription.

        `by`: who measures it (named on the dispensing record).
        """
        staged = None
        if prescription_id is not None:
            staged = self.audit.stage(
                "prescription.armed", by or "api", f"prescription/{prescription_id}",
                device=device,
            )  # fmt: skip
        self.prescriptions.arm(device, prescription_id, by)
        if staged is not None:
            self.audit.commit(staged)

    async def dispensing(self, prescription_id: str | None = None) -> list[dict[str, Any]]:
        """Dispensing records (oldest first) from the store; empty without one."""
        store = self.prescriptions.store
        return [] if store is None else await store.dispensing(prescription_id)


__all__ = ["DosageDesk"]
