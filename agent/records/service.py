"""The records of the running agent: the desk and the kinds built on it, wired to live data.

`Records.on_item` is a listener of the live feed (agent.acquisition.state.LiveState): every
reading item passes it on the event loop, and each kind takes only the channels it watches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.records.batch import BatchDesk
from agent.records.desk import RecordsDesk
from agent.records.dispensing import DispensingDesk
from agent.records.release import ReleaseDesk

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.physics.nuclides import NuclideTable
    from agent.qc.alerts import AlertManager
    from agent.qc.audit import AuditLog, Emit
    from agent.qc.signatures import User
    from agent.records.config import RecordsSection
    from agent.state.writer import StateWriter

log = structlog.get_logger("isoedge.records")


def _now() -> datetime:
    return datetime.now(UTC)


class Records:
    """Records desk + batch, release and dispensing."""

    def __init__(
        self,
        config: RecordsSection,
        *,
        site: str,
        zone: ZoneInfo,
        state: StateWriter,
        audit: AuditLog,
        users: Sequence[User],
        notify: Emit | None = None,
        alerts: AlertManager | None = None,
        nuclides: NuclideTable | None = None,
        prescription: Callable[[str], Any] | None = None,
        calibrator_release: Callable[[str], str | None] | None = None,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.desk = RecordsDesk(config, site=site, zone=zone, state=state, audit=audit,
                                users=users, notify=notify, now=now)  # fmt: skip
        self.batches = BatchDesk(self.desk, config, nuclides=nuclides, alerts=alerts)
        self.release = ReleaseDesk(self.desk)
        self.dispensing = DispensingDesk(
            self.desk, prescription=prescription or _no_prescriptions,
            calibrator_release=calibrator_release, nuclides=nuclides,
        )  # fmt: skip
        self.on_reading: Callable[[], None] | None = None
        """Told after each reading item was taken (the demo waits on it)."""

    async def open(self) -> None:
        """Create the records table if missing; reload the synthesis runs in progress."""
        await self.desk.open()
        await self.batches.open()  # runs in progress before a restart

    def on_item(self, stream: str, item: dict[str, Any]) -> None:
        """A live item, to every kind that assembles records from readings (never raises)."""
        try:
            self.batches.on_item(stream, item)
            self.dispensing.on_item(stream, item)
            if self.on_reading is not None and stream == "reading":
                self.on_reading()
        except Exception:
            log.exception("records listener failed", stream=stream)


def _no_prescriptions(prescription_id: str) -> Any:
    raise KeyError(prescription_id)


__all__ = ["Records"]
