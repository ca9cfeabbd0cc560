"""Generator elution records: guided on the dose calibrator, judged, signed, published.

A Tc-99m elution is measured in two guided steps on the generator's calibrator: the eluate on
the Tc-99m setting, then the eluate in the lead canister on the Mo-99 setting. Each step waits
for the operator's go-ahead, then completes on the instrument's own settled readings (N
consecutive readings on the step's setting whose spread is within the rules' stability), as the
QC desk's guided tests do. The Al3+ spot test is typed. The draft then carries the Mo-99 ratio
at the end of elution, the limit the site chose (with its source), the use-by time (from R0 and
the limit, and at most the eluate's shelf life), the aluminium result, the Tc-99m available on
the column and the elution efficiency. A failed elution holds that eluate: its record says
`held: true` with the reasons, an alert is raised, and `eluate_state()` reports it held (the
release and dispensing desks ask it).

A Ga-68 elution is measured as a series on the Ga-68 setting (identity by half-life, the
existing fit) and signed; its Ge-68 breakthrough is a second record of the same eluate, from a
remeasurement no earlier than `ge68_wait_h` after elution, with the detection-limit check. The
console lists the remeasurements due (`reminders()`).

Record items (kind `elution`, subject `eluate_id`; the generator's own record has subject
`generator_id`): `part` is `generator` (receipt of a generator), `elution` or `ge68`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.i18n import N_
from agent.core.messages import Message, msg
from agent.core.reading import Reading, new_id, rfc3339
from agent.physics.breakthrough import (
    AL_SOURCES,
    GA68_IDENTITY_WINDOW_S,
    AluminiumResult,
    SpotColour,
    aluminium_check,
    elution_efficiency_pct,
    ga68_identity,
    ge68_breakthrough,
    mo99_at,
    mo99_breakthrough,
    tc99m_available_mbq,
)
from agent.physics.halflife import FitError
from agent.physics.nuclides import NUCLIDES, Nuclide, normalize_nuclide
from agent.qc.rules import activity_mbq
from agent.records.guided import GuidedDesk, GuidedRun, GuidedStep, Settle, advance, utc_now
from agent.records.kinds import RecordError
from drivers.base import Quality

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agent.qc.alerts import AlertManager
    from agent.records.desk import RecordsDesk
    from agent.records.generator_rules import ElutionRules, Generator

log = structlog.get_logger("isoedge.records.elution")

ALERT_RULE = "records.elution"


class ElutionError(RecordError):
    """An elution request that cannot be carried out."""


@dataclass
class ElutionRun(GuidedRun):
    """An elution (or a Ge-68 remeasurement) being measured, then signed."""

    id: str
    part: str  # elution | ge68
    generator: str
    nuclide: str
    device: str
    channel: str
    eluate_id: str
    elution_time: datetime
    started: datetime
    started_by: str
    volume_ml: float | None
    steps: list[GuidedStep] = field(default_factory=list)
    state: str = "running"  # running | measured | completed | signed | cancelled
    aluminium: AluminiumResult | None = None
    draft: dict[str, Any] | None = None
    record_id: str | None = None
    first: dict[str, Any] | None = None  # ge68: the eluate's elution record
    time_scale: float = 1.0  # > 1 only for a simulated eluate that decays faster

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the console."""
        return {
            **self.guided_dict(),
            "part": self.part,
            "generator": self.generator,
            "nuclide": self.nuclide,
            "eluate_id": self.eluate_id,
            "elution_time": rfc3339(self.elution_time),
            "volume_ml": self.volume_ml,
            "needs_aluminium": self.nuclide == "Tc-99m" and self.part == "elution",
        }


class ElutionDesk(GuidedDesk[ElutionRun]):
    """Generators, their elutions and Ge-68 remeasurements."""

    what = "elution"

    def __init__(
        self,
        rules: ElutionRules,
        generators: Sequence[Generator],
        records: RecordsDesk,
        *,
        alerts: AlertManager | None = None,
        nuclides: Mapping[str, Nuclide] = NUCLIDES,
        now: Callable[[], datetime] = utc_now,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(now, on_change)
        self.rules = rules
        self.generators = {g.id: g for g in generators}
        self.records = records
        self.alerts = alerts
        self.nuclides = nuclides
        self._active: dict[str, str] = {}  # device → run id
        self._last_elution: dict[str, datetime] = {}  # generator → its last signed elution

    async def open(self) -> None:
        """Learn each generator's last signed elution (the yield's growth time)."""
        for record in await self.history():
            if record.get("part") == "elution" and isinstance(record.get("elution_time"), str):
                self._note_elution(str(record["generator_id"]), record["elution_time"])

    def _note_elution(self, generator_id: str, elution_time: str) -> None:
        when = datetime.fromisoformat(elution_time)
        last = self._last_elution.get(generator_id)
        if last is None or when > last:
            self._last_elution[generator_id] = when

    # ------------------------------------------------------------------ lookup
    def generator(self, generator_id: str) -> Generator:
        """The configured generator (ElutionError if none)."""
        try:
            return self.generators[generator_id]
        except KeyError:
            raise ElutionError(msg("error.elution.no_generator", generator=generator_id)) from None

    def run(self, run_id: str) -> ElutionRun:
        """A run by id (ElutionError if none)."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise ElutionError(msg("error.elution.no_run", run=run_id)) from None

    def watches(self, device: str, channel: str) -> bool:
        """A generator's calibrator channel (the pipeline sends its readings)."""
        return any(g.calibrator == device and g.channel == channel
                   for g in self.generators.values())  # fmt: skip

    # ------------------------------------------------------------------ start
    def start_elution(
        self,
        generator_id: str,
        *,
        by: str,
        elution_time: datetime | None = None,
        volume_ml: float | None = None,
        time_scale: float = 1.0,
    ) -> ElutionRun:
        """Start the guided measurement of a new eluate of `generator_id`.

        `time_scale` > 1 only for a simulated Ga-68 eluate that decays faster (as the QC
        desk's simulated linearity run): the identity fit scales the readings' times.
        """
        generator = self.generator(generator_id)
        if not by.strip():
            raise ElutionError(msg("error.name_needed"))
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ElutionError(msg("error.time_scale"))
        if volume_ml is not None and not (math.isfinite(volume_ml) and volume_ml > 0):
            raise ElutionError(msg("error.elution.volume"))
        now = self._now()
        when = now if elution_time is None else elution_time
        if when.tzinfo is None:
            raise ElutionError(msg("error.elution.time_zone"))
        if when > now + timedelta(minutes=1):
            raise ElutionError(msg("error.elution.future"))
        eluate = f"ELU-{generator.id}-{when.astimezone(UTC):%Y%m%d-%H%M%S}"
        run = ElutionRun(
            new_id(), "elution", generator.id, generator.nuclide, generator.calibrator,
            generator.channel, eluate, when, now, by.strip(), volume_ml, time_scale=time_scale,
        )  # fmt: skip
        if generator.nuclide == "Tc-99m":
            run.steps = [
                GuidedStep(1, (N_("Place the eluate in the calibrator; select the {setting} "
                                  "setting"), {"setting": "Tc-99m"}),
                           N_("Eluate placed — measure"), setting="Tc-99m", role="tc99m",
                           unit="MBq"),
                GuidedStep(2, (N_("Put the eluate in the Mo-99 canister {canister}; select "
                                  "the {setting} setting"),
                               {"canister": generator.canister or "", "setting": "Mo-99"}),
                           N_("Eluate in the canister — measure"), setting="Mo-99",
                           role="mo99", unit="MBq"),
            ]  # fmt: skip
        else:
            run.steps = [
                GuidedStep(1, (N_("Place the eluate in the calibrator; select the {setting} "
                                  "setting; IsoEdge measures its decay"), {"setting": "Ga-68"}),
                           N_("Eluate placed — measure"), kind="series", setting="Ga-68",
                           role="ga68", unit="MBq"),
            ]  # fmt: skip
        self._begin(run)
        return run

    def start_remeasurement(self, first: dict[str, Any], *, by: str) -> ElutionRun:
        """Start the Ge-68 remeasurement of a signed Ga-68 elution record."""
        if first.get("part") != "elution" or first.get("nuclide") != "Ga-68":
            raise ElutionError(msg("error.elution.ge68_follows"))
        if not by.strip():
            raise ElutionError(msg("error.name_needed"))
        generator = self.generator(str(first["generator_id"]))
        elution_time = datetime.fromisoformat(str(first["elution_time"]))
        now = self._now()
        due = elution_time + timedelta(hours=self.rules.ge68_wait_h)
        if now < due:
            raise ElutionError(msg("error.elution.too_early", due_at=rfc3339(due)))
        run = ElutionRun(
            new_id(), "ge68", generator.id, "Ga-68", generator.calibrator, generator.channel,
            str(first["eluate_id"]), elution_time, now, by.strip(), first.get("volume_ml"),
            first=first,
        )  # fmt: skip
        hours = f"{(now - elution_time).total_seconds() / 3600:.0f}"
        run.steps = [
            GuidedStep(1, (N_("Place the eluate {eluate} (eluted {hours} h ago) in the "
                              "calibrator; select the {setting} setting"),
                           {"eluate": run.eluate_id, "setting": "Ga-68", "hours": hours}),
                       N_("Eluate placed — measure"), setting="Ga-68", role="ge68", unit="MBq"),
        ]  # fmt: skip
        self._begin(run)
        return run

    def _begin(self, run: ElutionRun) -> None:
        run.steps[0].state = "active"
        with self._lock:
            current = self._active.get(run.device)
            if current is not None and self._runs[current].state == "running":
                raise ElutionError(msg("error.elution.busy", device=run.device))
            self._runs[run.id] = run
            self._active[run.device] = run.id
        log.info("elution started", device=run.device, run=run.id, part=run.part)
        self._changed()

    def confirm_step(self, run_id: str, index: int, *, by: str) -> ElutionRun:
        """The operator's go-ahead for the current step: it measures from now."""
        if not by.strip():
            raise ElutionError(msg("error.name_needed"))
        with self._lock:
            run = self.run(run_id)
            step = run.current
            if run.state != "running" or step is None or step.index != index:
                raise ElutionError(msg("error.step_not_current", index=index, run=run_id))
            if not step.waiting_for_operator:
                raise ElutionError(msg("error.step_confirmed", index=index, run=run_id))
            step.confirm_by(by.strip(), self._now())
        self._changed()
        return run

    def cancel(self, run_id: str, *, by: str, reason: str) -> ElutionRun:
        """Abandon a run that is not signed."""
        if not by.strip() or not reason.strip():
            raise ElutionError(msg("error.name_reason_needed"))
        with self._lock:
            run = self.run(run_id)
            if run.state in {"signed", "cancelled"}:
                raise ElutionError(msg("error.run_state", run=run_id, state=run.state))
            run.state = "cancelled"
            self._release(run)
        self._changed()
        return run

    def _release(self, run: ElutionRun) -> None:
        if self._active.get(run.device) == run.id:
            del self._active[run.device]

    # ------------------------------------------------------------------ readings
    def on_reading(self, reading: Reading) -> None:
        """A reading of any device: feeds the run on that calibrator."""
        run_id = self._active.get(reading.device)
        if run_id is None:
            return
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.state != "running" or reading.channel != run.channel:
                return
            value = activity_mbq(reading)
            if value is None or reading.quality is not Quality.GOOD:
                return
            step = run.current
            if step is None:
                return
            settle = Settle(
                self.rules.identity_points if step.kind == "series" else self.rules.settle_readings,
                self.rules.stability_pct, self.rules.stability_floor_mbq,
            )  # fmt: skip
            done = step.feed(value, reading.id, reading.t, normalize_nuclide(reading.nuclide),
                             settle=settle, interval_s=self.rules.identity_interval_s)  # fmt: skip
            if done and advance(run.steps):
                run.state = "measured"
                if not (run.nuclide == "Tc-99m" and run.part == "elution"):
                    self._complete(run)
            changed = done
        if changed:
            self._changed()

    # ------------------------------------------------------------------ judge
    def enter_aluminium(
        self,
        run_id: str,
        *,
        by: str,
        colour: SpotColour | None = None,
        concentration_ug_ml: float | None = None,
    ) -> ElutionRun:
        """The typed Al3+ spot test of a Tc-99m eluate; completes the run's draft."""
        if not by.strip():
            raise ElutionError(msg("error.name_needed"))
        with self._lock:
            run = self.run(run_id)
            if run.nuclide != "Tc-99m" or run.part != "elution":
                raise ElutionError(msg("error.elution.spot_tc99m"))
            if run.state not in {"measured", "completed"}:
                raise ElutionError(msg("error.elution.measure_first", run=run_id, state=run.state))
            try:
                run.aluminium = aluminium_check(
                    self.rules.aluminium_limit_ug_ml, colour=colour,
                    concentration_ug_ml=concentration_ug_ml,
                )  # fmt: skip
            except ValueError as exc:
                raise ElutionError(str(exc)) from None
            self._complete(run)
        self._changed()
        return run

    def _complete(self, run: ElutionRun) -> None:
        if run.part == "ge68":
            run.draft = self._ge68_draft(run)
        elif run.nuclide == "Tc-99m":
            run.draft = self._tc_draft(run)
        else:
            run.draft = self._ga_draft(run)
        run.state = "completed"

    def _common(self, run: ElutionRun) -> dict[str, Any]:
        return {
            "part": run.part,
            "generator_id": run.generator,
            "eluate_id": run.eluate_id,
            "nuclide": run.nuclide,
            "device": run.device,
            "elution_time": rfc3339(run.elution_time),
            "volume_ml": run.volume_ml,
            "performed_by": run.started_by,
        }

    def _since_previous(self, run: ElutionRun) -> float | None:
        last = self._last_elution.get(run.generator)
        if last is None or last >= run.elution_time:
            return None
        return (run.elution_time - last).total_seconds()

    def _tc_draft(self, run: ElutionRun) -> dict[str, Any]:
        generator = self.generator(run.generator)
        rules = self.rules
        tc, mo = run.steps[0], run.steps[1]
        assert tc.measured_at is not None  # noqa: S101 - a done step has its time
        assert mo.measured_at is not None  # noqa: S101
        canister = rules.canister(generator.canister or "")
        mo_reading_mbq = mo.measured or 0.0
        below_dl = mo_reading_mbq <= rules.detection_limit_mbq
        used_kbq = max(mo_reading_mbq, rules.detection_limit_mbq) * 1000.0
        result = mo99_breakthrough(
            tc99m_mbq=tc.measured or 0.0, tc99m_at=tc.measured_at,
            mo99_reading_kbq=used_kbq, mo99_at=mo.measured_at,
            canister_factor=canister.factor, limit=rules.mo_limit,
            reference_time=run.elution_time, table=self.nuclides,
        )  # fmt: skip
        shelf_end = run.elution_time + timedelta(hours=rules.shelf_life_h)
        use_by = None if result.use_by is None else min(result.use_by, shelf_end)
        parent = mo99_at(generator.reference_mbq, generator.reference_time, run.elution_time,
                         self.nuclides)  # fmt: skip
        available = tc99m_available_mbq(parent, self._since_previous(run), self.nuclides)
        reasons: list[str] = []
        if not result.passed:
            reasons.append("mo99_over_limit")
        al = run.aluminium
        if al is not None and not al.passed:
            reasons.append("aluminium_over_limit")
        age = tc.measured_at - canister_validated_at(canister.validated)
        if age.days > rules.canister_validity_days:
            reasons.append("canister_factor_validation_overdue")
        return {
            **self._common(run),
            "tc99m_mbq": round(result.tc99m_mbq, 6),
            "tc99m_measured_mbq": tc.measured,
            "tc99m_measured_at": rfc3339(tc.measured_at),
            "tc99m_readings": list(tc.readings),
            "mo99_reading_mbq": mo.measured,
            "mo99_measured_at": rfc3339(mo.measured_at),
            "mo99_readings": list(mo.readings),
            "mo99_below_detection_limit": below_dl,
            "detection_limit_mbq": rules.detection_limit_mbq,
            "canister": {"id": canister.id, "factor": canister.factor,
                         "validated": canister.validated.isoformat(), "basis": canister.basis},
            "mo99_kbq": round(result.mo99_kbq, 6),
            "mo99_ratio_kbq_per_mbq": result.ratio_kbq_per_mbq,
            "mo99_percent_of_total": result.percent_of_total,
            "mo99_limit": {"basis": result.limit.basis, "value": result.limit.value,
                           "ratio_kbq_per_mbq": result.limit.ratio_kbq_per_mbq,
                           "source": result.limit.source},
            "product": "Sodium pertechnetate (99mTc)",
            "use_by": None if use_by is None else rfc3339(use_by),
            "expiry": None if use_by is None else rfc3339(use_by),
            "use_by_limited_by": None if use_by is None else (
                "shelf_life" if use_by == shelf_end else "mo99"),
            "shelf_life_h": rules.shelf_life_h,
            "shelf_life_basis": rules.shelf_life_basis,
            "aluminium": None if al is None else {
                "limit_ug_ml": al.limit_ug_ml, "colour": al.colour,
                "concentration_ug_ml": al.concentration_ug_ml, "passed": al.passed,
                "basis": AL_SOURCES[self.rules.aluminium_limit]},
            "mo99_at_elution_mbq": round(parent, 3),
            "available_mbq": round(available, 3),
            "efficiency_pct": round(elution_efficiency_pct(result.tc99m_mbq, available), 3),
            "result": "fail" if reasons else "pass",
            "held": bool(reasons),
            "hold_reasons": reasons,
        }  # fmt: skip

    def _ga_draft(self, run: ElutionRun) -> dict[str, Any]:
        step = run.steps[0]
        t0 = step.series[0][0]
        scale = run.time_scale
        window = GA68_IDENTITY_WINDOW_S
        try:
            ident = ga68_identity(
                [(t - t0).total_seconds() * scale for t, _, _ in step.series],
                [v for _, v, _ in step.series],
            )
        except FitError:  # no decay to fit (e.g. readings that do not fall): not Ga-68
            ident = None
        passed = ident is not None and ident.passed
        half_life = None if ident is None else ident.fit.half_life_s
        unc = None if ident is None else ident.fit.uncertainty_s
        lam = self.nuclides["Ga-68"].decay_constant
        at_elution = (step.measured or 0.0) * math.exp(
            lam * (t0 - run.elution_time).total_seconds() * scale
        )
        due = run.elution_time + timedelta(hours=self.rules.ge68_wait_h)
        reasons = [] if passed else ["identity_half_life_outside_window"]
        return {
            **self._common(run),
            "product": "Gallium (68Ga) chloride",
            "ga68_mbq": round(at_elution, 6),
            "readings": list(step.readings),
            "half_life_min": None if half_life is None or math.isinf(half_life)
            else round(half_life / 60, 4),
            "half_life_uncertainty_min": None if unc is None or math.isinf(unc)
            else round(unc / 60, 4),
            "identity_window_min": [window[0] / 60, window[1] / 60],
            "identity_passed": passed,
            "identity_points": len(step.series),
            "ge68_due": rfc3339(due),
            "result": "fail" if reasons else "pass",
            "held": bool(reasons),
            "hold_reasons": reasons,
        }

    def _ge68_draft(self, run: ElutionRun) -> dict[str, Any]:
        first = run.first or {}
        step = run.steps[0]
        assert step.measured_at is not None  # noqa: S101
        result = ge68_breakthrough(
            ga68_at_elution_mbq=float(first["ga68_mbq"]), elution_time=run.elution_time,
            remeasured_mbq=step.measured or 0.0, remeasured_at=step.measured_at,
            detection_limit_mbq=self.rules.detection_limit_mbq,
            limit_pct=self.rules.ge68_limit_pct,
            min_wait_s=self.rules.ge68_wait_h * 3600, table=self.nuclides,
        )  # fmt: skip
        passed = result.passed
        return {
            **self._common(run),
            "elution_record": first.get("id"),
            "ga68_mbq": first.get("ga68_mbq"),
            "remeasured_mbq": step.measured,
            "remeasured_at": rfc3339(step.measured_at),
            "readings": list(step.readings),
            "elapsed_h": round(result.elapsed_s / 3600, 4),
            "detection_limit_mbq": result.detection_limit_mbq,
            "above_detection_limit": result.above_detection_limit,
            "ge68_percent": result.percent,
            "ge68_bound_percent": result.bound_pct,
            "ge68_limit_pct": result.limit_pct,
            "ge68_basis": self.rules.ge68_basis,
            "ge68_status": result.status.value,
            "result": "pass" if passed else ("fail" if passed is False else "inconclusive"),
            "held": passed is not True,
            "hold_reasons": [] if passed else [result.status.value],
        }

    # ------------------------------------------------------------------ sign
    async def sign(self, run_id: str, *, name: str, password: str) -> dict[str, Any]:
        """The performer signs the completed run (meaning `performed`): stored, published."""
        with self._lock:
            run = self.run(run_id)
            if run.state != "completed" or run.draft is None:
                raise ElutionError(msg("error.elution.nothing_to_sign", run=run_id,
                                       state=run.state))
            fields = dict(run.draft)
        draft = self.records.draft("elution", **fields)
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "performed")
        with self._lock:
            run.state, run.record_id = "signed", record["id"]
            self._release(run)
            if run.part == "elution":
                self._note_elution(run.generator, record["elution_time"])
        self._alert(record)
        self._changed()
        return record

    async def record_generator(
        self, generator_id: str, *, name: str, password: str, received: datetime | None = None
    ) -> dict[str, Any]:
        """The generator's receipt record (reference activity and time, supplier, lot)."""
        generator = self.generator(generator_id)
        when = received or generator.received or self._now()
        draft = self.records.draft(
            "elution", part="generator", subject=generator.id, generator_id=generator.id,
            nuclide=generator.nuclide,
            parent="Mo-99" if generator.nuclide == "Tc-99m" else "Ge-68",
            reference_mbq=generator.reference_mbq,
            reference_time=rfc3339(generator.reference_time), received=rfc3339(when),
            supplier=generator.supplier, lot=generator.lot, calibrator=generator.calibrator,
            canister=generator.canister,
        )  # fmt: skip
        record: dict[str, Any] = await self.records.signer.sign(draft, name, password, "performed")
        return record

    def _alert(self, record: dict[str, Any]) -> None:
        if self.alerts is None:
            return
        subject = str(record["eluate_id"])
        if record.get("held"):
            self.alerts.raise_alert(
                ALERT_RULE, str(record["device"]), None, "alarm",
                msg("records.eluate.held", eluate=subject,
                    reasons=[Message(str(r)) for r in record.get("hold_reasons") or []]),
                subject=subject, details={"record": record["id"]},
            )  # fmt: skip

    # ------------------------------------------------------------------ state
    async def history(self, generator_id: str | None = None) -> list[dict[str, Any]]:
        """Signed elution records (newest first), of one generator or all."""
        records = await self.records.listing("elution", limit=100_000)
        return [r for r in records
                if generator_id is None or r.get("generator_id") == generator_id]  # fmt: skip

    async def eluate_state(self, eluate_id: str, at: datetime | None = None) -> dict[str, Any]:
        """Whether an eluate may be used: `usable`, `held` (and why), `expired`, `unknown`."""
        when = at or self._now()
        records = await self.records.listing("elution", subject=eluate_id)
        if not records:
            return {"eluate_id": eluate_id, "state": "unknown", "reasons": []}
        reasons = sorted({r for rec in records for r in rec.get("hold_reasons") or []})
        if any(rec.get("held") for rec in records):
            return {"eluate_id": eluate_id, "state": "held", "reasons": reasons}
        elution = next((r for r in records if r.get("part") == "elution"), None)
        use_by = None if elution is None else elution.get("use_by")
        if isinstance(use_by, str) and datetime.fromisoformat(use_by) < when:
            return {"eluate_id": eluate_id, "state": "expired", "reasons": [], "use_by": use_by}
        return {"eluate_id": eluate_id, "state": "usable", "reasons": [], "use_by": use_by}

    async def reminders(self, at: datetime | None = None) -> list[dict[str, Any]]:
        """Ga-68 eluates whose Ge-68 remeasurement is due or coming (no ge68 record yet)."""
        when = at or self._now()
        records = await self.records.listing("elution", limit=100_000)
        done = {r.get("eluate_id") for r in records if r.get("part") == "ge68"}
        due = []
        for record in records:
            if record.get("part") != "elution" or record.get("nuclide") != "Ga-68":
                continue
            if record.get("eluate_id") in done or not isinstance(record.get("ge68_due"), str):
                continue
            at_due = datetime.fromisoformat(record["ge68_due"])
            due.append({"eluate_id": record["eluate_id"], "record": record["id"],
                        "generator_id": record.get("generator_id"), "due": record["ge68_due"],
                        "is_due": at_due <= when})  # fmt: skip
        return sorted(due, key=lambda d: d["due"])


def canister_validated_at(day: Any) -> datetime:
    """The validation date as an aware datetime at 00:00 UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


__all__ = ["ALERT_RULE", "ElutionDesk", "ElutionError", "ElutionRun", "GuidedStep"]
