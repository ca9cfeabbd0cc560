"""Rule evaluators: one object per configured rule, holding its per-(device, channel) state.

Durations (minimum duration, stale, offline) use the engine's monotonic clock; decay and
half-life fits use the readings' measurement times. Level rules share `_Level`, a small state
machine with hysteresis and minimum durations; discrete measurements on a dose calibrator
(constancy, dosage) share `_Settler`, which recognises one settled measurement in a stream of
readings so each measurement is judged once: noise cannot make its result flap.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.messages import Message, msg, rounded
from agent.core.reading import new_id, rfc3339
from agent.physics.nuclides import decay_value, normalize_nuclide
from agent.physics.units import ACTIVITY_TO_MBQ, canonical_unit, is_activity_unit
from drivers.base import Quality

if TYPE_CHECKING:
    from datetime import datetime

    from agent.core.reading import Reading
    from agent.physics.nuclides import NuclideTable
    from agent.qc.alerts import AlertManager
    from agent.qc.audit import AuditLog
    from agent.qc.config import (
        BackgroundRule,
        ConstancyRule,
        DeviceOfflineRule,
        DosageRule,
        HalfLifeRule,
        RateOfChangeRule,
        RuleBase,
        StaleRule,
        ThresholdRule,
    )
    from agent.qc.prescriptions import Prescription, PrescriptionBook

log = structlog.get_logger("isoedge.qc")

QC_ACTOR = "isoedge.qc"
# After a measurement is judged, a change this large (%) means a new sample was put in.
_NEW_SAMPLE_PCT_MIN = 10.0


def numeric_value(reading: Reading) -> float | None:
    """The reading's value as a float, or None when it cannot be judged (bad, missing)."""
    value = reading.value
    if reading.quality is Quality.BAD or isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def activity_mbq(reading: Reading) -> float | None:
    """An activity reading in MBq (None for other quantities)."""
    value = numeric_value(reading)
    if value is None or not is_activity_unit(reading.unit):
        return None
    return value * ACTIVITY_TO_MBQ[canonical_unit(reading.unit or "")]


class RuleRuntime:
    """Base of the evaluators: the rule's config and the alert manager."""

    def __init__(self, config: RuleBase, alerts: AlertManager) -> None:
        self.config = config
        self.alerts = alerts

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.config.name

    def matches(self, device: str, channel: str) -> bool:
        """Whether readings of this device and channel concern the rule."""
        c = self.config
        return (c.device is None or c.device == device) and (
            c.channel is None or c.channel == channel
        )

    def on_reading(self, reading: Reading, now: float) -> None:
        """A reading of a matching (device, channel)."""

    def on_tick(self, now: float) -> None:
        """Called about once a second."""

    def on_device_state(self, device: str, state: str, detail: str | None, now: float) -> None:
        """A device changed state."""

    def _raise(
        self, device: str | None, channel: str | None, severity: str, message: Message | str,
        value: float | None = None, **kw: Any,
    ) -> None:  # fmt: skip
        self.alerts.raise_alert(self.name, device, channel, severity, message, value, **kw)

    def _clear(
        self, device: str | None, channel: str | None, message: Message | str,
        value: float | None = None,
        **kw: Any,
    ) -> None:  # fmt: skip
        self.alerts.clear_alert(self.name, device, channel, message, value, **kw)


# --------------------------------------------------------------------------- level rules
@dataclass(slots=True)
class _Level:
    """Raise after `min_duration` in breach; clear after `clear_duration` back to normal."""

    active: bool = False
    breach_since: float | None = None
    normal_since: float | None = None

    def update(
        self, breach: bool, normal: bool, now: float, min_duration: float, clear_duration: float
    ) -> str | None:
        """'raise', 'clear' or None. Values in the hysteresis band change nothing."""
        if not self.active:
            self.normal_since = None
            if not breach:
                self.breach_since = None
                return None
            if self.breach_since is None:
                self.breach_since = now
            if now - self.breach_since >= min_duration:
                self.active = True
                self.breach_since = None
                return "raise"
            return None
        self.breach_since = None
        if not normal:
            self.normal_since = None
            return None
        if self.normal_since is None:
            self.normal_since = now
        if now - self.normal_since >= clear_duration:
            self.active = False
            self.normal_since = None
            return "clear"
        return None


class _LevelRule(RuleRuntime):
    """Shared by threshold, background and rate-of-change rules."""

    config: ThresholdRule | BackgroundRule | RateOfChangeRule

    def __init__(self, config: Any, alerts: AlertManager) -> None:
        super().__init__(config, alerts)
        self._states: dict[tuple[str, str], _Level] = {}

    def _state(self, device: str, channel: str) -> _Level:
        state = self._states.get((device, channel))
        if state is None:
            # After a restart, an alert still active in the database is this rule's state.
            active = self.alerts.active_alert(self.name, device, channel) is not None
            state = self._states[(device, channel)] = _Level(active=active)
        return state

    def _judge(  # noqa: PLR0917
        self, reading: Reading, now: float, breach: bool, normal: bool, value: float,
        text: Message,
    ) -> None:
        c = self.config
        state = self._state(reading.device, reading.channel)
        outcome = state.update(breach, normal, now, c.min_duration_s, c.clear_duration_s)
        if outcome == "raise":
            self._raise(reading.device, reading.channel, c.severity, text, value)
        elif outcome == "clear":
            self._clear(reading.device, reading.channel, msg("alert.back_to_normal", what=text),
                        value)


class ThresholdEvaluator(_LevelRule):
    """Value above `high` / below `low`, with hysteresis and minimum duration."""

    config: ThresholdRule

    def on_reading(self, reading: Reading, now: float) -> None:
        """Judge one reading against the limits."""
        c = self.config
        value = numeric_value(reading)
        if value is None or (c.unit is not None and canonical_unit(reading.unit or "") != c.unit):
            return
        h = c.hysteresis
        above = c.high is not None and value > c.high
        below = c.low is not None and value < c.low
        normal = (c.high is None or value <= c.high - h) and (c.low is None or value >= c.low + h)
        unit, shown = reading.unit or "", rounded(value)
        if above:
            text = msg("alert.threshold.above", channel=reading.channel, value=shown, unit=unit,
                       limit=c.high)
        elif below:
            text = msg("alert.threshold.below", channel=reading.channel, value=shown, unit=unit,
                       limit=c.low)
        else:
            text = msg("alert.threshold.value", channel=reading.channel, value=shown, unit=unit)
        self._judge(reading, now, above or below, normal, value, text)


class BackgroundEvaluator(_LevelRule):
    """A dose calibrator's background above `max`."""

    config: BackgroundRule

    def on_reading(self, reading: Reading, now: float) -> None:
        """Judge one background reading."""
        c = self.config
        value = numeric_value(reading)
        if value is None:
            return
        limit_unit = canonical_unit(c.unit)
        unit = canonical_unit(reading.unit or "")
        if unit in ACTIVITY_TO_MBQ and limit_unit in ACTIVITY_TO_MBQ:
            limit = c.max * ACTIVITY_TO_MBQ[limit_unit] / ACTIVITY_TO_MBQ[unit]
        elif unit == limit_unit:
            limit = c.max
        else:
            return
        text = msg("alert.background", value=rounded(value), unit=unit, limit=rounded(limit))
        self._judge(reading, now, value > limit, value <= limit - c.hysteresis, value, text)


class RateOfChangeEvaluator(_LevelRule):
    """Rise or fall per minute over `window_s` beyond the limits."""

    config: RateOfChangeRule

    def __init__(self, config: RateOfChangeRule, alerts: AlertManager) -> None:
        super().__init__(config, alerts)
        self._history: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def on_reading(self, reading: Reading, now: float) -> None:
        """Update the window and judge the rate."""
        c = self.config
        value = numeric_value(reading)
        if value is None:
            return
        history = self._history.setdefault((reading.device, reading.channel), deque())
        history.append((now, value))
        # Keep one point at or beyond the window as the anchor of the slope.
        while len(history) > 2 and now - history[1][0] >= c.window_s:  # noqa: PLR2004
            history.popleft()
        t0, v0 = history[0]
        if now - t0 < c.window_s / 2:
            return  # too short a span: the slope would be mostly noise
        rate = (value - v0) / (now - t0) * 60.0
        rise_limit, fall_limit = c.max_rise_per_min, c.max_fall_per_min
        h = c.hysteresis
        breach = (rise_limit is not None and rate > rise_limit) or (
            fall_limit is not None and -rate > fall_limit
        )
        normal = (rise_limit is None or rate <= rise_limit - h) and (
            fall_limit is None or -rate <= fall_limit - h
        )
        text = msg("alert.rate", channel=reading.channel, rate=rounded(rate, 3),
                   unit=reading.unit or "")
        self._judge(reading, now, breach, normal, rate, text)


# --------------------------------------------------------------------------- time rules
class StaleEvaluator(RuleRuntime):
    """No data for N x the poll interval."""

    config: StaleRule

    def __init__(
        self, config: StaleRule, alerts: AlertManager, poll_intervals: dict[str, float], now: float
    ) -> None:
        super().__init__(config, alerts)
        self._poll = poll_intervals
        self._last: dict[tuple[str, str], float] = {}
        self._offline: set[str] = set()
        devices = [config.device] if config.device else list(poll_intervals)
        for device in devices:
            self._last[(device, config.channel or "")] = now
        for key in self._last:
            if alerts.active_alert(self.name, key[0], key[1] or None) is not None:
                self._last[key] = -math.inf  # still stale after a restart until data arrives

    def watch_devices(self, devices: list[str], now: float) -> None:
        """The enabled devices after a reload: an added one is watched from `now`."""
        if self.config.device is not None:
            return  # a rule about one device keeps watching it
        channel = self.config.channel or ""
        for device in devices:
            self._last.setdefault((device, channel), now)
        for key in [k for k in self._last if k[0] not in devices]:
            del self._last[key]
            self._offline.discard(key[0])
            if self.alerts.active_alert(self.name, key[0], key[1] or None) is not None:
                self._clear(key[0], key[1] or None, "device removed from the configuration")

    def _limit(self, device: str) -> float | None:
        if self.config.after_s is not None:
            return self.config.after_s
        poll = self._poll.get(device)
        return None if poll is None else self.config.factor * poll

    def on_reading(self, reading: Reading, now: float) -> None:
        """Data arrived: reset the timer, clear a stale alert."""
        key = (reading.device, self.config.channel or "")
        self._last[key] = now
        if self.alerts.active_alert(self.name, key[0], key[1] or None) is not None:
            self._clear(key[0], key[1] or None, msg("alert.stale.cleared"))

    def on_tick(self, now: float) -> None:
        """Raise for every key without data for too long."""
        for key, last in self._last.items():
            device, channel = key
            if device in self._offline and not self.config.while_offline:
                continue
            limit = self._limit(device)
            if limit is None or now - last <= limit:
                continue
            if self.alerts.active_alert(self.name, device, channel or None) is None:
                what = f"{device}/{channel}" if channel else device
                self._raise(
                    device, channel or None, self.config.severity,
                    msg("alert.stale", what=what, limit=limit),
                )  # fmt: skip

    def on_device_state(
        self,
        device: str,
        state: str,
        detail: str | None,  # noqa: ARG002 - part of the evaluator interface
        now: float,
    ) -> None:
        """Track offline devices; a device back online gets a fresh grace period."""
        if state == "offline":
            self._offline.add(device)
        elif state == "online" and device in self._offline:
            self._offline.discard(device)
            for key in self._last:
                if key[0] == device:
                    self._last[key] = max(self._last[key], now)


class DeviceOfflineEvaluator(RuleRuntime):
    """Offline (or never connected) for longer than `after_s`; degraded at a lower severity."""

    config: DeviceOfflineRule

    def __init__(self, config: DeviceOfflineRule, alerts: AlertManager) -> None:
        super().__init__(config, alerts)
        self._state: dict[str, tuple[str, float, str | None]] = {}

    def matches(self, device: str, channel: str) -> bool:  # noqa: ARG002
        """Readings don't matter to this rule."""
        return False

    def on_device_state(self, device: str, state: str, detail: str | None, now: float) -> None:
        """Remember since when the device is in this kind of state; clear when online."""
        if self.config.device is not None and device != self.config.device:
            return
        kind = "down" if state in {"offline", "connecting"} else state
        previous = self._state.get(device)
        since = previous[1] if previous is not None and previous[0] == kind else now
        self._state[device] = (kind, since, detail)
        if kind == "online":
            self._clear(device, None, msg("alert.device.online"))
        else:
            self.on_tick(now)

    def on_tick(self, now: float) -> None:
        """Raise (or change severity) once a state has lasted `after_s`."""
        c = self.config
        for device, (kind, since, detail) in self._state.items():
            if kind == "down":
                severity: str | None = c.severity
            elif kind == "degraded":
                severity = c.degraded_severity
            else:
                continue
            if severity is None or now - since < c.after_s:
                continue
            state = "offline" if kind == "down" else "degraded"
            seconds = round(now - since)
            message = (
                msg("alert.device.state_detail", device=device, state=state, seconds=seconds,
                    detail=detail)
                if detail else msg("alert.device.state", device=device, state=state,
                                   seconds=seconds)
            )
            self._raise(device, None, severity, message)


# --------------------------------------------------------------------------- measurements
@dataclass(slots=True)
class _Settler:
    """Recognises one settled measurement: `n` readings within `stability_pct`."""

    n: int
    stability_pct: float
    gap_s: float
    values: deque[float] = field(default_factory=deque)
    last_t: float | None = None
    judged_mean: float | None = None

    def reset(self) -> None:
        """Forget the current measurement."""
        self.values.clear()
        self.judged_mean = None

    def add(self, value: float, now: float) -> float | None:
        """Feed a reading; returns the settled mean once per measurement, else None."""
        if self.last_t is not None and now - self.last_t > self.gap_s:
            self.reset()
        self.last_t = now
        if self.judged_mean is not None:
            jump = max(_NEW_SAMPLE_PCT_MIN, 5 * self.stability_pct) / 100
            if abs(value - self.judged_mean) > jump * self.judged_mean:
                self.reset()  # another sample: a new measurement
            else:
                return None
        self.values.append(value)
        while len(self.values) > self.n:
            self.values.popleft()
        if len(self.values) < self.n:
            return None
        mean = sum(self.values) / self.n
        if mean <= 0 or (max(self.values) - min(self.values)) > self.stability_pct / 100 * mean:
            return None
        self.judged_mean = mean
        return mean


class ConstancyEvaluator(RuleRuntime):
    """Reference source reading vs its decay-corrected certified activity."""

    config: ConstancyRule

    def __init__(
        self, config: ConstancyRule, alerts: AlertManager, nuclides: NuclideTable,
        audit: AuditLog,
    ) -> None:  # fmt: skip
        super().__init__(config, alerts)
        self._half_life = nuclides.half_life_s(config.source.nuclide)
        self._audit = audit
        self._settler = _Settler(config.settle_readings, config.stability_pct, config.session_gap_s)
        src = config.source
        self._certified_mbq = src.activity * ACTIVITY_TO_MBQ[src.unit]

    def expected_mbq(self, t: datetime) -> float:
        """The source's activity at `t`."""
        elapsed = (t - self.config.source.reference_date).total_seconds()
        return decay_value(self._certified_mbq, elapsed, self._half_life)

    def on_reading(self, reading: Reading, now: float) -> None:
        """Judge a settled reading of the reference source."""
        c = self.config
        value = activity_mbq(reading)
        if value is None or reading.nuclide is None:
            return
        if normalize_nuclide(reading.nuclide) != c.source.nuclide:
            self._settler.reset()
            return
        expected = self.expected_mbq(reading.t)
        if value < c.min_fraction * expected:
            self._settler.reset()  # source not (yet) in the chamber
            return
        measured = self._settler.add(value, now)
        if measured is None:
            return
        deviation = (measured - expected) / expected * 100
        if abs(deviation) <= c.action_pct:
            result, severity = "pass", None
        elif abs(deviation) <= c.fail_pct:
            result, severity = "action", c.action_severity
        else:
            result, severity = "fail", c.severity
        text = msg(
            "qc.constancy", result=result, source=c.source.id, nuclide=c.source.nuclide,
            measured=round(measured, 3), expected=round(expected, 3),
            deviation=round(deviation, 2), action=c.action_pct, fail=c.fail_pct,
        )
        if severity is None:
            self._clear(reading.device, reading.channel, text, deviation)
        else:
            self._raise(reading.device, reading.channel, severity, text, deviation, update=True)
        self._audit.record(
            "qc.constancy",
            QC_ACTOR,
            f"{reading.device}/{reading.channel}",
            new={"result": result, "deviation_pct": round(deviation, 4)},
            reason=text.code,
            reason_params=text.params,
            rule=self.name,
            source=c.source.id,
            nuclide=c.source.nuclide,
            measured_mbq=measured,
            expected_mbq=expected,
            measured_at=rfc3339(reading.t),
        )


class DosageEvaluator(RuleRuntime):
    """A settled dosage measurement vs its prescription, decay-corrected to the scheduled time.

    Which prescription: the one armed on the device (`QCEngine.arm_prescription`), else the
    only candidate (same nuclide, this device or any, scheduled within `match_window_s`, not
    yet passed). Several candidates and none armed: nothing is guessed; the measurement is
    recorded in the audit trail as ambiguous.
    """

    config: DosageRule

    def __init__(
        self, config: DosageRule, alerts: AlertManager, nuclides: NuclideTable,
        audit: AuditLog, book: PrescriptionBook,
    ) -> None:  # fmt: skip
        super().__init__(config, alerts)
        self._nuclides = nuclides
        self._audit = audit
        self._book = book
        self._settler = _Settler(config.settle_readings, config.stability_pct, config.session_gap_s)
        self._nuclide: str | None = None

    def on_reading(self, reading: Reading, now: float) -> None:
        """Judge a settled measurement against its prescription."""
        c = self.config
        value = activity_mbq(reading)
        nuclide = normalize_nuclide(reading.nuclide)
        if value is None or nuclide is None:
            return
        if nuclide != self._nuclide:
            self._settler.reset()
            self._nuclide = nuclide
        armed = self._book.armed(reading.device)
        if armed is not None and armed.nuclide == nuclide:
            candidates = [armed]
        else:
            candidates = self._book.candidates(reading.device, nuclide, reading.t, c.match_window_s)
        half_life = self._nuclides.half_life_s(nuclide)
        floor = min(
            (decay_value(p.activity_mbq, (reading.t - p.scheduled).total_seconds(), half_life)
             for p in candidates),
            default=math.inf,
        )  # fmt: skip
        if value < c.min_fraction * floor:
            self._settler.reset()  # background, or the syringe not yet in the chamber
            return
        measured = self._settler.add(value, now)
        if measured is None:
            return
        subject = f"{reading.device}/{reading.channel}"
        if len(candidates) != 1:
            outcome = "unmatched" if not candidates else "ambiguous"
            self._audit.record(
                "qc.dosage", QC_ACTOR, subject,
                new={"result": outcome, "candidates": sorted(p.id for p in candidates)},
                reason="qc.dosage.unmatched",
                reason_params={"measured": round(measured, 3), "nuclide": nuclide,
                               "outcome": outcome},
                rule=self.name, measured_mbq=measured, measured_at=rfc3339(reading.t),
            )  # fmt: skip
            return
        self._judge(candidates[0], reading, measured, half_life)

    def _judge(self, rx: Prescription, reading: Reading, measured: float, half_life: float) -> None:
        c = self.config
        at_schedule = decay_value(measured, (rx.scheduled - reading.t).total_seconds(), half_life)
        deviation = (at_schedule - rx.activity_mbq) / rx.activity_mbq * 100
        if abs(deviation) <= c.site_tolerance_pct:
            result, severity = "pass", None
        elif abs(deviation) <= c.regulatory_limit_pct:
            result, severity = "outside site tolerance", c.site_severity
        else:
            result, severity = "outside regulatory limit", c.severity
        text = msg(
            "qc.dosage", rx=rx.id, result=result, activity=round(at_schedule, 3),
            scheduled_at=rfc3339(rx.scheduled), prescribed=rx.activity_mbq,
            deviation=round(deviation, 1), site=c.site_tolerance_pct,
            limit=c.regulatory_limit_pct,
        )
        rx.result = {
            "result": "pass" if severity is None else "fail",
            "detail": result,
            "deviation_pct": round(deviation, 3),
            "measured_mbq": measured,
            "at_scheduled_mbq": at_schedule,
            "measured_at": rfc3339(reading.t),
        }
        who = self._book.armed_by(reading.device) or "unattended (matched by time and nuclide)"
        self._book.disarm_if(reading.device, rx.id)
        self._book.save(rx)
        self._dispensed(rx, reading, measured, at_schedule, deviation, result, who)
        if severity is None:
            self._clear(reading.device, reading.channel, text, deviation, subject=rx.id)
        else:
            self._raise(
                reading.device, reading.channel, severity, text, deviation,
                subject=rx.id, update=True,
            )  # fmt: skip
        self._audit.record(
            "qc.dosage", QC_ACTOR, f"prescription/{rx.id}", new=rx.result, reason=text.code,
            reason_params=text.params,
            rule=self.name, device=reading.device, channel=reading.channel,
        )  # fmt: skip


    def _dispensed(  # noqa: PLR0917 - what a dispensing record holds
        self, rx: Prescription, reading: Reading, measured: float, at_schedule: float,
        deviation: float, result: str, who: str,
    ) -> None:  # fmt: skip
        record: dict[str, Any] = {
            "id": new_id(),
            "prescription": rx.id,
            "device": reading.device,
            "channel": reading.channel,
            "nuclide": rx.nuclide,
            "t": rfc3339(reading.t),
            "measured_mbq": measured,
            "scheduled": rx.scheduled.isoformat(),
            "at_scheduled_mbq": at_schedule,
            "prescribed_mbq": rx.activity_mbq,
            "deviation_pct": round(deviation, 3),
            "result": result,
            "readings": [reading.id],
            "who": who,
            "calibrator_release": None,
        }
        hook = self._book.on_dispensed
        if hook is not None:
            record = hook(reading.device, record)
        item = self._audit.entry(
            "dosage.dispensed", who, f"prescription/{rx.id}", new=record,
            reason="qc.dosage.dispensed",
            reason_params={"result": result,
                           "release": record.get("calibrator_release") or "no QC programme"},
        )  # fmt: skip
        if self._book.store is not None:
            self._book.store.add_dispensing(record, item)
            self._audit.notify(item)
        else:
            self._audit.submit(item)


class HalfLifeEvaluator(RuleRuntime):
    """Half-life identity from a series of readings of one sample."""

    config: HalfLifeRule

    # Upper bound on points kept for one series (hours at 1 Hz); older points are thinned.
    MAX_POINTS = 20000

    def __init__(self, config: HalfLifeRule, alerts: AlertManager, audit: AuditLog) -> None:
        super().__init__(config, alerts)
        self._audit = audit
        self._t: list[float] = []
        self._a: list[float] = []
        self._judged = False

    def _reset(self) -> None:
        self._t.clear()
        self._a.clear()
        self._judged = False

    def on_reading(self, reading: Reading, now: float) -> None:  # noqa: ARG002
        """Extend the series; fit once it is long enough."""
        c = self.config
        value = activity_mbq(reading)
        if value is None or value < c.min_activity_mbq:
            return
        if normalize_nuclide(reading.nuclide) != c.nuclide:
            self._reset()
            return
        t = reading.t.timestamp()
        if self._t and (
            t - self._t[-1] > c.max_gap_s
            or t < self._t[-1]
            or value > self._a[-1] * (1 + c.jump_pct / 100)
        ):
            self._reset()  # another sample, or a pause: a new series
        self._t.append(t)
        self._a.append(value)
        if len(self._t) > self.MAX_POINTS:
            del self._t[1:-1:2], self._a[1:-1:2]  # keep both ends, thin the middle
        if self._judged or len(self._t) < c.min_points or t - self._t[0] < c.min_span_s:
            return
        self._judged = True
        try:
            # numpy (inside the fit) loads the first time a half-life series is complete.
            from agent.physics import halflife  # noqa: PLC0415

            result = halflife.check_identity(c.nuclide, self._t, self._a, c.window_s)
        except halflife.FitError as exc:
            log.warning("half-life fit failed", rule=self.name, reason=str(exc))
            return
        fit = result.fit
        half_life = None if math.isinf(fit.half_life_s) else fit.half_life_s
        low, high = (w / 60 for w in result.window_s)
        common = {"nuclide": c.nuclide, "points": fit.n_points, "span": round(fit.span_s / 60, 1),
                  "outcome": "within" if result.passed else "OUTSIDE", "low": low, "high": high}
        text = (
            msg("qc.half_life.no_decay", **common) if half_life is None
            else msg("qc.half_life" if result.passed else "qc.half_life.wrong",
                     fit=round(half_life / 60, 2),
                     uncertainty=round(fit.uncertainty_s / 60, 2), **common)
        )
        if result.passed:
            self._clear(reading.device, reading.channel, text, half_life)
        else:
            self._raise(
                reading.device, reading.channel, c.severity, text, half_life,
                update=True,
            )  # fmt: skip
        self._audit.record(
            "qc.half_life", QC_ACTOR, f"{reading.device}/{reading.channel}",
            new={"result": "pass" if result.passed else "fail", "half_life_s": half_life,
                 "uncertainty_s": None if half_life is None else fit.uncertainty_s,
                 "conclusive": result.conclusive},
            reason=text.code, reason_params=text.params, rule=self.name, nuclide=c.nuclide,
            window_s=list(result.window_s), points=fit.n_points, span_s=fit.span_s,
        )  # fmt: skip
