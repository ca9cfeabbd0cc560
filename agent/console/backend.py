"""What the console may see of and ask from the running agent: a narrow, typed interface.

The console never holds the runtime's `Agent`: it gets a `ConsoleBackend` (the service layer
implements it), reads snapshots from it and asks it for the few things a person may do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from agent.acquisition.state import LiveSnapshot
    from agent.delivery.outbox import OutboxStats
    from agent.qc.alerts import Alert
    from agent.qc.manager import TestRun
    from agent.qc.prescriptions import Prescription, PrescriptionBook
    from agent.qc.programme import CalibratorProgramme, QCSection
    from agent.qc.signatures import SignatureService
    from agent.records.generators import GeneratorRecords
    from agent.records.service import Records


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who the agent is and where it publishes."""

    site: str
    agent_id: str
    version: str
    kid: str
    broker_url: str
    topic_base: str


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One supervised device as the console shows it."""

    id: str
    type: str
    description: str | None
    state: str
    detail: str | None
    timeout_s: float = 3.0  # the driver's answer timeout: silent longer than this is offline


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """The outbox and publisher at one instant (no disk access needed)."""

    link_state: str
    connected: bool
    published_items: int
    published_envelopes: int
    reconnects: int
    quota_state: str
    quota_bytes: int
    writer_alive: bool
    extra: dict[str, Any] = field(default_factory=dict)
    disk: dict[str, Any] = field(default_factory=dict)  # free-space state (SpaceState.as_dict)
    committed_by_stream: dict[str, int] = field(default_factory=dict)
    disk_full_total: int = 0
    held_back_seconds: float = 0.0
    replay_requests: dict[str, int] = field(default_factory=dict)  # by outcome (delivery/replay)


class QCDesk(Protocol):
    """The dose-calibrator QC programme as the console uses it (`agent.qc.manager.QCManager`)."""

    config: QCSection
    signatures: SignatureService

    @property
    def devices(self) -> list[str]:
        """Calibrators with a QC programme."""
        ...

    def programme(self, device: str) -> CalibratorProgramme:
        """The QC programme of one calibrator (QCError if none)."""
        ...

    def release(self, device: str) -> dict[str, Any]:
        """`{"release", "reason", "since", "due"}` of one calibrator."""
        ...

    def calibrators_status(self) -> dict[str, dict[str, Any]]:
        """Release state of every calibrator."""
        ...

    async def override_hold(self, device: str, prescription_id: str, name: str, password: str,
                            reason: str) -> dict[str, Any]:  # fmt: skip
        """A signed override: the next dose of this prescription is measured while held."""
        ...

    def start_test(self, device: str, test: str, *, by: str, time_scale: float = 1.0) -> TestRun:
        """Start a guided (or linearity) test."""
        ...

    def run(self, run_id: str) -> TestRun:
        """A run by id (QCError if unknown)."""
        ...

    def runs(self, device: str | None = None) -> list[TestRun]:
        """Runs of this agent's lifetime, newest first."""
        ...

    def cancel_run(self, run_id: str, *, by: str, reason: str) -> TestRun:
        """Abandon a run (audited)."""
        ...

    def finish_linearity(self, run_id: str) -> TestRun:
        """Analyse a linearity run with the points it has."""
        ...

    def confirm_step(self, run_id: str, index: int, *, by: str) -> TestRun:
        """The operator's go-ahead for the current step (audited)."""
        ...

    async def sign_run(
        self, run_id: str, name: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """The performer signs a completed run: a stored, published QC record."""
        ...

    async def records(
        self,
        device: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        test: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored QC records (tests and reviews), oldest first."""
        ...

    async def reviews_of(self, record_id: str) -> list[dict[str, Any]]:
        """Review and approval records naming a record."""
        ...

    async def review(
        self, record_id: str, name: str, password: str, meaning: str = "reviewed",
        comment: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        """A signed review or approval of a record (a second person approves)."""
        ...

    async def acknowledge_alert(
        self, alert_id: str, name: str, password: str, reason: str
    ) -> Any:
        """Acknowledge an alert as an electronic signature (password asked again)."""
        ...

    async def acknowledge_alerts(
        self, alert_ids: list[str], name: str, password: str, reason: str
    ) -> tuple[list[Any], dict[str, str]]:
        """Acknowledge a selection with one reason and one signature; (done, refused by id)."""
        ...

    async def shelve_alert(
        self, alert_id: str, name: str, password: str, reason: str, minutes: float
    ) -> Any:
        """Shelve a flapping alarm for `minutes` (signed; audited; ends on its own)."""
        ...

    async def review_audit(
        self, since: datetime, until: datetime, name: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """A signed review of an audit-trail range."""
        ...


class DosageDesk(Protocol):
    """Prescriptions and dispensing records (`agent.qc.engine.QCEngine`)."""

    prescriptions: PrescriptionBook

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
        """Add or (with `replace`) change a prescription; stored and audited."""
        ...

    def remove_prescription(self, prescription_id: str, *, actor: str, reason: str) -> None:
        """Withdraw a prescription (audited)."""
        ...

    def arm_prescription(self, device: str, prescription_id: str | None, by: str = "") -> None:
        """The next settled measurement on `device` is checked against this prescription."""
        ...

    async def dispensing(self, prescription_id: str | None = None) -> list[dict[str, Any]]:
        """Dispensing records, oldest first."""
        ...


class LiveFeed(Protocol):
    """What the console reads of the live state: snapshots and a subscription.

    (`agent.acquisition.state.LiveState`.) The console never changes the live state: it reads
    copies and registers listeners through `subscribe()`, which returns the listener's remover.
    """

    def snapshot(self) -> LiveSnapshot:
        """The latest readings, device health and counters, copied."""
        ...

    def trends_since(self, cutoff: float) -> dict[tuple[str, str], list[tuple[float, float]]]:
        """Thinned trend points newer than `cutoff` per numeric channel."""
        ...

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call `listener(kind, item)` on readings and events; returns its remover."""
        ...


class SimulatorPanel(Protocol):
    """The demo's simulated calibrators, under the console's hands (absent in production)."""

    def state(self) -> dict[str, dict[str, Any]]:
        """Per simulated calibrator: what is in the chamber, the setting, what can be placed."""
        ...

    def act(self, device: str, action: str, *, source: str | None = None,
            nuclide: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Do `action` on `device`'s simulator; its new state (ValueError if it cannot be done).

        `empty`, `place` (a source of the QC programme), `vial` (the demo's sample back) or
        `setting` (select `nuclide`).
        """
        ...


class ConsoleBackend(Protocol):
    """The running agent, as far as the console is concerned."""

    @property
    def identity(self) -> AgentIdentity:
        """Site, agent id, key id, broker."""
        ...

    @property
    def simulator_panel(self) -> SimulatorPanel | None:
        """The demo's simulator controls; None on a real site."""
        ...

    @property
    def live(self) -> LiveFeed:
        """Latest readings, trends and device health (updated by the pipeline)."""
        ...

    @property
    def started(self) -> bool:
        """True once the agent has finished starting."""
        ...

    @property
    def started_at(self) -> float:
        """Epoch seconds the agent started at."""
        ...

    def devices(self) -> list[DeviceView]:
        """Every supervised device, sorted by id."""
        ...

    def delivery(self) -> DeliveryView:
        """Outbox and broker link state."""
        ...

    async def outbox_stats(self) -> OutboxStats | None:
        """Backlog figures (None while the outbox is not running)."""
        ...

    def open_alerts(self) -> list[Alert]:
        """Alerts needing attention (kept in memory: no disk access)."""
        ...

    def calibrators(self) -> dict[str, dict[str, Any]]:
        """Release state per dose calibrator with a QC programme (CONTRACT §5 `calibrators`)."""
        ...

    async def recent_alerts(self, limit: int) -> list[Alert]:
        """The newest alerts, open or closed."""
        ...

    @property
    def qc(self) -> QCDesk:
        """The dose-calibrator QC programme: tests, records, signatures, release."""
        ...

    @property
    def records(self) -> Records:
        """The radiopharmacy's records (batches, releases, doses...)."""
        ...

    @property
    def generator_records(self) -> GeneratorRecords:
        """Elutions, waste and shipments."""
        ...

    @property
    def dosage(self) -> DosageDesk:
        """Prescriptions and dispensing records."""
        ...

    async def acknowledge_alert(self, alert_id: str, user: str, reason: str) -> Alert:
        """Acknowledge: alert state, audit record and stream events in one transaction."""
        ...

    async def audit_query(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        actor: str | None,
        action: str | None,
        subject: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Audit records matching the filters, oldest first."""
        ...
