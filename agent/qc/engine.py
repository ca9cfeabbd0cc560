"""The rule engine the pipeline and runtime call: readings, device states, a 1 Hz tick.

The agent's `rules`. Prescriptions and dispensing are the dosage desk's (`agent.qc.dosage`);
the dosage rule checks measurements against the desk's prescription book.

Synchronous and cheap: rules are indexed by (device, channel) on first sight of a pair, so a
reading no rule is about costs one dict look-up. A rule that raises is logged and skipped;
it never stops the pipeline.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from agent.core.states import LINK_STATES
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
from agent.qc.prescriptions import PrescriptionBook, make_prescription
from agent.qc.rules import (
    QC_ACTOR,
    BackgroundEvaluator,
    ConstancyEvaluator,
    DeviceOfflineEvaluator,
    DosageEvaluator,
    HalfLifeEvaluator,
    RateOfChangeEvaluator,
    RuleRuntime,
    StaleEvaluator,
    ThresholdEvaluator,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from agent.core.reading import Reading
    from agent.physics.nuclides import NuclideTable
    from agent.qc.alerts import AlertManager
    from agent.qc.audit import AuditLog

log = structlog.get_logger("isoedge.qc")



class RuleEngine:
    """Evaluates the configured rules; raises and clears alerts through `alerts`.

    `poll_intervals` maps device id → poll interval (s), for the stale rule. QC results
    (constancy, dosage, half-life) go to `audit` (default: the alert manager's audit log).
    `prescriptions`: the dosage desk's book, which the dosage rule checks against (the
    prescriptions a rule lists in the configuration are added to it).
    """

    def __init__(
        self,
        rules: Sequence[RuleBase],
        alerts: AlertManager,
        nuclides: NuclideTable,
        poll_intervals: Mapping[str, float],
        clock: Callable[[], float] = time.monotonic,
        *,
        audit: AuditLog | None = None,
        prescriptions: PrescriptionBook | None = None,
    ) -> None:
        self.alerts = alerts
        self.audit = audit if audit is not None else alerts.audit
        self.nuclides = nuclides
        self.prescriptions = prescriptions if prescriptions is not None else PrescriptionBook()
        self._clock = clock
        # One dict shared by the stale rules: a reload updates it in place.
        self._polls = polls = dict(poll_intervals)
        now = clock()
        self._rules: list[RuleRuntime] = []
        for rule in rules:
            if rule.enabled:
                self._rules.append(self._build(rule, polls, now))
        self._tickers = [r for r in self._rules if type(r).on_tick is not RuleRuntime.on_tick]
        self._state_watchers = [
            r for r in self._rules if type(r).on_device_state is not RuleRuntime.on_device_state
        ]
        self._index: dict[tuple[str, str], tuple[RuleRuntime, ...]] = {}

    def _build(  # noqa: PLR0911 - one return per rule type reads best
        self, rule: RuleBase, polls: dict[str, float], now: float
    ) -> RuleRuntime:
        alerts = self.alerts
        if isinstance(rule, ThresholdRule):
            return ThresholdEvaluator(rule, alerts)
        if isinstance(rule, BackgroundRule):
            return BackgroundEvaluator(rule, alerts)
        if isinstance(rule, RateOfChangeRule):
            return RateOfChangeEvaluator(rule, alerts)
        if isinstance(rule, StaleRule):
            return StaleEvaluator(rule, alerts, polls, now)
        if isinstance(rule, DeviceOfflineRule):
            return DeviceOfflineEvaluator(rule, alerts)
        if isinstance(rule, ConstancyRule):
            return ConstancyEvaluator(rule, alerts, self.nuclides, self.audit)
        if isinstance(rule, DosageRule):
            for p in rule.prescriptions:
                self.prescriptions.add(
                    make_prescription(
                        p.id, p.nuclide, p.activity, p.unit, p.scheduled, rule.device, p.note,
                        origin=f"config:{rule.name}",
                    ),
                    replace=True, persist=False,
                )  # fmt: skip
            return DosageEvaluator(rule, alerts, self.nuclides, self.audit, self.prescriptions)
        if isinstance(rule, HalfLifeRule):
            return HalfLifeEvaluator(rule, alerts, self.audit)
        raise TypeError(f"no evaluator for rule type {rule.type!r}")

    # ------------------------------------------------------------------ pipeline calls
    def _rules_for(self, device: str, channel: str) -> tuple[RuleRuntime, ...]:
        key = (device, channel)
        rules = self._index.get(key)
        if rules is None:
            rules = self._index[key] = tuple(r for r in self._rules if r.matches(device, channel))
        return rules

    def watches(self, device: str, channel: str) -> bool:
        """True when a rule looks at this channel's readings (others skip QC entirely)."""
        return bool(self._rules_for(device, channel))

    def on_reading(self, reading: Reading) -> None:
        """Evaluate the rules about this reading's device and channel."""
        rules = self._rules_for(reading.device, reading.channel)
        if not rules:
            return
        now = self._clock()
        for rule in rules:
            try:
                rule.on_reading(reading, now)
            except Exception:
                log.exception("QC rule failed on a reading", rule=rule.name, device=reading.device)

    def on_device_state(self, device: str, state: str, detail: str | None = None) -> None:
        """A device's connection state: connecting, online, degraded or offline."""
        if state not in LINK_STATES:
            log.warning("unknown device state", device=device, state=state)
            return
        now = self._clock()
        for rule in self._state_watchers:
            try:
                rule.on_device_state(device, state, detail, now)
            except Exception:
                log.exception("QC rule failed on a device state", rule=rule.name, device=device)

    def set_poll_intervals(self, poll_intervals: Mapping[str, float]) -> None:
        """The enabled devices changed (a reload): their poll intervals, for the stale rules.

        An added device is watched from now (no data for N x its poll interval raises its
        stale alert); a removed one is no longer watched.
        """
        self._polls.clear()
        self._polls.update(poll_intervals)
        now = self._clock()
        for rule in self._rules:
            if isinstance(rule, StaleEvaluator):
                rule.watch_devices(list(poll_intervals), now)

    def tick(self) -> None:
        """Time-based rules (stale data, offline duration); call about once a second."""
        now = self._clock()
        for rule in self._tickers:
            try:
                rule.on_tick(now)
            except Exception:
                log.exception("QC rule failed on tick", rule=rule.name)

    def rule_names(self) -> list[str]:
        """Names of the enabled rules."""
        return [r.name for r in self._rules]


__all__ = ["QC_ACTOR", "RuleEngine"]
