"""A QC desk on a simulated dose calibrator: simulator (pty) → real driver → pipeline readings →
QADesk, on a real state database (the outbox's SQLite and owner thread) in a temporary
folder. No broker: what would be published is read back from the outbox (`stream_items`)."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any, Self

from helpers import wait_for_condition
from statestore import StateStore

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from agent.console.settings import WebUser
from agent.core.passwords import hash_password
from agent.core.tasks import cancel_and_wait
from agent.physics.nuclides import NuclideTable
from agent.qc.desk import QADesk
from agent.qc.guided import TestRun
from agent.qc.programme import QCSection
from agent.qc.records import QCRecordStore
from agent.qc.signatures import SignatureService
from drivers.base import DeviceError, SampleKind
from drivers.dosecal.capintec_crc15 import CapintecCRC15Config, CapintecCRC15Driver
from simulators.dosecal import DoseCalibratorSimulator

PASSWORDS = {"tess": "tech-pass", "rita": "pharm-pass", "quinn": "qa-pass", "quentin": "qa2-pass"}
ROLES = {"tess": "technologist", "rita": "radiopharmacist", "quinn": "qa", "quentin": "qa"}
FULL_NAMES = {"tess": "Tess Tech", "rita": "Rita Pharm", "quinn": "Quinn QA", "quentin": "Quentin QA"}

PROGRAMME = """
timezone = "Europe/Amsterdam"

[[calibrators]]
device = "dc1"
settle_readings = 3
stability_pct = 2.0

[[calibrators.sources]]
id = "CS-001"
nuclide = "Cs-137"
activity = 7.4
unit = "MBq"
reference_date = 2025-06-01T12:00:00Z
certificate = "CERT-CS-001"
uncertainty_pct = 1.5

[[calibrators.sources]]
id = "CO-002"
nuclide = "Co-57"
activity = 185
reference_date = 2026-10-01T12:00:00Z
certificate = "CERT-CO-002"
uncertainty_pct = 2.0

[calibrators.constancy]
source = "CS-001"
settings = [{ nuclide = "Cs-137" }, { nuclide = "F-18", ratio = 0.74 }]

[calibrators.background]
max_mbq = 0.1

[calibrators.accuracy]
sources = ["CS-001", "CO-002"]
last_performed = 2026-11-20T09:00:00Z

[calibrators.geometry]
nuclide = "Tc-99m"
containers = [{ name = "vial", reference = true }, { name = "syringe" }]
last_performed = 2026-11-20T09:00:00Z

[calibrators.linearity]
nuclide = "Tc-99m"
interval_s = 3600
duration_h = 24
min_points = 12
min_activity_mbq = 100
last_performed = 2026-11-20T09:00:00Z
"""


def users() -> list[WebUser]:
    return [
        WebUser(
            name=name, role=ROLES[name], full_name=FULL_NAMES[name],  # type: ignore[arg-type]
            password_hash=hash_password(PASSWORDS[name]),
        )
        for name in PASSWORDS
    ]


class QCDesk:
    """Simulator + driver + QC manager; `emitted` holds (stream, item) as the outbox got them."""

    def __init__(
        self, state_dir: Path, programme: str = PROGRAMME, *, time_scale: float = 1.0,
        noise: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.config = QCSection.model_validate(tomllib.loads(programme))
        self.simulator = DoseCalibratorSimulator(
            "capintec_crc15", "pty", "F-18", 370.0, noise=noise, seed=7, time_scale=time_scale,
        )
        self.readings: list[Any] = []
        self.sample_mbq = 400.0  # the geometry test's sample
        self.manager: QADesk | None = None
        self._task: asyncio.Task[None] | None = None
        self.state = StateStore(state_dir)

    @property
    def heard(self) -> list[tuple[str, dict[str, Any]]]:
        """What the live view was told: (stream, item)."""
        return self.state.heard.items

    async def open_manager(self) -> QADesk:
        await self.state.open()
        self.audit = self.state.audit
        self.alerts = self.state.alerts
        self.store = QCRecordStore(self.state.database, notify=self.state.heard)
        self.signatures = SignatureService(users(), self.config.signing, self.audit, self.config.zone)
        self.manager = QADesk(
            self.config, NuclideTable(), self.store, self.signatures, self.alerts, self.audit,
        )
        await self.manager.open()
        return self.manager

    async def stream(self, name: str) -> list[dict[str, Any]]:
        """Items of a stream as committed to the outbox."""
        await self.state.settle()
        return self.state.stream_items(name)

    async def __aenter__(self) -> Self:
        await self.open_manager()
        address = await self.simulator.start()
        config = CapintecCRC15Config(
            id="dc1", type="capintec_crc15", port=address, poll_interval_s=0.05, timeout_s=0.5,
            frame_gap_s=0.01,
        )
        self.pipeline = Pipeline(None, LiveState(), {"dc1": config})  # type: ignore[arg-type]
        self._task = asyncio.create_task(self._feed(config))
        return self

    async def _feed(self, config: CapintecCRC15Config) -> None:
        while True:
            driver = CapintecCRC15Driver(config)
            try:
                await driver.connect()
                async for sample in driver.samples():
                    if sample.kind is not SampleKind.READING:
                        continue
                    reading = self.pipeline.to_reading(sample)
                    assert self.manager is not None
                    if self.manager.is_held(reading.device) and reading.nuclide is not None:
                        reading.attrs["calibrator_release"] = "on_hold"
                    self.readings.append(reading)
                    self.manager.on_reading(reading)
            except DeviceError:
                await asyncio.sleep(0.1)
            finally:
                await driver.close()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self.simulator.stop()
        await self.state.close()

    async def operate(self, run: TestRun, timeout: float = 20.0) -> TestRun:  # noqa: C901 - one operator
        """Act as the technologist: follow the run's steps on the simulator until it completes."""
        assert self.manager is not None
        sim = self.simulator
        placed: str | None = None

        def step_along() -> bool:  # noqa: C901 - one operator's hands, step by step
            step = run.current
            if run.state != "running" or step is None:
                return run.state != "running"
            if step.kind == "background":
                if sim.chamber.a0_mbq > 0:
                    sim.empty()
            elif step.kind == "source" and step.source is not None:
                nonlocal placed
                programme = self.manager.programme(run.device)  # type: ignore[union-attr]
                source = programme.source(step.source)
                if placed != step.source:
                    activity, _ = self.manager.expected_activity(run.device, source.id)  # type: ignore[union-attr]
                    if step.requires_removal and not step.removal_seen:
                        sim.empty()
                        return False
                    sim.place_source(source.nuclide, activity)
                    placed = step.source
                if sim.chamber.selected_nuclide != step.setting:
                    sim.set_nuclide(step.setting or source.nuclide)
            elif step.kind == "sample" and step.container not in (None, placed):
                if step.requires_removal and not step.removal_seen:
                    sim.empty()
                    return False
                sim.place_source(step.setting or "Tc-99m", self.sample_mbq, str(step.container))
                placed = step.container
            if step.waiting_for_operator:  # the chamber is as the step asks: "— measure"
                self.manager.confirm_step(run.id, step.index, by=run.started_by)  # type: ignore[union-attr]
            return False

        await wait_for_condition(step_along, timeout=timeout, interval=0.05)
        return run
