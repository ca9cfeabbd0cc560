"""The reading path of the records: one pipeline hook for the QC programme and every desk.

Readings reach the records one way: the pipeline → its calibrator hook (`ReadingFanout`) →
each observer watching the reading's channel. The pipeline keeps a single calibrator-QC
observer, so the fan-out answers `is_held` from the QC programme and sends each watched reading
to the QC programme (measured values only) and to every record observer that watches its
channel (values and events): the batch and dispensing desks (agent.records.service.Records),
then the elution, waste and shipment desks (`GeneratorRecords`, built here from `[records]`).
An observer that fails on a reading is logged; the others and the QC programme still get it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from agent.core.values import SampleKind
from agent.physics.nuclides import NUCLIDES, Nuclide
from agent.records.elution import ElutionDesk
from agent.records.guided import Settle
from agent.records.shipment import ShipmentDesk
from agent.records.waste import WasteDesk

if TYPE_CHECKING:
    from agent.core.reading import Reading
    from agent.qc.alerts import AlertManager
    from agent.records.config import RecordsSection
    from agent.records.desk import RecordsDesk

log = structlog.get_logger("isoedge.records")


class Observer(Protocol):
    """Something that takes the readings of the channels it watches."""

    def watches(self, device: str, channel: str) -> bool:
        """True for a channel whose readings it wants."""

    def on_reading(self, reading: Reading) -> None:
        """One reading of a watched channel."""


class HoldingObserver(Observer, Protocol):
    """The QC programme: an observer that also knows which calibrators are on hold."""

    def is_held(self, device: str) -> bool:
        """The calibrator is on hold."""


class ReadingFanout:
    """One pipeline hook for the QC programme and the record desks."""

    def __init__(self, primary: HoldingObserver | None, observers: Iterable[Observer]) -> None:
        self.primary = primary
        self.observers = tuple(observers)

    def is_held(self, device: str) -> bool:
        """As the QC programme says (no programme: never)."""
        return self.primary is not None and self.primary.is_held(device)

    def watches(self, device: str, channel: str) -> bool:
        """Watched by the QC programme or by a desk (a fixed answer per channel)."""
        every = (self.primary, *self.observers)
        return any(o is not None and o.watches(device, channel) for o in every)

    def on_reading(self, reading: Reading) -> None:
        """To the QC programme (a measured value), then to each desk watching the channel."""
        primary = self.primary
        if (primary is not None and reading.kind is SampleKind.READING
                and primary.watches(reading.device, reading.channel)):  # fmt: skip
            primary.on_reading(reading)
        for observer in self.observers:
            if not observer.watches(reading.device, reading.channel):
                continue
            try:
                observer.on_reading(reading)
            except Exception:
                log.exception("record desk failed on a reading", device=reading.device)


class GeneratorRecords:
    """Elutions, waste and shipments of one agent."""

    def __init__(
        self,
        config: RecordsSection,
        records: RecordsDesk,
        *,
        alerts: AlertManager | None,
        calibrators: Iterable[tuple[str, str]] = (),
        nuclides: Mapping[str, Nuclide] = NUCLIDES,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        rules = config.elution
        self.elutions = ElutionDesk(rules, config.generators, records, alerts=alerts,
                                    nuclides=nuclides, now=records.now,
                                    on_change=on_change)  # fmt: skip
        self.waste = WasteDesk(config.waste, records, nuclides=nuclides, now=records.now,
                               on_change=on_change)  # fmt: skip
        known = {(g.calibrator, g.channel) for g in config.generators} | set(calibrators)
        self.shipments = ShipmentDesk(
            config.shipments, records, alerts=alerts, calibrators=known,
            settle=Settle(rules.settle_readings, rules.stability_pct, rules.stability_floor_mbq),
            nuclides=nuclides, now=records.now, on_change=on_change,
        )  # fmt: skip

    async def open(self) -> None:
        """Learn the generators' last elutions from the store."""
        await self.elutions.open()

    def fanout(self, primary: HoldingObserver | None, *first: Observer) -> ReadingFanout:
        """The pipeline's hook: the QC programme, the `first` observers, then these desks."""
        return ReadingFanout(primary, (*first, self.elutions, self.waste, self.shipments))


__all__ = ["GeneratorRecords", "Observer", "ReadingFanout"]
