"""Waste decay-in-storage records: a container logged, then released on an area survey.

Logging a container (nuclides, when sealed) computes its release date: sealed + n half-lives
of its longest-lived nuclide (`[records.waste] half_lives`); a nuclide with a half-life over
120 days is refused (10 CFR 35.92). The release survey is guided on the configured area
monitor: the background first (probe away from the container), then at the container's
surface, each the monitor's next N readings after the operator's go-ahead; the container is
releasable when the surface cannot be distinguished from background
(agent.physics.storage.release_survey). Both are signed records of kind `waste` with
`container_id` as subject: `part` is `logged` or `survey`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.i18n import N_
from agent.core.reading import Reading, new_id, rfc3339
from agent.physics.nuclides import NUCLIDES, Nuclide, UnknownNuclideError, normalize_nuclide
from agent.physics.storage import NotEligibleError, release_date, release_survey
from agent.qc.rules import numeric_value
from agent.records.guided import GuidedDesk, GuidedRun, GuidedStep, Settle, advance, utc_now
from agent.records.kinds import RecordError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agent.records.desk import RecordsDesk
    from agent.records.generator_rules import WasteRules

log = structlog.get_logger("isoedge.records.waste")


class WasteError(RecordError):
    """A waste request that cannot be carried out."""


@dataclass
class SurveyRun(GuidedRun):
    """A release survey being measured."""

    id: str
    container_id: str
    device: str
    channel: str
    started: datetime
    started_by: str
    logged: dict[str, Any]
    steps: list[GuidedStep] = field(default_factory=list)
    state: str = "running"  # running | completed | signed | cancelled
    draft: dict[str, Any] | None = None
    record_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the console."""
        return {**self.guided_dict(), "container_id": self.container_id}


class WasteDesk(GuidedDesk[SurveyRun]):
    """Waste containers in decay-in-storage and their release surveys."""

    what = "waste"

    def __init__(
        self,
        rules: WasteRules,
        records: RecordsDesk,
        *,
        nuclides: Mapping[str, Nuclide] = NUCLIDES,
        now: Callable[[], datetime] = utc_now,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(now, on_change)
        self.rules = rules
        self.records = records
        self.nuclides = nuclides
        self._active: str | None = None

    def watches(self, device: str, channel: str) -> bool:
        """The area monitor's channel."""
        monitor = self.rules.monitor
        return monitor is not None and (monitor.device, monitor.channel) == (device, channel)

    def run(self, run_id: str) -> SurveyRun:
        """A survey by id (WasteError if none)."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise WasteError(f"no survey {run_id!r}") from None

    # ------------------------------------------------------------------ log
    async def log_container(
        self,
        container_id: str,
        nuclides: Sequence[str],
        sealed_at: datetime,
        *,
        name: str,
        password: str,
        location: str = "",
    ) -> dict[str, Any]:
        """Sign a container into decay-in-storage; its release date is computed."""
        if not container_id.strip():
            raise WasteError("a container needs its id")
        if sealed_at.tzinfo is None:
            raise WasteError("the sealing time needs a time zone")
        names = []
        for nuclide in nuclides:
            canonical = normalize_nuclide(nuclide)
            if canonical is None:
                raise WasteError(str(UnknownNuclideError(nuclide)))
            names.append(canonical)
        try:
            date = release_date(names, sealed_at, self.rules.half_lives, self.nuclides)
        except (NotEligibleError, ValueError) as exc:
            raise WasteError(str(exc)) from None
        if await self.records.listing("waste", subject=container_id.strip()):
            raise WasteError(f"container {container_id} is logged already")
        longest = max(names, key=lambda n: self.nuclides[n].half_life_s)
        draft = self.records.draft(
            "waste", part="logged", container_id=container_id.strip(), nuclides=names,
            sealed_at=rfc3339(sealed_at), location=location,
            half_lives=self.rules.half_lives, longest_lived=longest,
            half_life_s=self.nuclides[longest].half_life_s, release_date=rfc3339(date),
            basis=self.rules.half_lives_basis, rule_basis=self.rules.basis,
        )  # fmt: skip
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "performed")
        self._changed()
        return record

    async def containers(self) -> list[dict[str, Any]]:
        """Logged containers with their latest survey (newest first)."""
        records = await self.records.listing("waste", limit=100_000)
        surveys: dict[str, dict[str, Any]] = {}
        for record in reversed(records):  # oldest first: the last survey wins
            if record.get("part") == "survey":
                surveys[str(record["container_id"])] = record
        return [
            {**record, "survey": surveys.get(str(record["container_id"]))}
            for record in records if record.get("part") == "logged"
        ]  # fmt: skip

    # ------------------------------------------------------------------ survey
    async def start_survey(self, container_id: str, *, by: str) -> SurveyRun:
        """Start the guided release survey of a logged container on the area monitor."""
        monitor = self.rules.monitor
        if monitor is None:
            raise WasteError("no area monitor configured ([records.waste.monitor])")
        if not by.strip():
            raise WasteError("a survey needs the person's name")
        logged = [r for r in await self.records.listing("waste", subject=container_id)
                  if r.get("part") == "logged"]  # fmt: skip
        if not logged:
            raise WasteError(f"container {container_id} is not logged")
        run = SurveyRun(new_id(), container_id, monitor.device, monitor.channel, self._now(),
                        by.strip(), logged[0])  # fmt: skip
        n = str(self.rules.readings)
        run.steps = [
            GuidedStep(1, (N_("Hold the monitor's probe away from any waste: background "
                              "({n} readings)"), {"n": n}),
                       N_("Probe at background — measure"), kind="count", role="background"),
            GuidedStep(2, (N_("Hold the probe at the surface of container {container}, no "
                              "shielding between ({n} readings)"),
                           {"container": container_id, "n": n}),
                       N_("Probe at the surface — measure"), kind="count", role="surface"),
        ]  # fmt: skip
        run.steps[0].state = "active"
        with self._lock:
            if self._active is not None and self._runs[self._active].state == "running":
                raise WasteError("a survey is being measured")
            self._runs[run.id] = run
            self._active = run.id
        self._changed()
        return run

    def confirm_step(self, run_id: str, index: int, *, by: str) -> SurveyRun:
        """The operator's go-ahead for the current step."""
        if not by.strip():
            raise WasteError("confirming a step needs the person's name")
        with self._lock:
            run = self.run(run_id)
            step = run.current
            if run.state != "running" or step is None or step.index != index:
                raise WasteError(f"step {index} of survey {run_id} is not the step in progress")
            step.confirm_by(by.strip(), self._now())
        self._changed()
        return run

    def on_reading(self, reading: Reading) -> None:
        """An area monitor reading: feeds the survey."""
        if self._active is None or not self.watches(reading.device, reading.channel):
            return
        value = numeric_value(reading)
        if value is None:
            return
        with self._lock:
            run = self._runs.get(self._active or "")
            step = None if run is None or run.state != "running" else run.current
            if run is None or step is None:
                return
            settle = Settle(self.rules.readings, 0.0, 0.0)
            if not step.feed(value, reading.id, reading.t, None, settle=settle):
                return
            step.unit = reading.unit
            if advance(run.steps):
                self._complete(run)
        self._changed()

    def _complete(self, run: SurveyRun) -> None:
        background, surface = run.steps
        try:
            survey = release_survey(surface.values, background.values, k=self.rules.k,
                                    min_readings=self.rules.readings)  # fmt: skip
        except ValueError as exc:
            raise WasteError(str(exc)) from None
        now = surface.measured_at or self._now()
        planned = datetime.fromisoformat(str(run.logged["release_date"]))
        run.draft = {
            "part": "survey",
            "container_id": run.container_id,
            "logged_record": run.logged["id"],
            "nuclides": run.logged.get("nuclides"),
            "release_date": run.logged["release_date"],
            "before_release_date": now < planned,
            "device": run.device,
            "channel": run.channel,
            "unit": surface.unit,
            "background": background.values,
            "background_readings": background.readings,
            "surface": surface.values,
            "surface_readings": surface.readings,
            "background_mean": survey.background_mean,
            "surface_mean": survey.surface_mean,
            "excess": survey.excess,
            "combined_uncertainty": survey.combined_uncertainty,
            "k": survey.k,
            "distinguishable": survey.distinguishable,
            "result": "pass" if survey.passed else "fail",
            "released": survey.passed,
            "basis": self.rules.basis,
            "performed_by": run.started_by,
        }
        run.state = "completed"

    async def sign_survey(self, run_id: str, *, name: str, password: str) -> dict[str, Any]:
        """The surveyor signs (meaning `performed`): a pass releases the container."""
        with self._lock:
            run = self.run(run_id)
            if run.state != "completed" or run.draft is None:
                raise WasteError(f"survey {run_id} is {run.state}: nothing to sign yet")
            fields = dict(run.draft)
        draft = self.records.draft("waste", **fields)
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "performed")
        with self._lock:
            run.state, run.record_id = "signed", record["id"]
            if self._active == run.id:
                self._active = None
        self._changed()
        return record


__all__ = ["SurveyRun", "WasteDesk", "WasteError"]
