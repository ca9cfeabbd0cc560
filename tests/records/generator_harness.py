"""Generator, waste and shipment desks on a simulated dose calibrator and a real state database.

Simulator (pty) → real Capintec driver → pipeline readings → the desks' `on_reading`, on the
records base (RecordsDesk) over the outbox's SQLite in a temporary folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, Self

from helpers import wait_for_condition
from records_harness import RecordsBench

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.core.reading import Reading
from agent.core.tasks import cancel_and_wait
from agent.records.elution import ElutionDesk, ElutionRun
from agent.records.generator_rules import Canister, ElutionRules, Generator, ShipmentRules
from agent.records.shipment import ShipmentDesk
from drivers.base import DeviceError, SampleKind
from drivers.dosecal.capintec_crc15 import CapintecCRC15Config, CapintecCRC15Driver
from simulators.dosecal import DoseCalibratorSimulator

CANISTER = Canister(id="MOLY-1", factor=2.0, validated=dt.date(2026, 6, 1),
                    basis="vendor factor verified with a Mo-99 source")
TC_GENERATOR = Generator(
    id="TCG-1", nuclide="Tc-99m", calibrator="dc1", canister="MOLY-1", supplier="Supplier",
    lot="L-49", reference_mbq=20_000.0,
    reference_time=dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC),
)
GA_GENERATOR = Generator(
    id="GAG-1", nuclide="Ga-68", calibrator="dc1", supplier="Supplier", lot="G-7",
    reference_mbq=1850.0, reference_time=dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC),
)


def rules(**overrides: Any) -> ElutionRules:
    base: dict[str, Any] = {"canisters": [CANISTER], "stability_floor_mbq": 0.02,
                            "identity_interval_s": 0.0}
    base.update(overrides)
    return ElutionRules(**base)


class CalibratorBench(RecordsBench):
    """RecordsBench + a simulated Capintec CRC-15 feeding the elution and receipt desks."""

    def __init__(self, directory: Path, *, elution: ElutionRules | None = None,
                 nuclide: str = "Tc-99m", activity: float = 0.0, **sim: Any) -> None:
        super().__init__(directory)
        self.elution_rules = elution or rules()
        self.simulator = DoseCalibratorSimulator("capintec_crc15", "pty", nuclide, activity,
                                                 seed=11, **sim)
        self.readings: list[Reading] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.elutions = ElutionDesk(self.elution_rules, [TC_GENERATOR, GA_GENERATOR], self.desk,
                                    alerts=self.state.alerts)
        await self.elutions.open()
        self.shipments = ShipmentDesk(ShipmentRules(tolerance_pct=5.0), self.desk,
                                      alerts=self.state.alerts,
                                      calibrators=[("dc1", "activity")])
        address = await self.simulator.start()
        self.config = CapintecCRC15Config(
            id="dc1", type="capintec_crc15", port=address, poll_interval_s=0.05, timeout_s=0.5,
            frame_gap_s=0.01,
        )
        self.pipeline = Pipeline(None, LiveState(), {"dc1": self.config})  # type: ignore[arg-type]
        self._task = asyncio.create_task(self._feed())
        return self

    async def _feed(self) -> None:
        while True:
            driver = CapintecCRC15Driver(self.config)
            try:
                await driver.connect()
                async for sample in driver.samples():
                    if sample.kind is not SampleKind.READING:
                        continue
                    reading = self.pipeline.to_reading(sample)
                    self.readings.append(reading)
                    self.elutions.on_reading(reading)
                    self.shipments.on_reading(reading)
            except DeviceError:
                await asyncio.sleep(0.1)
            finally:
                await driver.close()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self.simulator.stop()
        await super().__aexit__(*exc)

    async def elute_tc(self, run: ElutionRun, eluate_mbq: float, canister_reading_mbq: float,
                       timeout: float = 30.0) -> ElutionRun:
        """The technologist: eluate on Tc-99m, then in the canister on Mo-99."""
        sim, desk = self.simulator, self.elutions

        def step_along() -> bool:
            step = run.current
            if run.state != "running" or step is None:
                return True
            if step.waiting_for_operator:
                if step.role == "tc99m":
                    sim.load_sample("Tc-99m", eluate_mbq)
                else:
                    sim.load_sample("Mo-99", canister_reading_mbq)
                desk.confirm_step(run.id, step.index, by=run.started_by)
            return False

        await wait_for_condition(step_along, timeout=timeout, interval=0.05)
        return run
