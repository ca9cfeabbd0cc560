"""Shipments between sites (the sender signs) and their receipt (the receiver assays and signs).

The shipment record (kind `shipment`, meaning `approved`) carries the batch, the activity at
its reference time and the destination site, as agreed for the central reconciliation
(SHAPES: `shipment_id`, `batch_id`, `product`, `nuclide`, `activity_mbq`, `reference_time`,
`volume_ml`, `destination_site`). At the receiving site the operator types the shipment's
papers (id, origin, batch, nuclide, activity and reference time) and assays the delivery on its
own calibrator in one guided step (settled readings on the nuclide's setting); the expected
activity is the shipped one decay-corrected to the assay, and a difference beyond
`[records.shipments] tolerance_pct` raises an alert at the receiver. The receipt (kind
`receipt`, meaning `performed`) keeps both and the readings it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.i18n import N_
from agent.core.messages import msg
from agent.core.reading import Reading, new_id, rfc3339
from agent.physics.nuclides import NUCLIDES, Nuclide, normalize_nuclide
from agent.physics.transfer import receipt_check
from agent.qc.rules import activity_mbq
from agent.records.guided import GuidedDesk, GuidedRun, GuidedStep, Settle, advance, utc_now
from agent.records.kinds import RecordError
from drivers.base import Quality

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.qc.alerts import AlertManager
    from agent.records.desk import RecordsDesk
    from agent.records.generator_rules import ShipmentRules

log = structlog.get_logger("isoedge.records.shipment")

ALERT_RULE = "records.receipt"


class ShipmentError(RecordError):
    """A shipment or receipt request that cannot be carried out."""


def _nuclide(name: str) -> str:
    canonical = normalize_nuclide(name)
    if canonical is None:
        raise ShipmentError(f"unknown nuclide {name!r}")
    return canonical


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ShipmentError(f"{what} must be a positive number")
    return float(value)


@dataclass
class ReceiptRun(GuidedRun):
    """A delivery being assayed at the receiving site."""

    id: str
    shipment: dict[str, Any]  # as typed from the papers
    device: str
    channel: str
    started: datetime
    started_by: str
    steps: list[GuidedStep] = field(default_factory=list)
    state: str = "running"  # running | completed | signed | cancelled
    draft: dict[str, Any] | None = None
    record_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the console."""
        return {**self.guided_dict(), "shipment": self.shipment}


class ShipmentDesk(GuidedDesk[ReceiptRun]):
    """Shipments this site sends and receipts of what it receives."""

    what = "shipment"

    def __init__(
        self,
        rules: ShipmentRules,
        records: RecordsDesk,
        *,
        alerts: AlertManager | None = None,
        calibrators: Iterable[tuple[str, str]] = (),
        settle: Settle = Settle(3, 2.0, 0.01),  # noqa: B008 - frozen, shared safely
        nuclides: Mapping[str, Nuclide] = NUCLIDES,
        now: Callable[[], datetime] = utc_now,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(now, on_change)
        self.rules = rules
        self.records = records
        self.alerts = alerts
        self.settle = settle
        self.calibrators = frozenset(calibrators)
        self.nuclides = nuclides
        self._active: dict[str, str] = {}

    def run(self, run_id: str) -> ReceiptRun:
        """A receipt run by id (ShipmentError if none)."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise ShipmentError(f"no receipt run {run_id!r}") from None

    def watches(self, device: str, channel: str) -> bool:
        """A dose calibrator's activity channel (a fixed answer: the pipeline caches it)."""
        return (device, channel) in self.calibrators

    # ------------------------------------------------------------------ send
    async def sign_shipment(
        self,
        *,
        batch_id: str,
        product: str,
        nuclide: str,
        activity_mbq: float,
        reference_time: datetime,
        destination_site: str,
        name: str,
        password: str,
        volume_ml: float | None = None,
        shipment_id: str | None = None,
    ) -> dict[str, Any]:
        """The sender approves a shipment (meaning `approved`): stored and published."""
        if not batch_id.strip() or not destination_site.strip() or not product.strip():
            raise ShipmentError("a shipment needs its batch, product and destination site")
        if destination_site.strip() == self.records.site:
            raise ShipmentError("a shipment goes to another site")
        if reference_time.tzinfo is None:
            raise ShipmentError("the reference time needs a time zone")
        volume = None if volume_ml is None else _positive(volume_ml, "the volume")
        sid = shipment_id or f"SHP-{self.records.site}-{self._now():%Y%m%d-%H%M%S}"
        draft = self.records.draft(
            "shipment", shipment_id=sid, batch_id=batch_id.strip(), product=product.strip(),
            nuclide=_nuclide(nuclide), activity_mbq=_positive(activity_mbq, "the activity"),
            reference_time=rfc3339(reference_time), volume_ml=volume,
            destination_site=destination_site.strip(),
        )  # fmt: skip
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "approved")
        self._changed()
        return record

    # ------------------------------------------------------------------ receive
    def start_receipt(
        self,
        *,
        shipment_id: str,
        origin_site: str,
        batch_id: str,
        nuclide: str,
        activity_mbq: float,
        reference_time: datetime,
        device: str,
        by: str,
        channel: str = "activity",
    ) -> ReceiptRun:
        """Start assaying a delivery on this site's calibrator `device`."""
        if (device, channel) not in self.calibrators:
            raise ShipmentError(f"{device}/{channel} is not a dose calibrator of this site")
        if not shipment_id.strip() or not origin_site.strip() or not by.strip():
            raise ShipmentError("a receipt needs the shipment id, its origin and your name")
        if reference_time.tzinfo is None:
            raise ShipmentError("the reference time needs a time zone")
        canonical = _nuclide(nuclide)
        papers: dict[str, Any] = {
            "shipment_id": shipment_id.strip(), "origin_site": origin_site.strip(),
            "batch_id": batch_id.strip(), "nuclide": canonical,
            "activity_mbq": _positive(activity_mbq, "the shipped activity"),
            "reference_time": rfc3339(reference_time),
        }  # fmt: skip
        run = ReceiptRun(new_id(), papers, device, channel, self._now(), by.strip())
        run.steps = [
            GuidedStep(1, (N_("Place the delivery of shipment {shipment} in the calibrator; "
                              "select the {setting} setting"),
                           {"shipment": papers["shipment_id"], "setting": canonical}),
                       N_("Delivery placed — measure"), setting=canonical, role="assay",
                       unit="MBq"),
        ]  # fmt: skip
        run.steps[0].state = "active"
        with self._lock:
            busy = self._active.get(device)
            if busy is not None and self._runs[busy].state == "running":
                raise ShipmentError(f"{device}: a receipt is being assayed")
            self._runs[run.id] = run
            self._active[device] = run.id
        self._changed()
        return run

    def confirm_step(self, run_id: str, index: int, *, by: str) -> ReceiptRun:
        """The operator's go-ahead."""
        if not by.strip():
            raise ShipmentError("confirming a step needs the person's name")
        with self._lock:
            run = self.run(run_id)
            step = run.current
            if run.state != "running" or step is None or step.index != index:
                raise ShipmentError(f"step {index} of run {run_id} is not the step in progress")
            step.confirm_by(by.strip(), self._now())
        self._changed()
        return run

    def on_reading(self, reading: Reading) -> None:
        """A calibrator reading: feeds the receipt being assayed on it."""
        run_id = self._active.get(reading.device)
        if run_id is None:
            return
        value = activity_mbq(reading)
        if value is None or reading.quality is not Quality.GOOD:
            return
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.state != "running" or reading.channel != run.channel:
                return
            step = run.current
            if step is None or not step.feed(value, reading.id, reading.t,
                                             normalize_nuclide(reading.nuclide),
                                             settle=self.settle):  # fmt: skip
                return
            if advance(run.steps):
                self._complete(run)
        self._changed()

    def _complete(self, run: ReceiptRun) -> None:
        step = run.steps[0]
        assert step.measured_at is not None  # noqa: S101 - a done step has its time
        papers = run.shipment
        check = receipt_check(
            shipped_mbq=papers["activity_mbq"],
            reference_time=datetime.fromisoformat(papers["reference_time"]),
            measured_mbq=step.measured or 0.0, measured_at=step.measured_at,
            half_life_s=self.nuclides[papers["nuclide"]].half_life_s,
            tolerance_pct=self.rules.tolerance_pct,
        )  # fmt: skip
        run.draft = {
            "shipment_id": papers["shipment_id"],
            "origin_site": papers["origin_site"],
            "batch_id": papers["batch_id"],
            "nuclide": papers["nuclide"],
            "device": run.device,
            "measured_mbq": step.measured,
            "measured_at": rfc3339(step.measured_at),
            "readings": list(step.readings),
            "shipped_mbq": papers["activity_mbq"],
            "shipped_reference_time": papers["reference_time"],
            "expected_mbq": round(check.expected_mbq, 6),
            "difference_pct": round(check.difference_pct, 4),
            "tolerance_pct": check.tolerance_pct,
            "within_tolerance": check.within_tolerance,
            "tolerance_basis": self.rules.basis,
        }
        run.state = "completed"

    async def sign_receipt(self, run_id: str, *, name: str, password: str) -> dict[str, Any]:
        """The receiver signs (meaning `performed`); beyond tolerance → an alert here."""
        with self._lock:
            run = self.run(run_id)
            if run.state != "completed" or run.draft is None:
                raise ShipmentError(f"receipt {run_id} is {run.state}: nothing to sign yet")
            fields = dict(run.draft)
        draft = self.records.draft("receipt", **fields)
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "performed")
        with self._lock:
            run.state, run.record_id = "signed", record["id"]
            if self._active.get(run.device) == run.id:
                del self._active[run.device]
        if not record["within_tolerance"] and self.alerts is not None:
            self.alerts.raise_alert(
                ALERT_RULE, run.device, None, "warning",
                msg("records.receipt.deviation", shipment=str(record["shipment_id"]),
                    origin=str(record["origin_site"]), measured=round(record["measured_mbq"], 3),
                    expected=round(record["expected_mbq"], 3),
                    deviation=round(record["difference_pct"], 2),
                    tolerance=record["tolerance_pct"]),
                record["difference_pct"], subject=str(record["shipment_id"]),
                details={"record": record["id"]},
            )  # fmt: skip
        self._changed()
        return record

__all__ = ["ALERT_RULE", "ReceiptRun", "ShipmentDesk", "ShipmentError"]
