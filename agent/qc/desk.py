"""The QA desk: guided QC test runs, signed records, release state per calibrator.

`QADesk` is what the console and the demo call (the agent's `qa_desk`). It is made of the
shared parts every record kind uses: guided runs (`agent.qc.guided`), the release computation
(`agent.qc.release`, a pure function to a typed state) and the one signed-action service
(`agent.qc.signed_records.SignedActions`). A technologist starts a test on a
calibrator (`start_test`); the run lists its steps (place the source, select the setting);
each step completes on the calibrator's own settled readings (never typed in), giving the
measured activity, the expected activity with its uncertainty (decay table, certificate),
the deviation and the result. A completed run is a draft until its performer signs it with
their password (`sign_run`): then it is a QC record (CONTRACT §5), stored append-only and
published on the signed `qc` stream. A review or approval (`review`) is a new record naming
the first. Linearity by the decay method runs unattended (`start_test(..., "linearity")`):
the sample's readings are recognised as it decays, then fitted.

Release: a calibrator is `released` only when today's daily tests passed and are signed; a
test at action level (`hold_on_action`) or failed, or overdue, holds it (`on_hold`, with the
reason and since when). A result that is not a pass holds it at once, signed or not. Hold
and release are alerts (`qc.release`), and every activity reading of a held calibrator is
flagged (`calibrator_release: on_hold`); a dosage dispensed on it raises a critical alert.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.i18n import N_
from agent.core.messages import Message, msg
from agent.core.reading import new_id, rfc3339
from agent.physics.correction import decay_correct
from agent.physics.halflife import FitError
from agent.physics.nuclides import normalize_nuclide
from agent.qc.errors import QCError
from agent.qc.guided import (
    Step,
    TestRun,
    advance,
    make_step,
    offer,
    overall_result,
    settle,
    worst_step,
)
from agent.qc.linearity import analyse_decay
from agent.qc.records import canonical_json, content_hash
from agent.qc.release import ReleaseState, TestHistory, compute_release
from agent.qc.rules import activity_mbq
from agent.qc.signed_records import Meaning, SignedActions, Signer, performers

if TYPE_CHECKING:
    from agent.core.reading import Reading
    from agent.physics.nuclides import NuclideTable
    from agent.qc.alerts import AlertManager
    from agent.qc.audit import AuditLog
    from agent.qc.programme import CalibratorProgramme, QCSection, QCSource
    from agent.qc.records import QCRecordStore
    from agent.qc.signatures import SignatureService

log = structlog.get_logger("isoedge.qc.desk")

_SERIES_JUMP = 0.25  # linearity: a reading this far off the decay is not the sample


def _now() -> datetime:
    return datetime.now(UTC)


class QADesk:
    """QC test runs, records, signatures and release state of every configured calibrator."""

    def __init__(  # noqa: PLR0917 - the collaborators of the QA desk
        self,
        config: QCSection,
        nuclides: NuclideTable,
        store: QCRecordStore,
        signatures: SignatureService,
        alerts: AlertManager,
        audit: AuditLog,
        *,
        now: Callable[[], datetime] = _now,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.nuclides = nuclides
        self.store = store
        self.signatures = signatures
        self.alerts = alerts
        self.audit = audit
        self.actions = SignedActions(signatures, audit)
        self._now = now
        self.on_change = on_change
        self._lock = threading.RLock()
        self._programmes = {c.device: c for c in config.calibrators}
        self._runs: dict[str, TestRun] = {}
        self._active: dict[str, str] = {}  # device -> guided run id
        self._linearity: dict[str, str] = {}  # device -> linearity run id
        self._latest: dict[str, dict[str, TestHistory]] = {}
        self._repairs: dict[str, datetime] = {}
        self._state: dict[str, ReleaseState] = {}
        self._held: set[str] = set()
        # (device, prescription) -> a signed override of the hold for that one dose
        self._overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self._opened = False

    async def open(self) -> None:
        """Load the QC history from the state database and compute the release states.

        Call after the alert manager is open (a hold is an alert, deduplicated across
        restarts); until then no calibrator is reported.
        """
        await self.store.open()
        for record in await self.store.query(kind="test"):
            key = (record["device"], record["test"])
            latest = self._latest.setdefault(key[0], {}).setdefault(key[1], TestHistory())
            t = datetime.fromisoformat(record["t"])
            latest.result = (t, record["result"],
                             msg("qc.run.short", test=record["test"], result=record["result"]))
            if record["result"] == "pass":
                latest.last_pass = t
        for item in await self.audit.query(action="qc.repair", limit=100_000):
            t = datetime.fromisoformat(item["t"])
            self._repairs[item["subject"]] = max(t, self._repairs.get(item["subject"], t))
        self._opened = True
        self.refresh(notify=False)

    # ------------------------------------------------------------------ queries
    @property
    def devices(self) -> list[str]:
        """Calibrators with a QC programme."""
        return list(self._programmes)

    def programme(self, device: str) -> CalibratorProgramme:
        """The QC programme of `device`; QCError if it has none."""
        try:
            return self._programmes[device]
        except KeyError:
            raise QCError(msg("error.qc.no_programme", device=device,
                              configured=", ".join(sorted(self._programmes)))) from None

    def expected_activity(
        self, device: str, source_id: str, at: datetime | None = None, ratio: float = 1.0
    ) -> tuple[float, float | None]:
        """The source's decay-corrected activity at `at` (MBq) x `ratio`, with its uncertainty.

        The uncertainty combines the certificate's (`uncertainty_pct`, k=1) and the
        half-life's (table) in quadrature; None when neither is known.
        """
        source = self.programme(device).source(source_id)
        return self._expected(source, at or self._now(), ratio)

    def _expected(
        self, source: QCSource, at: datetime, ratio: float
    ) -> tuple[float, float | None]:
        data = self.nuclides[source.nuclide]
        elapsed = (at - source.reference_date).total_seconds()
        u_in = None
        if source.uncertainty_pct is not None:
            u_in = source.activity_mbq * source.uncertainty_pct / 100.0
        value, unc = decay_correct(
            source.activity_mbq, elapsed, data.half_life_s, data.uncertainty_s, u_in
        )
        u = None if unc is None else float(unc) * ratio
        return float(value) * ratio, u

    def run(self, run_id: str) -> TestRun:
        """A run by id; QCError if unknown."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise QCError(msg("error.qc.no_run", run=run_id)) from None

    def runs(self, device: str | None = None) -> list[TestRun]:
        """Runs of this agent's lifetime (drafts are not kept across restarts), newest first."""
        with self._lock:
            runs = [r for r in self._runs.values() if device is None or r.device == device]
        return sorted(runs, key=lambda r: r.started, reverse=True)

    def active_run(self, device: str) -> TestRun | None:
        """The guided run in progress on `device`, if any."""
        run_id = self._active.get(device)
        return None if run_id is None else self._runs.get(run_id)

    async def records(
        self,
        device: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        test: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored QC records (tests and reviews), oldest first."""
        return await self.store.query(device=device, since=since, until=until, test=test)

    async def reviews_of(self, record_id: str) -> list[dict[str, Any]]:
        """The review and approval records naming a record."""
        return await self.store.reviews_of(record_id)

    def release(self, device: str) -> dict[str, Any]:
        """`{"release", "reason", "since", "due": {test: time}}` of one calibrator."""
        self.programme(device)
        with self._lock:
            return self._state[device].as_status()

    def calibrators_status(self) -> dict[str, dict[str, Any]]:
        """The `calibrators` object of the retained status (CONTRACT §5)."""
        with self._lock:
            return {device: state.as_status() for device, state in self._state.items()}

    def watches(self, device: str, channel: str) -> bool:
        """True for the activity channel of a calibrator with a programme (cheap: per item)."""
        programme = self._programmes.get(device)
        return programme is not None and programme.channel == channel

    def is_held(self, device: str) -> bool:
        """True when `device` is a calibrator on hold (cheap: per reading)."""
        return device in self._held

    # ------------------------------------------------------------------ runs
    def start_test(
        self, device: str, test: str, *, by: str, time_scale: float = 1.0
    ) -> TestRun:
        """Start a test on `device`: its steps are listed; readings complete them.

        `time_scale` > 1 only for a simulated linearity run whose sample decays faster.
        One guided test per calibrator at a time; a linearity run may run beside it.
        """
        programme = self.programme(device)
        spec = programme.test(test)
        if spec is None:
            raise QCError(msg("error.qc.not_in_programme", device=device, test=test))
        if not by.strip():
            raise QCError(msg("error.name_needed"))
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise QCError(msg("error.time_scale"))
        now = self._now()
        run = TestRun(new_id(), device, test, now, by.strip(), time_scale=time_scale)
        run.steps = self._steps(programme, test, now)
        if run.steps:
            run.steps[0].state = "active"
        # Audit first: the record is made (its texts checked) before the run exists.
        staged = self.audit.stage(
            "qc.test.started", actor=run.started_by, subject=f"{device}/{test}", run=run.id,
            steps=[s.instruction for s in run.steps],
        )  # fmt: skip
        with self._lock:
            busy = self._linearity if test == "linearity" else self._active
            current = busy.get(device)
            if current is not None and self._runs[current].state == "running":
                raise QCError(msg("error.qc.running", device=device,
                                         test=self._runs[current].test))
            self._runs[run.id] = run
            busy[device] = run.id
            self.audit.commit(staged)
        return run

    def _steps(self, programme: CalibratorProgramme, test: str, now: datetime) -> list[Step]:
        steps: list[Step] = []
        if test == "background":
            steps.append(make_step(1, N_("Empty the chamber (no source, no sample); wait"), {},
                               "background", confirm=N_("Chamber empty — measure")))
        elif test == "constancy" and programme.constancy is not None:
            source = programme.source(programme.constancy.source)
            for i, setting in enumerate(programme.constancy.settings, start=1):
                text = (N_("Place check source {source} ({nuclide}); select the {setting} setting")
                        if i == 1 else N_("select the {setting} setting"))
                expected, u = self._expected(source, now, setting.ratio)
                steps.append(
                    make_step(
                        i, text, {"source": source.id, "nuclide": source.nuclide,
                                  "setting": setting.nuclide}, "source",
                        setting=setting.nuclide, source=source.id, ratio=setting.ratio,
                        expected_mbq=expected, uncertainty_mbq=u,
                        confirm=(N_("Source placed — measure") if i == 1
                                 else N_("Setting selected — measure")),
                    )
                )  # fmt: skip
        elif test == "accuracy" and programme.accuracy is not None:
            for i, source_id in enumerate(programme.accuracy.sources, start=1):
                source = programme.source(source_id)
                expected, u = self._expected(source, now, 1.0)
                steps.append(
                    make_step(
                        i, N_("Place certified source {source} ({nuclide}); select the {setting} "
                              "setting"), {"source": source.id, "nuclide": source.nuclide,
                                           "setting": source.nuclide},
                        "source", setting=source.nuclide,
                        source=source.id, expected_mbq=expected, uncertainty_mbq=u,
                        requires_removal=i > 1,
                    )
                )  # fmt: skip
        elif test == "geometry" and programme.geometry is not None:
            geo = programme.geometry
            ordered = sorted(geo.containers, key=lambda c: not c.reference)
            for i, container in enumerate(ordered, start=1):
                text = (N_("Measure the {nuclide} sample in the {container} (reference) on the "
                           "{setting} setting") if container.reference else
                        N_("Measure the {nuclide} sample in the {container} on the {setting} "
                           "setting"))
                steps.append(
                    make_step(
                        i, text, {"nuclide": geo.nuclide, "container": container.name,
                                  "setting": geo.nuclide}, "sample", setting=geo.nuclide,
                        container=container.name, requires_removal=i > 1,
                    )
                )  # fmt: skip
        elif test == "linearity" and programme.linearity is not None:
            lin = programme.linearity
            steps.append(
                make_step(
                    1, N_("Place a high-activity {nuclide} sample (top of the range in use) on "
                          "the {setting} setting; IsoEdge measures it as it decays over {hours} h "
                          "(you may take it out and put it back)"),
                    {"nuclide": lin.nuclide, "setting": lin.nuclide,
                     "hours": f"{lin.duration_h:g}"}, "series", setting=lin.nuclide,
                )
            )  # fmt: skip
        return steps

    def cancel_run(self, run_id: str, *, by: str, reason: str) -> TestRun:
        """Abandon a run (recorded with who and why)."""
        if not by.strip() or not reason.strip():
            raise QCError(msg("error.name_reason_needed"))
        with self._lock:
            run = self.run(run_id)
            if run.state in {"signed", "cancelled"}:
                raise QCError(msg("error.run_state", run=run_id, state=run.state))
            staged = self.audit.stage(
                "qc.test.cancelled", actor=by, subject=f"{run.device}/{run.test}",
                reason=reason, run=run.id,
            )  # fmt: skip
            run.state = "cancelled"
            self._release_slot(run)
            self.audit.commit(staged)
        self.refresh()
        return run

    def confirm_step(self, run_id: str, index: int, *, by: str) -> TestRun:
        """The operator's go-ahead for the run's current step (audited): it measures from now."""
        if not by.strip():
            raise QCError(msg("error.name_needed"))
        with self._lock:
            run = self.run(run_id)
            step = run.current
            if run.state != "running" or step is None or step.index != index:
                raise QCError(msg("error.step_not_current", index=index, run=run_id))
            if not step.waiting_for_operator:
                raise QCError(msg("error.step_not_waiting", index=index, run=run_id))
            staged = self.audit.stage(
                "qc.step.confirmed", actor=by.strip(), subject=f"{run.device}/{run.test}",
                run=run.id, step=index, confirmed=step.confirm,
            )  # fmt: skip
            step.confirmed(by.strip(), self._now())
            self.audit.commit(staged)
        return run

    def _release_slot(self, run: TestRun) -> None:
        slots = self._linearity if run.test == "linearity" else self._active
        if slots.get(run.device) == run.id:
            del slots[run.device]

    def finish_linearity(self, run_id: str) -> TestRun:
        """Analyse a linearity run now with the points it has (QCError if too few)."""
        with self._lock:
            run = self.run(run_id)
            if run.test != "linearity" or run.state != "running":
                raise QCError(msg("error.qc.not_linearity", run=run_id))
            self._complete_linearity(run)
        # Audited and alerted as a run that completed by itself (it was not, before).
        self._after_completion(run)
        return run

    # ------------------------------------------------------------------ readings
    def on_reading(self, reading: Reading) -> None:
        """A reading of any device: feeds the runs of a calibrator."""
        if reading.device not in self._programmes:
            return
        programme = self._programmes[reading.device]
        if reading.channel != programme.channel:
            return
        value = activity_mbq(reading)
        if value is None:
            return
        completed: list[TestRun] = []
        with self._lock:
            lin_id = self._linearity.get(reading.device)
            if lin_id is not None:
                run = self._runs[lin_id]
                if run.state == "running" and self._feed_series(run, programme, reading, value):
                    completed.append(run)
            run_id = self._active.get(reading.device)
            if run_id is not None:
                run = self._runs[run_id]
                if run.state == "running" and self._feed_step(run, programme, reading, value):
                    completed.append(run)
        for run in completed:
            self._after_completion(run)

    def _feed_step(
        self, run: TestRun, programme: CalibratorProgramme, reading: Reading, value: float
    ) -> bool:
        """Feed the current step; True when this reading completed the run."""
        step = run.current
        if step is None or not offer(run, step, reading, value):
            return False
        floor = 0.0
        if step.kind == "background":
            floor = programme.background.max_mbq if programme.background else 0.1
        if not settle(step, programme.settle_readings, programme.stability_pct, floor, reading.t):
            return False
        self._judge_step(run, programme, step)
        if not advance(run):
            return False
        self._complete_guided(run, programme)
        return True

    def _judge_step(self, run: TestRun, programme: CalibratorProgramme, step: Step) -> None:
        measured = step.measured_mbq or 0.0
        if step.kind == "background":
            bg = programme.background
            limit = bg.max_mbq if bg else 0.1
            step.result = "pass" if abs(measured) <= limit else "fail"
            return
        if step.kind == "sample":
            reference = run.steps[0]
            if step is reference:
                step.expected_mbq, step.deviation_pct, step.result = measured, 0.0, "pass"
                return
            half_life = self.nuclides.half_life_s(step.setting or "Tc-99m")
            elapsed = ((step.measured_at or run.started) - (reference.measured_at or run.started))
            decayed = (reference.measured_mbq or 0.0) * math.exp(
                -math.log(2) * elapsed.total_seconds() / half_life
            )
            step.expected_mbq = decayed
        expected = step.expected_mbq or math.nan
        step.deviation_pct = (measured - expected) / expected * 100.0
        tolerance = self._tolerance(programme, run.test)
        step.result = tolerance.judge(step.deviation_pct)

    @staticmethod
    def _tolerance(programme: CalibratorProgramme, test: str) -> Any:
        spec = programme.test(test)
        return getattr(spec, "tolerance", None)

    def _complete_guided(self, run: TestRun, programme: CalibratorProgramme) -> None:
        now = self._now()
        run.state, run.completed = "completed", now
        run.result = overall_result(run.steps)
        worst = worst_step(run.steps)
        run.draft = self._draft(run, programme, worst)
        run.summary = self._summary(run, worst)
        self._active.pop(run.device, None)

    def _feed_series(  # noqa: PLR0911 - each way a reading is not (yet) a point
        self, run: TestRun, programme: CalibratorProgramme, reading: Reading, value: float
    ) -> bool:
        lin = programme.linearity
        if lin is None or normalize_nuclide(reading.nuclide) != lin.nuclide:
            return False
        step = run.steps[0]
        step.seen_setting, step.seen_mbq = lin.nuclide, value
        if value < lin.min_activity_mbq:
            if len(run.series) >= lin.min_points:
                self._complete_linearity(run)
                return True
            return False
        scale = run.time_scale
        if run.series:
            t0 = run.series[0][0]
            last_t, last_a, _ = run.series[-1]
            dt = (reading.t - last_t).total_seconds() * scale
            half_life = self.nuclides.half_life_s(lin.nuclide)
            predicted = last_a * math.exp(-math.log(2) * dt / half_life)
            if abs(value / predicted - 1) > _SERIES_JUMP:
                return False  # another sample, or the sample half out: not this series
            if dt < lin.interval_s:
                return False
            run.series.append((reading.t, value, reading.id))
            if (reading.t - t0).total_seconds() * scale >= lin.duration_h * 3600:
                self._complete_linearity(run)
                return True
            return False
        run.series.append((reading.t, value, reading.id))
        return False

    def _complete_linearity(self, run: TestRun) -> None:
        programme = self.programme(run.device)
        lin = programme.linearity
        if lin is None:
            raise QCError(msg("error.qc.no_linearity"))
        if len(run.series) < lin.min_points:
            raise QCError(msg("error.qc.few_points", points=len(run.series),
                                      needed=lin.min_points))
        table = self.nuclides[lin.nuclide].half_life_s
        try:
            result = analyse_decay(
                lin.nuclide, [p[0] for p in run.series], [p[1] for p in run.series], table,
                lin.tolerance, lin.half_life_pct, [p[2] for p in run.series], run.time_scale,
            )  # fmt: skip
        except FitError as exc:
            raise QCError(msg("error.qc.fit_failed", detail=str(exc))) from exc
        run.linearity = result
        step = run.steps[0]
        worst = result.worst
        step.state, step.result = "done", result.result
        step.measured_mbq, step.expected_mbq = worst.measured_mbq, worst.fit_mbq
        step.deviation_pct, step.measured_at = worst.deviation_pct, worst.t
        step.readings = [p[2] for p in run.series]
        run.state, run.completed, run.result = "completed", self._now(), result.result
        run.summary = result.summary_message()
        run.draft = self._draft(run, programme, step)
        self._linearity.pop(run.device, None)

    def _after_completion(self, run: TestRun) -> None:
        """Audit, alert and release after a run completed (outside the lock)."""
        self.audit.record(
            "qc.test.completed", actor="isoedge.qc", subject=f"{run.device}/{run.test}",
            new={"result": run.result}, reason=run.summary.code,
            reason_params=run.summary.params, run=run.id,
        )  # fmt: skip
        assert run.completed is not None  # noqa: S101 - set by the completion
        latest = self._latest.setdefault(run.device, {}).setdefault(run.test, TestHistory())
        latest.result = (run.completed, run.result or "fail", run.summary)
        rule = f"qc.{run.test}"
        if run.result == "pass":
            pass  # cleared when the record is signed
        else:
            severity = "critical" if run.result == "fail" else "alarm"
            self.alerts.raise_alert(
                rule, run.device, None, severity, run.summary,
                (run.draft or {}).get("deviation_pct"), update=True,
                details={"run": run.id, "test": run.test, "result": run.result},
            )  # fmt: skip
        log.info("QC test completed", device=run.device, test=run.test, result=run.result)
        self.refresh()

    # ------------------------------------------------------------------ records
    def _draft(self, run: TestRun, programme: CalibratorProgramme, step: Step) -> dict[str, Any]:
        completed = run.completed or self._now()
        zone = self.config.zone
        source = None
        if step.source is not None:
            source = programme.source(step.source).as_record()
        tolerance: dict[str, Any]
        if run.test == "background" and programme.background is not None:
            tolerance = {
                "action_pct": None, "fail_pct": None, "basis": programme.background.basis,
                "max_mbq": programme.background.max_mbq,
            }  # fmt: skip
        else:
            tolerance = self._tolerance(programme, run.test).as_record()
        record: dict[str, Any] = {
            "kind": "test",  # CONTRACT §7: every qc item names its kind
            "id": new_id(),
            "record": "test",
            "device": run.device,
            "test": run.test,
            "t": rfc3339(completed),
            "t_local": completed.astimezone(zone).isoformat(timespec="seconds"),
            "timezone": self.config.timezone,
            "run": run.id,
            "started": rfc3339(run.started),
            "source": source,
            "expected": {
                "mbq": step.expected_mbq if step.kind != "background" else 0.0,
                "uncertainty_mbq": step.uncertainty_mbq,
            },
            "measured": {"mbq": step.measured_mbq, "readings": list(step.readings)},
            "deviation_pct": None if step.deviation_pct is None else round(step.deviation_pct, 4),
            "tolerance": tolerance,
            "result": run.result,
            "steps": [s.as_dict() for s in run.steps],
        }
        if run.linearity is not None:
            record["linearity"] = run.linearity.as_dict()
            if run.time_scale != 1.0:
                record["linearity"]["time_scale"] = run.time_scale
        if run.test == "geometry":
            record["correction_factors"] = {
                s.container: (s.expected_mbq or 0.0) / s.measured_mbq
                for s in run.steps
                if s.measured_mbq
            }
        return record

    @staticmethod
    def _summary(run: TestRun, worst: Step) -> Message:
        if run.test == "background":
            return msg("qc.run.background", result=run.result,
                       measured=None if worst.measured_mbq is None
                       else round(worst.measured_mbq, 3))
        parts = [
            msg("qc.run.step",
                setting=f"{s.setting or ''}{'/' + s.container if s.container else ''}",
                measured=round(s.measured_mbq, 3), expected=round(s.expected_mbq, 3),
                deviation=round(s.deviation_pct, 2), result=s.result)
            for s in run.steps
            if s.measured_mbq is not None and s.expected_mbq is not None
            and s.deviation_pct is not None
        ]
        return msg("qc.run", test=run.test, result=run.result, steps=parts)

    async def sign_run(
        self, run_id: str, name: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """The performer signs a completed run: it becomes a stored, published QC record.

        The password is checked in a worker thread (scrypt); the record, its `qc` stream item
        and the audit record of the signature are committed in one transaction before this
        returns. Raises SignatureError (wrong password, role not allowed: refused and
        audited) or QCError.
        """
        draft = self._signable(run_id)
        if comment.strip():
            # The performer's comment (why a test failed, what was done) is signed content.
            draft = {**draft, "comment": comment.strip()}
        return await self._commit_run(run_id, draft, Signer(name, password))

    def _signable(self, run_id: str) -> dict[str, Any]:
        run = self.run(run_id)
        if run.state != "completed" or run.draft is None:
            raise QCError(msg("error.qc.sign_not_completed", run=run_id, state=run.state))
        return run.draft

    async def _commit_run(
        self, run_id: str, draft: dict[str, Any], signer: Signer
    ) -> dict[str, Any]:
        with self._lock:
            run = self.run(run_id)
            if run.state != "completed":
                raise QCError(msg("error.run_state", run=run_id, state=run.state))
            run.state = "signing"
        try:
            record = await self.actions.sign(
                draft, signer, Meaning.PERFORMED, store=self.store, kind="test",
                details={"device": draft["device"], "test": draft["test"]},
            )  # fmt: skip
        except Exception:
            run.state = "completed"
            raise
        run.state, run.record_id = "signed", record["id"]
        latest = self._latest.setdefault(run.device, {}).setdefault(run.test, TestHistory())
        t = datetime.fromisoformat(record["t"])
        latest.result = (t, record["result"], run.summary)
        if record["result"] == "pass":
            latest.last_pass = t
            self.alerts.clear_alert(f"qc.{run.test}", run.device, None, run.summary)
        self.refresh()
        return record

    async def review(
        self, record_id: str, name: str, password: str, meaning: str = "reviewed",
        comment: str = "",
    ) -> dict[str, Any]:  # fmt: skip
        """Review or approve a record: a new signed record naming the first (id and hash).

        Segregation of duties: whoever performed the record may neither review nor approve it;
        a record is approved once; only test records are reviewed (not reviews). Reviews are
        made one at a time, so two approvals cannot race past the check. The password is
        checked in a worker thread.
        """
        async with self.actions.serial(f"qc/{record_id}"):
            review, forbid = await self._review_draft(record_id, meaning, comment)
            return await self.actions.sign(
                review, Signer(name, password), meaning, store=self.store, kind="review",
                forbid=forbid, details={"device": review["device"], "test": review["test"]},
            )  # fmt: skip

    async def _review_draft(
        self, record_id: str, meaning: str, comment: str
    ) -> tuple[dict[str, Any], list[str]]:
        if meaning not in {"reviewed", "approved"}:
            raise QCError(msg("error.qc.review_meaning"))
        try:
            first = await self.store.get(record_id)
        except KeyError:
            raise QCError(msg("error.qc.no_record", record=record_id)) from None
        if first.get("record", "test") != "test":
            raise QCError(msg("error.qc.not_test_record", record=record_id,
                              kind=str(first.get("record"))))  # fmt: skip
        if meaning == "approved":
            for other in await self.store.reviews_of(record_id):
                if other.get("meaning") == "approved":
                    by = ", ".join(str(s.get("name")) for s in other.get("signatures", []))
                    raise QCError(msg("error.qc.approved_already", record=record_id, who=by))
        now = self._now()
        review: dict[str, Any] = {
            "kind": "test",
            "id": new_id(),
            "record": "review",
            "device": first["device"],
            "test": first["test"],
            "t": rfc3339(now),
            "t_local": now.astimezone(self.config.zone).isoformat(timespec="seconds"),
            "timezone": self.config.timezone,
            "reviews": {"id": first["id"], "record_sha256": content_hash(first)},
            "result": first.get("result"),
            "meaning": meaning,
            "comment": comment,
        }
        return review, performers(first)

    async def acknowledge_alert(
        self, alert_id: str, name: str, password: str, reason: str
    ) -> Any:
        """Acknowledge an alert as an electronic signature: the password is asked again.

        Roles: `[qc.signing] acknowledge_alert`; the password is checked in a worker thread.
        Returns the acknowledged `Alert`.
        """
        user = await self.actions.authenticate(
            Signer(name, password), "acknowledge_alert", f"alert/{alert_id}"
        )
        return await self.alerts.acknowledge(alert_id, user.full_name or user.name, reason)

    async def shelve_alert(
        self, alert_id: str, name: str, password: str, reason: str, minutes: float
    ) -> Any:
        """Shelve a flapping alarm for `minutes`, signed like an acknowledgement."""
        user = await self.actions.authenticate(
            Signer(name, password), "acknowledge_alert", f"alert/{alert_id}"
        )
        return await self.alerts.shelve(alert_id, user.full_name or user.name, reason, minutes)

    async def acknowledge_alerts(
        self, alert_ids: list[str], name: str, password: str, reason: str
    ) -> tuple[list[Any], dict[str, str]]:
        """Acknowledge a selection of alerts with one reason and one signature.

        The password is checked once; each alert is then acknowledged on its own (its state and
        its audit record in one transaction), the reason naming the selection. Returns the
        acknowledged alerts and, per alert that could not be, why (unknown, already done).
        """
        user = await self.actions.authenticate(
            Signer(name, password), "acknowledge_alert", f"alerts/{len(alert_ids)}"
        )
        signer = user.full_name or user.name
        note = f"{reason} (one acknowledgement of {len(alert_ids)} alerts)"
        done: list[Any] = []
        refused: dict[str, str] = {}
        for alert_id in alert_ids:
            try:
                done.append(await self.alerts.acknowledge(alert_id, signer, note))
            except (KeyError, ValueError) as exc:
                refused[alert_id] = str(exc)
        return done, refused

    async def review_audit(
        self, since: datetime, until: datetime, name: str, password: str, comment: str = ""
    ) -> dict[str, Any]:
        """Sign a review of the audit trail from `since` to `until` (PIC/S PI 041).

        The signature is bound to the SHA-256 of the reviewed entries (their canonical JSON),
        and the review is itself an audit-trail entry (`audit.reviewed`).
        """
        items = await self.audit.query(since=since, until=until, limit=1_000_000)
        content = {
            "id": new_id(),
            "reviewed": {"from": rfc3339(since), "to": rfc3339(until), "entries": len(items),
                         "entries_sha256": hashlib.sha256(canonical_json(items)).hexdigest()},
            "comment": comment,
        }  # fmt: skip
        signature = await self.actions.signature(
            content, Signer(name, password), Meaning.REVIEWED, action="review_audit",
            subject="audit-trail",
        )
        return await self.audit.record_durably(
            "audit.reviewed", signature["user"], "audit-trail", new=content["reviewed"],
            reason=comment or None, signatures=[signature], review_id=content["id"],
        )  # fmt: skip

    def record_repair(self, device: str, *, by: str, reason: str) -> None:
        """The calibrator was repaired: tests scheduled `after_repair` are due now."""
        self.programme(device)
        if not by.strip() or not reason.strip():
            raise QCError(msg("error.name_reason_needed"))
        staged = self.audit.stage("qc.repair", actor=by, subject=device, reason=reason)
        self._repairs[device] = self._now()
        self.audit.commit(staged)
        self.refresh()

    # ------------------------------------------------------------------ release
    def tick(self) -> None:
        """About once a second: day rollover and due dates change the release state."""
        self.refresh()

    def refresh(self, *, notify: bool = True) -> None:
        """Recompute every calibrator's release state; alert and notify on a change."""
        if not self._opened:
            return
        now = self._now()
        changed: list[tuple[str, ReleaseState | None, ReleaseState]] = []
        with self._lock:
            for device, programme in self._programmes.items():
                state = compute_release(
                    programme, self._latest.get(device, {}), self._repairs.get(device), now,
                    self.config.zone, self.config.hold_on_action,
                )  # fmt: skip
                old = self._state.get(device)
                if old is None or old.release is not state.release or (
                    old.reason != state.reason or old.due != state.due
                ):
                    changed.append((device, old, state))
                self._state[device] = state
                if state.held:
                    self._held.add(device)
                else:
                    self._held.discard(device)
        for device, old, state in changed:
            self._announce(device, old, state)
        if changed and notify and self.on_change is not None:
            self.on_change()

    def _announce(self, device: str, old: ReleaseState | None, state: ReleaseState) -> None:
        """Alert and audit a calibrator's changed release state."""
        if state.held and state.same_announcement(old):
            return  # only a due date moved
        if state.held:
            self.alerts.raise_alert(
                "qc.release", device, None, "alarm" if state.failed else "warning",
                msg("qc.release.on_hold", device=device, reason=_reasons(state.reasons)),
                details={"since": rfc3339(state.since)}, update=old is not None,
            )  # fmt: skip
        elif old is not None or self.alerts.active_alert("qc.release", device, None):
            self.alerts.clear_alert("qc.release", device, None,
                                    msg("qc.release.released", device=device))
        if old is not None:
            self.audit.record(
                "qc.release.changed", actor="isoedge.qc", subject=device,
                old=old.release.value, new=state.release.value, reason="qc.release.why",
                reason_params={"reasons": [m.as_data() for m in _reasons(state.reasons)]},
            )  # fmt: skip

    # ------------------------------------------------------------------ dosage
    async def override_hold(self, device: str, prescription_id: str, name: str, password: str,
                            reason: str) -> dict[str, Any]:  # fmt: skip
        """A signed override (`[qc] held_override`): one dose measured on held `device`.

        Signed with the password at the moment (meaning `performed`) and audited durably
        (`dosage.held_override`, the hold's reasons beside the person's) before it takes effect;
        the dispensing record of that dose carries it. Raises QCError when the site does not
        allow overrides, the calibrator is not held or no reason is given; SignatureError.
        """
        state = self.release(device)
        if not self.config.held_override:
            raise QCError(msg("error.qc.override_not_allowed"))
        if state.get("release") != "on_hold":
            raise QCError(msg("error.qc.not_on_hold", device=device))
        if not reason.strip():
            raise QCError(msg("error.qc.override_reason"))
        content = {"id": f"override/{device}/{prescription_id}", "device": device,
                   "prescription": prescription_id, "release": state, "reason": reason.strip()}
        signature = await self.signatures.asign(content, name, password, "performed")
        await self.audit.record_durably(
            "dosage.held_override", signature["user"], f"prescription/{prescription_id}",
            new={"device": device, "release": "on_hold", "since": state.get("since")},
            reason=reason.strip(), signatures=[signature], hold_reasons=state.get("reasons"),
        )  # fmt: skip
        override = {"by": signature["user"], "name": signature["name"], "reason": reason.strip(),
                    "t": signature["t"], "record_sha256": signature["record_sha256"]}
        self._overrides[(device, prescription_id)] = override
        log.warning("hold overridden for one dose", device=device, prescription=prescription_id,
                    user=signature["user"])
        return override

    def on_dispensed(self, device: str, dispensing: dict[str, Any]) -> dict[str, Any]:
        """A dosage measured on `device`: adds the calibrator's release; alerts if held."""
        state = self._state.get(device)
        release = None if state is None else state.release.value
        dispensing = {**dispensing, "calibrator_release": release}
        override = self._overrides.pop((device, str(dispensing.get("prescription"))), None)
        if state is not None and state.held and override is not None:
            # Measured on a held calibrator by a signed decision: the record says so and by whom.
            dispensing["held_override"] = override
            self.alerts.raise_alert(
                "qc.held-calibrator-dosage", device, None, "warning",
                msg("qc.held_dosage.override", rx=str(dispensing.get("prescription")),
                    device=device, who=override["by"], reason=override["reason"]),
                dispensing.get("measured_mbq"), subject=str(dispensing.get("prescription")),
                update=True,
            )  # fmt: skip
        elif state is not None and state.held:
            self.alerts.raise_alert(
                "qc.held-calibrator-dosage", device, None, "critical",
                msg("qc.held_dosage", rx=str(dispensing.get("prescription")), device=device,
                    reason=_reasons(state.reasons)),
                dispensing.get("measured_mbq"), subject=str(dispensing.get("prescription")),
                update=True,
            )  # fmt: skip
        return dispensing


def _reasons(pairs: list[list[Any]]) -> list[Message]:
    """A release state's reasons as messages (their catalog ids are their codes)."""
    return [Message(str(text), dict(params)) for text, params in pairs]


def status_of(desk: QADesk | None) -> dict[str, Any]:
    """The `calibrators` object for the retained status (empty without a QC programme)."""
    if desk is None:
        return {}
    return desk.calibrators_status()


__all__ = ["QADesk", "QCError", "Step", "TestRun", "status_of"]  # Step, TestRun: guided

