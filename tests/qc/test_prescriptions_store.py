"""Prescriptions persist in the state database, changes are audited with who and why, and a
judged dosage writes a dispensing record that names the calibrator's release state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter
from statestore import StateStore

from agent.core.reading import Reading
from agent.physics import NUCLIDES, NuclideTable
from agent.qc import RuleEngine
from agent.qc.config import RuleConfig
from agent.qc.dosage import DosageDesk
from agent.qc.prescriptions import PrescriptionStore
from drivers.base import Quality

SCHEDULED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DOSAGE = TypeAdapter(RuleConfig).validate_python(
    {"name": "dc1-dosage", "type": "dosage", "device": "dc1", "channel": "activity"}
)


async def _engine(state: StateStore) -> tuple[RuleEngine, DosageDesk]:
    dosage = DosageDesk(state.audit, PrescriptionStore(state.database))
    await dosage.open()
    engine = RuleEngine([DOSAGE], state.alerts, NuclideTable(), {},
                        audit=state.audit, prescriptions=dosage.prescriptions)  # fmt: skip
    return engine, dosage


def _measure(engine: RuleEngine, mbq_at_schedule: float, t: datetime) -> None:
    value = mbq_at_schedule * 2 ** ((SCHEDULED - t).total_seconds() / NUCLIDES["F-18"].half_life_s)
    for k in range(5):
        engine.on_reading(Reading(
            device="dc1", channel="activity", t=t + timedelta(seconds=k), value=value,
            unit="MBq", quality=Quality.GOOD, raw_value=value, raw_unit="MBq", nuclide="F-18",
        ))  # fmt: skip


async def test_prescriptions_survive_a_restart_and_every_change_names_who_and_why(tmp_path):
    state = await StateStore(tmp_path).open()
    _rules, dosage = await _engine(state)
    dosage.add_prescription("RX-7", "F-18", 370, "MBq", SCHEDULED, device="dc1",
                            actor="rita", reason="order 4711 from the HIS")  # fmt: skip
    dosage.add_prescription("RX-8", "F-18", 200, "MBq", SCHEDULED, actor="rita", reason="o 4712")
    dosage.add_prescription("RX-8", "F-18", 250, "MBq", SCHEDULED, actor="rita",
                            reason="dose changed by the physician", replace=True)  # fmt: skip
    dosage.remove_prescription("RX-7", actor="rita", reason="patient cancelled")
    await state.settle()
    await state.close()

    state = await StateStore(tmp_path).open()  # the agent restarted
    try:
        _rules, dosage = await _engine(state)
        assert [p.id for p in dosage.prescriptions.all()] == ["RX-8"]
        assert dosage.prescriptions.get("RX-8").activity_mbq == 250
        trail = await state.audit.query(subject="prescription/RX-8")
        assert [(r["event"], r["actor"], r["reason"]) for r in trail] == [
            ("prescription.added", "rita", "o 4712"),
            ("prescription.changed", "rita", "dose changed by the physician"),
        ]
        assert trail[1]["old"]["activity_mbq"] == 200 and trail[1]["new"]["activity_mbq"] == 250
        removed = await state.audit.query(subject="prescription/RX-7")
        assert removed[-1]["event"] == "prescription.removed"
        assert removed[-1]["reason"] == "patient cancelled"
    finally:
        await state.close()


async def test_a_judged_dosage_writes_a_dispensing_record_with_the_release_state(tmp_path):
    state = await StateStore(tmp_path).open()
    try:
        engine, dosage = await _engine(state)
        released = {"dc1": "on_hold"}
        dosage.prescriptions.on_dispensed = lambda device, record: {
            **record, "calibrator_release": released[device]
        }
        dosage.add_prescription("RX-9", "F-18", 370, "MBq", SCHEDULED, actor="rita",
                                reason="order")  # fmt: skip
        dosage.arm_prescription("dc1", "RX-9", by="tess")
        _measure(engine, 370 * 1.02, SCHEDULED - timedelta(minutes=30))
        await state.settle()
        (record,) = await dosage.dispensing("RX-9")
        assert record["prescription"] == "RX-9"
        assert record["who"] == "tess"
        assert record["device"] == "dc1"
        assert record["calibrator_release"] == "on_hold"
        assert abs(record["at_scheduled_mbq"] / (370 * 1.02) - 1) < 1e-3  # decay-corrected
        assert record["measured_mbq"] > record["at_scheduled_mbq"]  # measured 30 min early
        assert record["result"] == "pass"
        audited = await state.audit.query(action="dosage.dispensed")
        assert audited[-1]["new"]["id"] == record["id"] and audited[-1]["actor"] == "tess"
        assert dosage.prescriptions.get("RX-9").passed
    finally:
        await state.close()
    state = await StateStore(tmp_path).open()
    try:
        _rules, dosage = await _engine(state)
        assert dosage.prescriptions.get("RX-9").passed  # the result was kept too
    finally:
        await state.close()
