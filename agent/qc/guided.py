"""Guided runs: steps that complete on the instrument's own settled readings.

A guided run lists its steps (place the source, select the setting, confirm). Each step is
completed by the instrument, never typed in: `offer` keeps a reading when it is the step's (its
setting, above the step's floor, after the previous sample was taken out, after the operator's
go-ahead), `settle` completes the step once the last N kept readings agree within the
stability band (the measured value is their mean, the reading ids its evidence), and `advance`
activates the next step. Judging a measured step (against an expected activity, a limit, a
reference) is the record kind's own. The dose-calibrator QC tests use these parts; a generator
elution (the eluate on the Tc-99m setting, then in the Mo-99 canister) is another such run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.messages import Message
from agent.core.reading import rfc3339
from agent.physics.nuclides import normalize_nuclide

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from agent.core.reading import Reading
    from agent.qc.linearity import LinearityResult

RESULT_RANK = {"pass": 0, "action": 1, "fail": 2}
MIN_FRACTION = 0.5  # a reading below this x expected: the source is not (yet) in
REMOVED_FRACTION = 0.1  # below this x the previous measurement: the sample was taken out


@dataclass
class Step:
    """One step of a guided test: what the technologist does and what IsoEdge measured."""

    index: int
    instruction: str
    kind: str  # "source" | "background" | "sample"
    setting: str | None = None
    source: str | None = None
    container: str | None = None
    ratio: float = 1.0
    expected_mbq: float | None = None
    uncertainty_mbq: float | None = None
    requires_removal: bool = False
    state: str = "pending"  # pending | active | done
    measured_mbq: float | None = None
    measured_at: datetime | None = None
    readings: list[str] = field(default_factory=list)
    deviation_pct: float | None = None
    result: str | None = None
    seen_setting: str | None = None
    seen_mbq: float | None = None
    removal_seen: bool = False
    # The operator's go-ahead (a catalog id: "Chamber empty — measure"): until they press it,
    # the step takes no reading (a background cannot fail on a vial still in the chamber).
    confirm: str | None = None
    confirmed_by: str | None = None
    confirmed_at: datetime | None = None
    # The instruction as a catalog id and its parameters (the page shows it translated).
    text: tuple[str, dict[str, str]] | None = None
    _buffer: deque[tuple[float, str]] = field(default_factory=deque, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (console, records)."""
        return {
            "index": self.index,
            "instruction": self.instruction,
            "instruction_i18n": list(self.text) if self.text else None,
            "kind": self.kind,
            "setting": self.setting,
            "source": self.source,
            "container": self.container,
            "expected_mbq": self.expected_mbq,
            "uncertainty_mbq": self.uncertainty_mbq,
            "state": self.state,
            "measured_mbq": self.measured_mbq,
            "measured_at": None if self.measured_at is None else rfc3339(self.measured_at),
            "readings": list(self.readings),
            "deviation_pct": None if self.deviation_pct is None else round(self.deviation_pct, 4),
            "result": self.result,
            "seen_setting": self.seen_setting,
            "seen_mbq": self.seen_mbq,
            "confirm": self.confirm,
            "confirmed_by": self.confirmed_by,
            "confirmed_at": None if self.confirmed_at is None else rfc3339(self.confirmed_at),
        }

    @property
    def waiting_for_operator(self) -> bool:
        """True while the step waits for its operator's go-ahead."""
        return self.confirm is not None and self.confirmed_at is None

    def confirmed(self, by: str, at: datetime) -> None:
        """The operator's go-ahead: the step measures from now (earlier readings dropped)."""
        self.confirmed_by, self.confirmed_at = by, at
        self._buffer.clear()


@dataclass
class TestRun:
    """A test in progress or completed, awaiting its performer's signature."""

    __test__ = False  # not a pytest class

    id: str
    device: str
    test: str
    started: datetime
    started_by: str
    steps: list[Step] = field(default_factory=list)
    state: str = "running"  # running | completed | signed | cancelled
    result: str | None = None
    completed: datetime | None = None
    draft: dict[str, Any] | None = None
    record_id: str | None = None
    summary: Message = field(default_factory=lambda: Message(""))
    # linearity
    time_scale: float = 1.0
    series: list[tuple[datetime, float, str]] = field(default_factory=list)
    linearity: LinearityResult | None = None

    @property
    def current(self) -> Step | None:
        """The step waiting for its measurement."""
        return next((s for s in self.steps if s.state != "done"), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the console."""
        return {
            "id": self.id,
            "device": self.device,
            "test": self.test,
            "started": rfc3339(self.started),
            "started_by": self.started_by,
            "state": self.state,
            "result": self.result,
            "completed": None if self.completed is None else rfc3339(self.completed),
            "summary": self.summary.as_data(),
            "steps": [s.as_dict() for s in self.steps],
            "current_step": None if self.current is None else self.current.index,
            "record_id": self.record_id,
            "draft": self.draft,
            "points": len(self.series),
        }


def make_step(index: int, message: str, params: dict[str, str], kind: str, **fields: Any) -> Step:
    """A step whose instruction is `message` (a catalog id) with `params` filled in."""
    return Step(index, message.format(**params), kind, text=(message, params), **fields)


def offer(run: TestRun, step: Step, reading: Reading, value: float) -> bool:
    """Keep the reading for the step's measurement when it is the step's (else reset).

    Records what the instrument shows (`seen_setting`, `seen_mbq`) either way. Not kept:
    before the operator's go-ahead; before the previous sample was taken out (a step that
    `requires_removal`); on another setting or below half the expected activity (the buffer
    restarts: the source is not in yet).
    """
    nuclide = normalize_nuclide(reading.nuclide)
    step.seen_setting, step.seen_mbq = nuclide, value
    if step.waiting_for_operator:
        return False
    buffer = step._buffer  # noqa: SLF001 - the step's own buffer
    if step.requires_removal and not step.removal_seen:
        previous = run.steps[step.index - 2].measured_mbq or 0.0
        step.removal_seen = value < REMOVED_FRACTION * previous
        return False
    if step.kind != "background":
        floor = MIN_FRACTION * step.expected_mbq if step.expected_mbq else 1.0
        if (step.setting is not None and nuclide != step.setting) or value < floor:
            buffer.clear()
            return False
    buffer.append((value, reading.id))
    return True


def settle(
    step: Step, readings: int, stability_pct: float, min_spread: float, at: datetime
) -> bool:
    """Complete `step` when its last `readings` kept values agree; True when it did.

    They agree when their spread is within `stability_pct` of their mean (or `min_spread`,
    for a background near zero). The measurement is their mean at `at`, with their ids.
    """
    buffer = step._buffer  # noqa: SLF001 - the step's own buffer
    while len(buffer) > readings:
        buffer.popleft()
    if len(buffer) < readings:
        return False
    values = [v for v, _ in buffer]
    mean = sum(values) / len(values)
    allowed = max(stability_pct / 100 * abs(mean), min_spread)
    if max(values) - min(values) > allowed:
        return False
    step.measured_mbq, step.measured_at = mean, at
    step.readings = [rid for _, rid in buffer]
    step.state = "done"
    return True


def advance(run: TestRun) -> bool:
    """Activate the run's next step; True when every step is done."""
    following = run.current
    if following is None:
        return True
    following.state = "active"
    return False


def overall_result(steps: Sequence[Step]) -> str:
    """The worst step result (`pass` < `action` < `fail`; an unjudged step fails)."""
    return max((s.result or "fail" for s in steps), key=RESULT_RANK.__getitem__)


def worst_step(steps: Sequence[Step]) -> Step:
    """The step with the worst result, then the largest deviation."""
    return max(steps, key=lambda s: (RESULT_RANK[s.result or "fail"], abs(s.deviation_pct or 0)))


__all__ = [
    "RESULT_RANK",
    "Step",
    "TestRun",
    "advance",
    "make_step",
    "offer",
    "overall_result",
    "settle",
    "worst_step",
]
