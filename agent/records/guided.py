"""Guided steps shared by the record kinds: the instrument's own readings complete them.

A `settled` step completes on N consecutive readings on the step's setting (a dose
calibrator's nuclide selector) whose spread is within max(stability % of their mean, an
absolute floor), as the QC desk's guided tests do; a reading on another setting starts over.
A `series` step keeps one reading per interval until it has N (a half-life fit). A `count`
step keeps the next N readings as they are (an area monitor's survey: the scatter is the
measurement). Nothing is taken before the operator's go-ahead: a background cannot be
measured with the container still in front of the probe.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog

from agent.core.reading import rfc3339


@dataclass(frozen=True, slots=True)
class Settle:
    """When readings count as settled."""

    readings: int
    stability_pct: float
    floor: float

    def agree(self, values: Sequence[float]) -> bool:
        """True when the values' spread is within `stability_pct` of their mean (or the floor)."""
        mean = sum(values) / len(values)
        return max(values) - min(values) <= max(self.stability_pct / 100 * abs(mean), self.floor)


@dataclass
class GuidedStep:
    """One step: what the operator does, and what the instrument measured."""

    index: int
    text: tuple[str, dict[str, str]]  # catalog id and parameters (the page translates)
    confirm: str  # catalog id of the go-ahead button
    kind: str = "settled"  # settled | series | count
    setting: str | None = None  # the nuclide setting the readings must carry (None: any)
    role: str = ""  # what the step measures, for the kind's module (tc99m, mo99, background…)
    state: str = "pending"  # pending | active | done
    confirmed_by: str | None = None
    confirmed_at: datetime | None = None
    measured: float | None = None
    measured_at: datetime | None = None
    unit: str | None = None
    readings: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    series: list[tuple[datetime, float, str]] = field(default_factory=list)
    seen_setting: str | None = None
    seen_value: float | None = None
    _buffer: deque[tuple[float, str]] = field(default_factory=deque, repr=False)

    @property
    def waiting_for_operator(self) -> bool:
        """True until the operator pressed the step's go-ahead."""
        return self.confirmed_at is None

    def confirm_by(self, name: str, at: datetime) -> None:
        """The go-ahead: readings count from now."""
        self.confirmed_by, self.confirmed_at = name, at
        self._buffer.clear()
        self.series.clear()

    def feed(
        self,
        value: float,
        reading_id: str,
        t: datetime,
        setting: str | None,
        *,
        settle: Settle,
        interval_s: float = 0.0,
    ) -> bool:
        """Offer one reading; True when it completed the step."""
        self.seen_setting, self.seen_value = setting, value
        if self.waiting_for_operator or self.state == "done":
            return False
        if self.setting is not None and setting != self.setting:
            self._buffer.clear()
            self.series.clear()
            return False
        if self.kind == "series":
            return self._feed_series(value, reading_id, t, settle.readings, interval_s)
        return self._feed_buffer(value, reading_id, t, settle)

    def _feed_series(
        self, value: float, reading_id: str, t: datetime, points: int, interval_s: float
    ) -> bool:
        last = self.series[-1][0] if self.series else None
        if last is None or (t - last).total_seconds() >= interval_s:
            self.series.append((t, value, reading_id))
        if len(self.series) < points:
            return False
        self.measured, self.measured_at = self.series[0][1], self.series[0][0]
        self.readings = [rid for _, _, rid in self.series]
        self.values = [v for _, v, _ in self.series]
        self.state = "done"
        return True

    def _feed_buffer(self, value: float, reading_id: str, t: datetime, settle: Settle) -> bool:
        self._buffer.append((value, reading_id))
        if self.kind == "count":
            if len(self._buffer) < settle.readings:
                return False
        else:
            while len(self._buffer) > settle.readings:
                self._buffer.popleft()
            if len(self._buffer) < settle.readings:
                return False
            if not settle.agree([v for v, _ in self._buffer]):
                return False
        self.values = [v for v, _ in self._buffer]
        self.measured = sum(self.values) / len(self.values)
        self.measured_at = t
        self.readings = [rid for _, rid in self._buffer]
        self.state = "done"
        return True

    def as_dict(self) -> dict[str, Any]:
        """JSON form (console)."""
        return {
            "index": self.index,
            "role": self.role,
            "setting": self.setting,
            "instruction_i18n": [self.text[0], self.text[1]],
            "confirm": self.confirm,
            "kind": self.kind,
            "state": self.state,
            "confirmed_by": self.confirmed_by,
            "confirmed_at": None if self.confirmed_at is None else rfc3339(self.confirmed_at),
            "measured": self.measured,
            "measured_at": None if self.measured_at is None else rfc3339(self.measured_at),
            "unit": self.unit,
            "readings": list(self.readings),
            "points": len(self.series) if self.kind == "series" else len(self._buffer),
            "seen_setting": self.seen_setting,
            "seen_value": self.seen_value,
        }


def current(steps: list[GuidedStep]) -> GuidedStep | None:
    """The first step not done."""
    return next((s for s in steps if s.state != "done"), None)


def advance(steps: list[GuidedStep]) -> bool:
    """After a step completed: activate the next; True when all are done."""
    following = current(steps)
    if following is None:
        return True
    following.state = "active"
    return False


def utc_now() -> datetime:
    """The desks' default clock."""
    return datetime.now(UTC)


def tell(listener: Callable[[], None] | None, what: str) -> None:
    """Tell a desk's change listener (the live view is a mirror: a failure is only logged)."""
    if listener is not None:
        try:
            listener()
        except Exception:
            structlog.get_logger("isoedge.records").exception(f"{what} change listener failed")


class GuidedRun:
    """What the guided runs of the kinds share (a base of their dataclasses, no fields)."""

    id: str
    device: str
    started: datetime
    started_by: str
    steps: list[GuidedStep]
    state: str
    draft: dict[str, Any] | None
    record_id: str | None

    @property
    def current(self) -> GuidedStep | None:
        """The step waiting for its measurement."""
        return current(self.steps)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the console (the kinds add their own fields)."""
        return self.guided_dict()

    def guided_dict(self) -> dict[str, Any]:
        """The console's JSON of what every guided run has (the kind adds its own)."""
        return {
            "id": self.id,
            "device": self.device,
            "started": rfc3339(self.started),
            "started_by": self.started_by,
            "state": self.state,
            "steps": [s.as_dict() for s in self.steps],
            "current_step": None if self.current is None else self.current.index,
            "draft": self.draft,
            "record_id": self.record_id,
        }


R = TypeVar("R", bound=GuidedRun)


class GuidedDesk(Generic[R]):
    """The runs of one kind's guided measurements in this session, and their change listener."""

    what = "guided"
    """The kind, for the log."""

    def __init__(self, now: Callable[[], datetime], on_change: Callable[[], None] | None) -> None:
        self._now = now
        self.on_change = on_change
        self._runs: dict[str, R] = {}
        self._lock = threading.RLock()

    def runs(self) -> list[R]:
        """Runs of this session, newest first."""
        return sorted(self._runs.values(), key=lambda r: r.started, reverse=True)

    def _changed(self) -> None:
        tell(self.on_change, self.what)


__all__ = [
    "GuidedDesk", "GuidedRun", "GuidedStep", "Settle", "advance", "current", "tell", "utc_now",
]  # fmt: skip
