"""Dispensing: a patient dose drawn from a released batch, measured on a released calibrator.

The dose is the calibrator's latest good activity reading of the product's nuclide (at most
`MAX_READING_AGE_S` old), on a calibrator whose daily QC has released it (a reading flagged
`calibrator_release: on_hold`, or a calibrator the QC desk does not list as released, refuses).
It is linked to the prescription (agent.qc.prescriptions: the prescribed activity at its
scheduled time) and to a patient identifier: a hospital number; a name only where
`[records.dispensing] patient_names` is on. The activity decay-corrected to the prescription's
time is compared with the prescribed one: within ±`action_pct` passes, to ±`fail_pct` is
recorded as `action`, beyond is refused (no such dose is recorded as dispensed; the refusal is
audited). Nothing is dispensed from a batch that a qualified person has not released
(`batch_not_released`), nor after the batch's expiry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.core.messages import Message, msg
from agent.core.reading import rfc3339
from agent.physics.nuclides import NuclideTable, decay_value
from agent.records.kinds import RecordError

if TYPE_CHECKING:
    from agent.records.desk import RecordsDesk

MAX_READING_AGE_S = 120.0
MAX_PATIENT_ID = 64
MAX_NAME = 200


class DispensingError(RecordError):
    """A dose that cannot be dispensed (`code`: why, for the console and API)."""

    def __init__(self, code: str, message: Message | str) -> None:
        super().__init__(message)
        self.code = code


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class DispensingDesk:
    """Doses from released batches; `on_item` keeps each calibrator's latest activity reading."""

    def __init__(
        self,
        desk: RecordsDesk,
        *,
        prescription: Callable[[str], Any],
        calibrator_release: Callable[[str], str | None] | None = None,
        nuclides: NuclideTable | None = None,
    ) -> None:
        self.desk = desk
        self.prescription = prescription
        self.calibrator_release = calibrator_release
        self.nuclides = nuclides or NuclideTable()
        self.latest: dict[str, dict[str, Any]] = {}

    def on_item(self, stream: str, item: dict[str, Any]) -> None:
        """A live item: a good activity reading in MBq with a nuclide is kept per device."""
        if stream != "reading" or item.get("unit") != "MBq" or not item.get("nuclide"):
            return
        if item.get("quality") != "good" or _number(item.get("value")) is None:
            return
        device = item.get("device")
        if isinstance(device, str):
            self.latest[device] = item

    def _reading(self, device: str, nuclide: str) -> dict[str, Any]:
        item = self.latest.get(device)
        if item is None:
            raise DispensingError("no_reading", msg("error.dose.no_reading", device=device))
        if item.get("nuclide") != nuclide:
            raise DispensingError("nuclide_mismatch", msg(
                "error.dose.device_nuclide", device=device, measured=str(item.get("nuclide")),
                nuclide=nuclide))
        t = datetime.fromisoformat(str(item["t"]))
        if (self.desk.now() - t).total_seconds() > MAX_READING_AGE_S:
            raise DispensingError("no_reading", msg("error.dose.reading_old", device=device))
        released = item.get("calibrator_release") != "on_hold" and (
            self.calibrator_release is None or self.calibrator_release(device) == "released"
        )
        if not released:
            raise DispensingError("calibrator_not_released",
                                  msg("error.dose.calibrator_not_released", device=device))
        return item

    async def dispense(  # noqa: C901, PLR0912 - each refusal is a rule
        self,
        batch_id: str,
        *,
        prescription_id: str,
        patient_id: str,
        volume_ml: float,
        device: str,
        name: str,
        password: str,
        patient_name: str | None = None,
        comment: str = "",
    ) -> dict[str, Any]:
        """Measure, check and sign one dose (meaning `performed`, roles of `dispense`)."""
        rules = self.desk.config.dispensing
        patient_id = patient_id.strip()
        if not patient_id or len(patient_id) > MAX_PATIENT_ID or not patient_id.isprintable():
            raise DispensingError("bad_patient_id", msg("error.dose.patient_id"))
        if patient_name and not rules.patient_names:
            raise DispensingError("names_not_enabled", msg("error.dose.names_not_enabled"))
        if patient_name is not None and len(patient_name) > MAX_NAME:
            raise DispensingError("bad_patient_name", msg("error.dose.patient_name"))
        volume = _number(volume_ml)
        if volume is None or volume <= 0:
            raise DispensingError("bad_volume", msg("error.dose.volume"))
        batches = await self.desk.store.current("batch", batch_id)
        if not batches:
            raise DispensingError("unknown_batch", msg("error.dose.unknown_batch", batch=batch_id))
        batch = batches[-1]
        release = await self.desk.release_of(batch_id)
        if release is None or release.get("decision") != "released":
            raise DispensingError("batch_not_released",
                                  msg("error.dose.batch_not_released", batch=batch_id))
        now = self.desk.now()
        expiry = batch.get("expiry")
        if isinstance(expiry, str) and now > datetime.fromisoformat(expiry):
            raise DispensingError("batch_expired",
                                  msg("error.dose.batch_expired", batch=batch_id, expiry_at=expiry))
        try:
            rx = self.prescription(prescription_id)
        except KeyError:
            raise DispensingError("unknown_prescription",
                                  msg("error.dose.unknown_prescription", rx=prescription_id)) \
                from None  # fmt: skip
        nuclide = str(batch.get("nuclide"))
        if rx.nuclide != nuclide:
            raise DispensingError("nuclide_mismatch", msg(
                "error.dose.rx_nuclide", rx=rx.id, prescribed=rx.nuclide, nuclide=nuclide))
        reading = self._reading(device, nuclide)
        measured = float(reading["value"])
        measured_at = datetime.fromisoformat(str(reading["t"]))
        half_life = self.nuclides[nuclide].half_life_s
        at_scheduled = decay_value(measured, (rx.scheduled - measured_at).total_seconds(),
                                   half_life)  # fmt: skip
        deviation = (at_scheduled - rx.activity_mbq) / rx.activity_mbq * 100.0
        if abs(deviation) <= rules.action_pct:
            result = "pass"
        elif abs(deviation) <= rules.fail_pct:
            result = "action"
        else:
            self.desk.audit.record(
                "records.dispensing.refused", name, f"batch/{batch_id}",
                reason=f"{at_scheduled:.4g} MBq at the prescription's time vs prescribed "
                f"{rx.activity_mbq:.4g} MBq ({deviation:+.1f} %, limit ±{rules.fail_pct:g} %)",
                prescription=rx.id, measured_mbq=measured,
            )  # fmt: skip
            raise DispensingError("dose_outside_limit", msg(
                "error.dose.outside_limit", deviation=round(deviation, 1), limit=rules.fail_pct))
        patient: dict[str, Any] = {"hospital_number": patient_id}
        if patient_name:
            patient["name"] = patient_name.strip()
        draft = self.desk.draft(
            "dispensing", batch_id=batch_id, release=release["id"], product=batch.get("product"),
            nuclide=nuclide, prescription_id=rx.id, prescribed_mbq=rx.activity_mbq,
            scheduled=rfc3339(rx.scheduled), patient=patient, device=device,
            measured_mbq=measured, measured_at=rfc3339(measured_at), readings=[reading["id"]],
            volume_ml=volume, activity_at_scheduled_mbq=at_scheduled,
            deviation_pct=round(deviation, 3), result=result, expiry=expiry,
            tolerance={"action_pct": rules.action_pct, "fail_pct": rules.fail_pct,
                       "basis": rules.basis},
            comment=comment or None,
        )  # fmt: skip
        return await self.desk.signer.sign(draft, name, password, "performed", action="dispense")


def activity_at(record: dict[str, Any], t: datetime, nuclides: NuclideTable) -> float:
    """A dose's activity at `t` from its measurement (for labels)."""
    half_life = nuclides[str(record["nuclide"])].half_life_s
    measured_at = datetime.fromisoformat(str(record["measured_at"]))
    return decay_value(float(record["measured_mbq"]), (t - measured_at).total_seconds(), half_life)


__all__ = ["MAX_READING_AGE_S", "DispensingDesk", "DispensingError", "activity_at"]
