"""QC rules evaluated on the device, and the alerts they raise."""

from agent.qc.engine import QCEngine
from agent.qc.prescriptions import Prescription, PrescriptionBook, make_prescription

__all__ = ["Prescription", "PrescriptionBook", "QCEngine", "make_prescription"]
