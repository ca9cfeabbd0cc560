"""The PET batch record ([18F]FDG): assembled from the instruments during and after the run.

Sources, each a live reading the agent already acquires:

- the synthesis module's OPC UA batch events (drivers/opcua: `RunStarted`, `StepChanged`,
  `EndOfSynthesis` with `batch_id`, `step`, `eos_activity`, `eos_time`, `yield_pct`): the batch
  id, each step with its start time, the end-of-synthesis (EOS) activity and time and the
  module's decay-corrected yield. The yield at EOS without decay correction is derived:
  Y = Y_dc · e^(-λ·(EOS - start)), λ = ln 2 / T½ of the product's nuclide;
- the hot cell's environment between the run's start and its EOS (`[records.synthesis.
  environment]` names the channels): pressure against its allowed band, particles ≥ 0.5 µm per
  m³ against the EU GMP Annex 1 limit of the cell's grade and state, and the dose rate against
  its limit; for each the minimum, the maximum and every excursion (start, end, extreme);
- the product vial's assay on the dose calibrator: the calibrator's activity readings over the
  assay window, fitted for the half-life (agent.physics.halflife) against the product's
  identity window (105 to 115 min for F-18, Ph. Eur.), the activity at the first reading. The
  fit starts once the chamber has settled (three consecutive readings agree within 2 % after
  decay correction): a reading of the empty chamber or of a vial still going in would
  otherwise bend the fitted slope; a series that never settles is fitted whole after the window
  and fails, as it should;
- the release tests, typed by the analyst and judged here against the product's specification
  (`[[records.products]] tests`): appearance, pH, radiochemical purity, residual solvents,
  endotoxin, filter integrity, sterility (which may be `pending` when the specification allows).

A decay-corrected yield outside the product's investigation window opens a deviation: it is
listed in the record and raised as an alert. `start_event` says whether the module's own
`RunStarted` was seen (false: the agent connected mid-run, `started` is the first event seen and
the environment covers only what followed). Runs in progress are journalled in the state
database (agent.records.journal) and reloaded at start: a restart before the record is signed
keeps the run's events and its environment as of its last event.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.messages import Message, msg
from agent.core.reading import rfc3339
from agent.physics.halflife import FitError, check_identity
from agent.physics.nuclides import NuclideTable, decay_value
from agent.records.guided import Settle, tell
from agent.records.journal import RunJournal
from agent.records.kinds import RecordError

if TYPE_CHECKING:
    from agent.qc.alerts import AlertManager
    from agent.records.config import Environment, Product, RecordsSection, ReleaseTest, Synthesis
    from agent.records.desk import RecordsDesk

log = structlog.get_logger("isoedge.records.batch")

MAX_ID = 100
MAX_TEXT = 500
ASSAY_WINDOW_S = 600.0
"""How long the product vial is measured for its half-life (s of the sample's own time)."""
MIN_ASSAY_POINTS = 10
ASSAY_SETTLE = Settle(readings=3, stability_pct=2.0, floor=0.0)
"""Consecutive readings that must agree (decay corrected) before the fit's series starts."""
MAX_ASSAY_READINGS = 5000


class BatchError(ValueError):
    """A batch operation that cannot be done now (unknown batch, no EOS yet, signed already).

    `message`: the text as data (code and parameters), rendered in the reader's language.
    """

    def __init__(self, message: Message | str) -> None:
        self.message = message if isinstance(message, Message) else Message(message)
        super().__init__(str(self.message))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:  # noqa: PLR2004 - an RFC 3339 stamp
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(slots=True)
class Excursion:
    """A stretch of readings outside the limit."""

    start: datetime
    end: datetime
    extreme: float

    def as_dict(self) -> dict[str, Any]:
        """The record's form."""
        return {"start": rfc3339(self.start), "end": rfc3339(self.end), "extreme": self.extreme}


@dataclass(slots=True)
class Tracker:
    """Min, max and excursions of one environment channel during a run."""

    quantity: str
    unit: str
    low: float | None
    high: float | None
    basis: str
    n: int = 0
    minimum: float | None = None
    maximum: float | None = None
    excursions: list[Excursion] = field(default_factory=list)
    _open: Excursion | None = None

    def feed(self, t: datetime, value: float) -> None:
        """One reading."""
        self.n += 1
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        self.maximum = value if self.maximum is None else max(self.maximum, value)
        outside = (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        )
        if outside:
            if self._open is None:
                self._open = Excursion(t, t, value)
                self.excursions.append(self._open)
            else:
                self._open.end = t
                worse = value < self._open.extreme if self.low is not None and value < \
                    self.low else value > self._open.extreme  # fmt: skip
                if worse:
                    self._open.extreme = value
        else:
            self._open = None

    def summary(self) -> dict[str, Any]:
        """The record's form: limits with their basis, min, max, every excursion."""
        return {
            "quantity": self.quantity, "unit": self.unit, "low": self.low, "high": self.high,
            "basis": self.basis, "readings": self.n, "min": self.minimum, "max": self.maximum,
            "excursions": [e.as_dict() for e in self.excursions],
            "result": "fail" if self.excursions else ("pass" if self.n else "no_data"),
        }  # fmt: skip

    def state(self) -> dict[str, Any]:
        """What `restore` needs to continue this tracker (the journal's form)."""
        return {"n": self.n, "min": self.minimum, "max": self.maximum,
                "excursions": [e.as_dict() for e in self.excursions],
                "open": self._open is not None}  # fmt: skip

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state()` (a journal entry; malformed: ValueError/TypeError/KeyError)."""
        excursions = []
        for e in state["excursions"]:
            start, end = _parse_time(e["start"]), _parse_time(e["end"])
            if start is None or end is None:
                raise ValueError("journalled excursion without times")
            excursions.append(Excursion(start, end, float(e["extreme"])))
        self.n = int(state["n"])
        self.minimum = _number(state["min"])
        self.maximum = _number(state["max"])
        self.excursions = excursions
        self._open = excursions[-1] if state["open"] and excursions else None


def _trackers(env: Environment) -> dict[tuple[str, str], Tracker]:
    found: dict[tuple[str, str], Tracker] = {}
    if env.pressure is not None:
        low, high = env.pressure_pa
        found[(env.pressure.device, env.pressure.channel)] = Tracker(
            "pressure", "Pa", low, high, env.pressure_basis
        )
    if env.particles is not None:
        limits = env.particle_limits.get(env.grade)
        limit = None if limits is None else getattr(limits, env.state)
        basis = f"{env.particle_basis}; grade {env.grade}, {env.state.replace('_', ' ')}"
        found[(env.particles.device, env.particles.channel)] = Tracker(
            "particles_0_5um", "1/m3", None, limit, basis
        )
    if env.dose_rate is not None:
        found[(env.dose_rate.device, env.dose_rate.channel)] = Tracker(
            "dose_rate", "uSv/h", None, env.dose_rate_max_usv_h, env.dose_rate_basis
        )
    return found


@dataclass(slots=True)
class SynthesisRun:
    """One batch, from its run's start to its signed record."""

    batch_id: str
    module: Synthesis
    product: Product
    started: datetime | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    eos_time: datetime | None = None
    eos_activity_mbq: float | None = None
    yield_dc_pct: float | None = None
    environment: dict[tuple[str, str], Tracker] = field(default_factory=dict)
    assay: dict[str, Any] | None = None
    assay_series: list[tuple[float, float, str]] = field(default_factory=list)
    assay_first: int | None = None  # where the fitted series starts (None: not settled yet)
    assay_started: datetime | None = None
    assay_scale: float = 1.0
    record_id: str | None = None
    state: str = "running"  # running | eos | assaying | assayed | signed | aborted
    start_seen: bool = False  # the module's RunStarted event itself (not a later event first)

    def as_dict(self) -> dict[str, Any]:
        """The console's view of the run."""
        return {
            "batch_id": self.batch_id, "device": self.module.device, "product": self.product.id,
            "product_name": self.product.name, "state": self.state,
            "started": None if self.started is None else rfc3339(self.started),
            "steps": self.steps,
            "eos_time": None if self.eos_time is None else rfc3339(self.eos_time),
            "eos_activity_mbq": self.eos_activity_mbq, "yield_decay_corrected_pct":
            self.yield_dc_pct, "assay": self.assay, "record_id": self.record_id,
            "assay_points": len(self.assay_series),
        }  # fmt: skip


def judge_test(spec: ReleaseTest, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One typed release test against its specification: the record's form (result inside).

    `entry`: `{"value": number | text, "result": "pass" | "fail" | "pending"}`; numbers are
    judged here (a given result is ignored), `pass_fail` and `text` take the analyst's result.
    """
    value = entry.get("value")
    given = entry.get("result")
    out: dict[str, Any] = {"code": spec.code, "kind": spec.kind, "low": spec.low,
                           "high": spec.high, "unit": spec.unit, "basis": spec.basis}  # fmt: skip
    if spec.kind == "text":
        out["expect"] = spec.expect
    if given == "pending":
        if not spec.pending_allowed:
            raise RecordError(msg("error.batch.pending_not_allowed", test=spec.code))
        return {**out, "value": None, "result": "pending"}
    if spec.kind in {"range", "max", "min"}:
        number = _number(value)
        if number is None:
            raise RecordError(msg("error.batch.number_needed", test=spec.code))
        ok = (spec.low is None or number >= spec.low) and (spec.high is None or number <= spec.high)
        return {**out, "value": number, "result": "pass" if ok else "fail"}
    if given not in {"pass", "fail"}:
        raise RecordError(msg("error.batch.pass_fail_needed", test=spec.code))
    text = value if isinstance(value, str) else ""
    if len(text) > MAX_TEXT:
        raise RecordError(msg("error.batch.observation_long", test=spec.code))
    return {**out, "value": text or None, "result": given}


def judge_tests(product: Product, entries: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every test of the specification judged; a test of the specification not given refuses."""
    unknown = set(entries) - {t.code for t in product.tests}
    if unknown:
        raise RecordError(msg("error.batch.unknown_tests", product=product.id,
                                  tests=", ".join(sorted(unknown))))
    results = []
    for spec in product.tests:
        entry = entries.get(spec.code)
        if not isinstance(entry, Mapping):
            raise RecordError(msg("error.batch.no_result", test=spec.code))
        results.append(judge_test(spec, entry))
    return results


class BatchDesk:
    """Assembles batch records from live readings; signs them through the records' signer.

    `on_item(stream, item)` takes a reading in its published item form (agent.records.service.
    Records passes the pipeline's watched readings, on the event loop): only the channels of a
    configured synthesis module, its hot cell and its calibrator (`watches`) are looked at; a
    malformed event is refused and counted, never raised.
    """

    def __init__(
        self,
        desk: RecordsDesk,
        config: RecordsSection,
        *,
        nuclides: NuclideTable | None = None,
        alerts: AlertManager | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.desk = desk
        self.config = config
        self.nuclides = nuclides or NuclideTable()
        self.alerts = alerts
        self._now = now or desk.now
        self._lock = threading.RLock()
        self._runs: dict[str, SynthesisRun] = {}
        self._current: dict[str, str] = {}  # synthesis device -> batch id of its open run
        self.rejected = 0
        self.on_change: Callable[[], None] | None = None
        self._modules = {(m.device, m.channel): m for m in config.synthesis}
        self._env: dict[tuple[str, str], list[str]] = {}
        for m in config.synthesis:
            for key in _trackers(m.environment):
                self._env.setdefault(key, []).append(m.device)
        self._calibrators = {m.calibrator for m in config.synthesis if m.calibrator}
        self._journal = RunJournal(desk.store.store)
        self._replaying = False

    async def open(self) -> None:
        """Create the journal if missing and reload the runs of batches not yet signed."""
        await self._journal.open()
        entries = await self._journal.pending(self._now())
        with self._lock:
            self._replaying = True
            try:
                for entry in entries:
                    self._replay(entry)
            finally:
                self._replaying = False
        if entries:
            log.info("synthesis runs reloaded", runs=len(self._runs))

    def _replay(self, entry: Mapping[str, Any]) -> None:
        item = entry["item"]
        module = self._modules.get((item.get("device"), item.get("channel")))
        if module is None:
            return  # the module is no longer configured
        try:
            run = self._on_event(module, item)
            if run is not None:
                for device, channel, state in entry.get("environment") or ():
                    tracker = run.environment.get((device, channel))
                    if tracker is not None:
                        tracker.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("journalled batch event refused", device=module.device, error=str(exc))

    def _journalled(self, run: SynthesisRun, item: dict[str, Any]) -> None:
        """Append the event just taken and the run's environment (under the lock)."""
        if self._replaying:
            return
        environment = [(d, c, tracker.state()) for (d, c), tracker in run.environment.items()]
        self._journal.append(run.batch_id, item, environment)

    # ------------------------------------------------------------------ queries
    def runs(self) -> list[SynthesisRun]:
        """Runs in memory, newest first."""
        with self._lock:
            return sorted(self._runs.values(), key=lambda r: r.started or datetime.min.replace(
                tzinfo=UTC), reverse=True)  # fmt: skip

    def run(self, batch_id: str) -> SynthesisRun:
        """The run of this batch (BatchError if unknown)."""
        with self._lock:
            run = self._runs.get(batch_id)
        if run is None:
            raise BatchError(msg("error.batch.no_run", batch=batch_id))
        return run

    # ------------------------------------------------------------------ readings
    def watches(self, device: str, channel: str) -> bool:
        """A module's event channel, a hot cell's environment channel or a module's calibrator."""
        key = (device, channel)
        return key in self._modules or key in self._env or device in self._calibrators

    def on_item(self, stream: str, item: dict[str, Any]) -> None:
        """A live item: batch events, environment and assay readings are taken, others ignored."""
        if stream != "reading":
            return
        key = (item.get("device"), item.get("channel"))
        module = self._modules.get(key)  # type: ignore[arg-type]
        try:
            if module is not None and item.get("kind") == "event":
                self._on_event(module, item)
            elif key in self._env:
                self._on_environment(key, item)
            elif key[0] in self._calibrators and item.get("nuclide") is not None:
                self._on_assay_reading(item)
        except (KeyError, TypeError, ValueError) as exc:
            self.rejected += 1
            log.warning("batch input refused", device=key[0], channel=key[1], error=str(exc))

    def _changed(self) -> None:
        tell(self.on_change, "batch")

    def _on_event(self, module: Synthesis, item: dict[str, Any]) -> SynthesisRun | None:
        """Take one batch event; the run it changed (None: a repeat after EOS)."""
        event = item.get("event") or item.get("value")
        batch_id = item.get("batch_id")
        t = _parse_time(item.get("t"))
        if not isinstance(event, str) or not isinstance(batch_id, str) or t is None:
            raise ValueError("batch event without event name, batch id or time")
        if not batch_id or len(batch_id) > MAX_ID or not batch_id.isprintable():
            raise ValueError("batch id empty, too long or not printable")
        step = item.get("step")
        step = step[:MAX_ID] if isinstance(step, str) else None
        with self._lock:
            run = self._runs.get(batch_id)
            if run is None:
                if event == "EndOfSynthesis":
                    raise ValueError(
                        f"end of synthesis of batch {batch_id} whose start was not seen"
                    )
                run = self._open_run(module, batch_id, t)
            if run.state != "running":
                return None  # a repeated event after EOS changes nothing
            if event == "RunStarted" and not run.steps:
                run.started, run.start_seen = t, True
            if event in {"RunStarted", "StepChanged"} and step and (
                    not run.steps or run.steps[-1]["step"] != step):  # fmt: skip
                run.steps.append({"step": step, "t": rfc3339(t)})
            elif event == "EndOfSynthesis":
                activity = _number(item.get("eos_activity"))
                unit = item.get("eos_activity_unit", "MBq")
                eos_time = _parse_time(item.get("eos_time")) or t
                if activity is None or unit != "MBq":
                    raise ValueError("end of synthesis without an activity in MBq")
                run.eos_time, run.eos_activity_mbq = eos_time, activity
                run.yield_dc_pct = _number(item.get("yield_pct"))
                run.steps.append({"step": "end", "t": rfc3339(eos_time)})
                run.state = "eos"
                self._current.pop(module.device, None)
                log.info("end of synthesis", device=module.device, batch=batch_id,
                         activity_mbq=activity)  # fmt: skip
            self._journalled(run, item)
        self._changed()
        return run

    def _open_run(self, module: Synthesis, batch_id: str, t: datetime) -> SynthesisRun:
        """A new run of `module` (under the lock); an open earlier one is aborted."""
        product = self.config.product(module.product)
        run = SynthesisRun(batch_id, module, product, started=t,
                           environment=_trackers(module.environment))  # fmt: skip
        self._runs[batch_id] = run
        previous = self._runs.get(self._current.get(module.device, ""))
        if previous is not None and previous.state == "running":
            previous.state = "aborted"  # a new run began before its end of synthesis
        self._current[module.device] = batch_id
        log.info("synthesis run started", device=module.device, batch=batch_id)
        return run

    def _on_environment(self, key: tuple[str, str], item: dict[str, Any]) -> None:
        value = _number(item.get("value"))
        t = _parse_time(item.get("t"))
        if value is None or t is None or item.get("quality", "good") == "bad":
            return  # a bad reading is no measurement of the environment
        with self._lock:
            for device in self._env[key]:
                batch_id = self._current.get(device)
                run = self._runs.get(batch_id) if batch_id else None
                if run is not None and run.state == "running":
                    run.environment[key].feed(t, value)

    def _on_assay_reading(self, item: dict[str, Any]) -> None:
        value = _number(item.get("value"))
        t = _parse_time(item.get("t"))
        if value is None or t is None or item.get("quality", "good") != "good":
            return
        if item.get("unit") != "MBq":
            return
        with self._lock:
            for run in self._runs.values():
                if (run.state == "assaying" and run.module.calibrator == item.get("device")
                        and item.get("nuclide") == run.product.nuclide
                        and run.assay_started is not None and t >= run.assay_started):  # fmt: skip
                    self._assay_point(run, t, value, str(item.get("id", "")),
                                      item.get("calibrator_release"))  # fmt: skip

    def _assay_point(self, run: SynthesisRun, t: datetime, value: float, reading_id: str,
                     release: Any) -> None:  # fmt: skip
        if release == "on_hold":
            run.assay = {"error": "calibrator_on_hold", "device": run.module.calibrator}
            run.state = "eos"
            self._changed()
            return
        assert run.assay_started is not None  # noqa: S101 - set with the state
        elapsed = (t - run.assay_started).total_seconds() * run.assay_scale
        if len(run.assay_series) < MAX_ASSAY_READINGS:
            run.assay_series.append((elapsed, value, reading_id))
        if run.assay_first is None:
            run.assay_first = self._settled_from(run)
            if run.assay_first is None and elapsed >= ASSAY_WINDOW_S:
                run.assay_first = 0  # never settled: the whole series is fitted (and fails)
        first = run.assay_first
        if first is None:
            return
        points = len(run.assay_series) - first
        if elapsed - run.assay_series[first][0] >= ASSAY_WINDOW_S and points >= MIN_ASSAY_POINTS:
            self._complete_assay(run)

    def _settled_from(self, run: SynthesisRun) -> int | None:
        """Index of the first of the last readings if they agree after decay correction."""
        count = ASSAY_SETTLE.readings
        if len(run.assay_series) < count:
            return None
        last = run.assay_series[-count:]
        half_life = self.nuclides.half_life_s(run.product.nuclide)
        values = [decay_value(value, last[0][0] - elapsed, half_life) for elapsed, value, _ in last]
        if sum(values) <= 0 or not ASSAY_SETTLE.agree(values):
            return None
        return len(run.assay_series) - count

    def _complete_assay(self, run: SynthesisRun) -> None:
        import numpy as np  # noqa: PLC0415 - numpy (~12 MB of RSS) only once an assay completes

        low, high = run.product.half_life_min
        skipped = run.assay_first or 0
        series = run.assay_series[skipped:]
        t = np.array([p[0] for p in series])
        a = np.array([p[1] for p in series])
        assert run.assay_started is not None  # noqa: S101
        first = series[0]
        measured_at = run.assay_started + timedelta(seconds=first[0] / run.assay_scale)
        try:
            result = check_identity(run.product.nuclide, t, a, (low * 60.0, high * 60.0))
        except (FitError, ValueError) as exc:
            run.assay = {"error": "fit_failed", "detail": str(exc)}
            run.state = "eos"
            self._changed()
            return
        fit = result.fit
        run.assay = {
            "device": run.module.calibrator, "nuclide": run.product.nuclide,
            "measured_mbq": first[1], "measured_at": rfc3339(measured_at),
            "readings": [p[2] for p in series][:200],
            "readings_count": len(series),
            "readings_before_settled": skipped,
            # No decay measured: T½ and its uncertainty are infinite, which JSON cannot carry
            # (the record, the page and the stream say null, and the identity fails).
            "half_life_min": _finite(fit.half_life_s / 60.0),
            "half_life_u_min": _finite(fit.uncertainty_s / 60.0),
            "span_min": fit.span_s / 60.0 / run.assay_scale, "window_min": [low, high],
            "identity": "pass" if result.passed else "fail", "basis": run.product.half_life_basis,
            **({"time_scale": run.assay_scale} if run.assay_scale != 1.0 else {}),
        }  # fmt: skip
        run.state = "assayed"
        log.info("product assay done", batch=run.batch_id, half_life_min=fit.half_life_s / 60)
        self._changed()

    # ------------------------------------------------------------------ operator actions
    def start_assay(self, batch_id: str, *, time_scale: float = 1.0) -> SynthesisRun:
        """Begin the product vial's assay: the calibrator's readings from now are fitted.

        `time_scale` > 1 only for a simulated sample that decays faster (the demo).
        """
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise BatchError(msg("error.time_scale"))
        with self._lock:
            run = self.run(batch_id)
            if run.state not in {"eos", "assayed"}:
                raise BatchError(msg("error.batch.nothing_to_assay", batch=batch_id,
                                     state=run.state))
            if run.module.calibrator is None:
                raise BatchError(msg("error.batch.no_calibrator", device=run.module.device))
            run.state, run.assay, run.assay_series = "assaying", None, []
            run.assay_first = None
            run.assay_started, run.assay_scale = self._now(), time_scale
        self._changed()
        return run

    def draft(self, batch_id: str, tests: Mapping[str, Any]) -> tuple[dict[str, Any], list[
            dict[str, Any]]]:  # fmt: skip
        """The unsigned batch record and its deviations (BatchError/RecordError if not ready)."""
        run = self.run(batch_id)
        if run.state == "signed":
            raise BatchError(msg("error.batch.recorded_already", batch=batch_id,
                                  record=str(run.record_id)))
        if run.eos_time is None or run.eos_activity_mbq is None:
            raise BatchError(msg("error.batch.no_eos", batch=batch_id))
        if run.assay is None or "error" in run.assay:
            raise BatchError(msg("error.batch.not_assayed", batch=batch_id))
        product = run.product
        results = judge_tests(product, tests)
        lam = math.log(2) / self.nuclides[product.nuclide].half_life_s
        duration = None if run.started is None else (run.eos_time - run.started).total_seconds()
        yield_eos = None
        if run.yield_dc_pct is not None and duration is not None:
            yield_eos = run.yield_dc_pct * math.exp(-lam * duration)
        deviations: list[dict[str, Any]] = []
        low, high = product.yield_investigation_pct
        if run.yield_dc_pct is not None and not low <= run.yield_dc_pct <= high:
            deviations.append({"code": "yield_outside_investigation_limits",
                               "value": run.yield_dc_pct, "low": low, "high": high,
                               "basis": product.yield_basis})  # fmt: skip
        environment = [tracker.summary() for tracker in run.environment.values()]
        failed = [r["code"] for r in results if r["result"] == "fail"]
        if run.assay.get("identity") != "pass":
            failed.append("identity")
        failed.extend(f"environment:{e['quantity']}" for e in environment if e["result"] == "fail")
        pending = [r["code"] for r in results if r["result"] == "pending"]
        expiry = run.eos_time + timedelta(hours=product.shelf_life_h)
        record = self.desk.draft(
            "batch", batch_id=batch_id, product=product.name, product_id=product.id,
            nuclide=product.nuclide, device=run.module.device,
            started=None if run.started is None else rfc3339(run.started), steps=run.steps,
            start_event=run.start_seen,
            eos_time=rfc3339(run.eos_time), eos_activity_mbq=run.eos_activity_mbq,
            yield_decay_corrected_pct=run.yield_dc_pct, yield_pct=yield_eos,
            yield_investigation_pct=[low, high], expiry=rfc3339(expiry),
            shelf_life_h=product.shelf_life_h, environment=environment, assay=run.assay,
            tests=results, deviations=deviations, failed=failed, pending=pending,
            result="fail" if failed else "pass",
        )  # fmt: skip
        return record, deviations

    async def sign(self, batch_id: str, tests: Mapping[str, Any], name: str, password: str,
                   comment: str = "") -> dict[str, Any]:  # fmt: skip
        """The performer signs the batch record; a yield deviation is raised as an alert."""
        record, deviations = self.draft(batch_id, tests)
        if comment:
            record["comment"] = comment[:MAX_TEXT]
        signed = await self.desk.signer.sign(record, name, password, "performed")
        run = self.run(batch_id)
        with self._lock:
            run.state, run.record_id = "signed", signed["id"]
        if deviations and self.alerts is not None:
            deviation = deviations[0]
            self.alerts.raise_alert(
                "records.batch.deviation", run.module.device, None, "warning",
                msg("records.batch.deviation", batch=batch_id,
                    value=round(deviation["value"], 1), low=deviation["low"],
                    high=deviation["high"]),
                deviation["value"], subject=batch_id,
                details={"batch_id": batch_id, "record": signed["id"]},
            )  # fmt: skip
        self._changed()
        return signed


__all__ = ["ASSAY_WINDOW_S", "BatchDesk", "BatchError", "SynthesisRun", "judge_test", "judge_tests"]


def _finite(value: float) -> float | None:
    """`value`, or None where it is not a finite number (JSON has no infinity)."""
    return value if math.isfinite(value) else None
