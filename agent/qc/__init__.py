"""QC on the device: the rule engine, the dosage desk, the QA desk, alerts and audit."""

from agent.qc.engine import RuleEngine
from agent.qc.prescriptions import Prescription, PrescriptionBook, make_prescription

__all__ = ["Prescription", "PrescriptionBook", "RuleEngine", "make_prescription"]
