"""The records of the running agent: the desk and the kinds built on it, wired to readings.

`Records` is an observer of the pipeline's readings (through agent.records.generators.
ReadingFanout, on the event loop): it watches the synthesis modules' event channels, their hot
cells' environment channels and the calibrators, and each kind takes what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from agent.records.batch import BatchDesk
from agent.records.dispensing import DispensingDesk
from agent.records.release import ReleaseDesk

if TYPE_CHECKING:
    from collections.abc import Iterable

    from agent.core.reading import Reading
    from agent.physics.nuclides import NuclideTable
    from agent.qc.alerts import AlertManager
    from agent.records.desk import RecordsDesk

log = structlog.get_logger("isoedge.records")


class Records:
    """Records desk + batch, release and dispensing."""

    def __init__(
        self,
        desk: RecordsDesk,
        *,
        alerts: AlertManager | None = None,
        nuclides: NuclideTable | None = None,
        prescription: Callable[[str], Any] | None = None,
        calibrator_release: Callable[[str], str | None] | None = None,
        calibrators: Iterable[str] = (),
    ) -> None:
        self.desk = desk
        config = desk.config
        self.batches = BatchDesk(self.desk, config, nuclides=nuclides, alerts=alerts)
        self.release = ReleaseDesk(self.desk)
        self.dispensing = DispensingDesk(
            self.desk, prescription=prescription or _no_prescriptions,
            calibrator_release=calibrator_release, nuclides=nuclides,
        )  # fmt: skip
        self.after_reading: Callable[[], None] | None = None
        """Told after each reading was taken (the demo waits on it)."""
        # Readings are watched only where records are assembled from them (a site without
        # synthesis modules pays nothing per reading), as before: the batches' channels, and
        # the calibrators doses are measured on (those with a QC programme, and the modules').
        self._watching = bool(config.synthesis)
        self._dose_calibrators = frozenset(calibrators)

    async def open(self) -> None:
        """Create the records table if missing; reload the synthesis runs in progress."""
        await self.desk.open()
        await self.batches.open()  # runs in progress before a restart

    def watches(self, device: str, channel: str) -> bool:
        """A channel a batch is assembled from, or a calibrator doses are measured on."""
        return self._watching and (
            self.batches.watches(device, channel) or device in self._dose_calibrators
        )

    def on_reading(self, reading: Reading) -> None:
        """A watched reading, in its published item form, to every kind (never raises)."""
        try:
            item = reading.to_item()
            self.batches.on_item("reading", item)
            self.dispensing.on_item("reading", item)
            if self.after_reading is not None:
                self.after_reading()
        except Exception:
            log.exception("records observer failed", device=reading.device)


def _no_prescriptions(prescription_id: str) -> Any:
    raise KeyError(prescription_id)


__all__ = ["Records"]
