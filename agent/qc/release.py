"""The release state of a calibrator: a pure function of its programme, history and the time.

A calibrator is `released` only when today's daily tests passed and are signed; a test at
action level (with `hold_on_action`) or failed, or a periodic test overdue, holds it
(`on_hold`, with every reason and since when). `compute_release` reads nothing but its
arguments and returns a `ReleaseState` (frozen): the QA desk keeps the last one per calibrator,
compares it with the new one and announces the change. Other record kinds (an eluate, a batch)
compute their own release the same way: a pure function to a typed state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

from agent.core.i18n import N_
from agent.core.messages import Message, as_message
from agent.core.reading import rfc3339
from agent.qc.programme import SCHEDULE_PERIOD, TEST_KINDS

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from agent.qc.programme import CalibratorProgramme


class Release(StrEnum):
    """Whether a calibrator may be used for patient doses."""

    RELEASED = "released"
    ON_HOLD = "on_hold"


class HoldCause(IntEnum):
    """Why a calibrator is held, in order of priority (the first is listed first)."""

    FAILED = 0  # a test failed (or at action level with hold_on_action), not passed since
    NOT_PASSED_TODAY = 1  # a daily test has no signed pass today
    OVERDUE = 2  # a periodic test is past its due date


@dataclass(frozen=True)
class Hold:
    """One reason a calibrator is held."""

    cause: HoldCause
    since: datetime
    reason: str  # plain text (logs, the audit trail)
    text: tuple[str, Mapping[str, Any]]  # catalog id and parameters (the console translates)


@dataclass
class TestHistory:
    """What the release of one (calibrator, test) depends on."""

    __test__ = False  # not a pytest class

    # (t, result, summary) of the last result; the summary a message (a plain text shows as is)
    result: tuple[datetime, str, Message | str] | None = None
    last_pass: datetime | None = None  # last signed pass


@dataclass(frozen=True)
class ReleaseState:
    """A calibrator's release state at one time."""

    release: Release
    since: datetime
    holds: tuple[Hold, ...] = ()
    due: Mapping[str, str] = field(default_factory=dict)  # test -> RFC 3339 due time

    @property
    def held(self) -> bool:
        """True when on hold."""
        return self.release is Release.ON_HOLD

    @property
    def failed(self) -> bool:
        """True when held because a test failed (an alarm, not a warning)."""
        return any(h.cause is HoldCause.FAILED for h in self.holds)

    @property
    def reason(self) -> str:
        """Every reason, in priority order, as plain text."""
        if not self.holds:
            return "today's daily tests passed and signed"
        return "; ".join(h.reason for h in self.holds)

    @property
    def reasons(self) -> list[list[Any]]:
        """Every reason as `[catalog id, parameters]` (the console translates them)."""
        if not self.holds:
            return [[N_("today's daily tests passed and signed"), {}]]
        return [[h.text[0], dict(h.text[1])] for h in self.holds]

    def same_announcement(self, other: ReleaseState | None) -> bool:
        """True when `other` announces the same (release and reasons; due times aside)."""
        return other is not None and (
            other.release is self.release and other.reason == self.reason
        )

    def as_status(self) -> dict[str, Any]:
        """The calibrator's object in the retained status and the console (CONTRACT §5)."""
        return {
            "release": self.release.value,
            "reason": self.reason,
            "reasons": self.reasons,
            "since": rfc3339(self.since),
            "due": dict(self.due),
        }


def compute_release(  # noqa: C901, PLR0912, PLR0917 - one pass over the programme's tests
    programme: CalibratorProgramme,
    history: Mapping[str, TestHistory],
    repaired: datetime | None,
    now: datetime,
    zone: ZoneInfo,
    hold_on_action: bool,
) -> ReleaseState:
    """The release state of one calibrator at `now` (pure: reads only its arguments).

    `history`: per test kind, its last result and last signed pass; `repaired`: when the
    calibrator was last repaired (tests scheduled `after_repair` are due then).
    """
    today = now.astimezone(zone).date()
    day_start = datetime.combine(today, time(0), zone).astimezone(UTC)
    next_day = datetime.combine(today + timedelta(days=1), time(0), zone).astimezone(UTC)
    due: dict[str, str] = {}
    holds: list[Hold] = []
    released_since: datetime | None = None
    for kind in TEST_KINDS:
        spec = programme.test(kind)
        if spec is None:
            continue
        latest = history.get(kind, TestHistory())
        last_pass = latest.last_pass
        if spec.last_performed is not None and (
            last_pass is None or spec.last_performed > last_pass
        ):
            last_pass = spec.last_performed
        if latest.result is not None:
            t, result, summary = latest.result
            bad = result == "fail" or (result == "action" and hold_on_action)
            if bad and (last_pass is None or t > last_pass):
                holds.append(Hold(
                    HoldCause.FAILED, t, f"{kind} {result} at {rfc3339(t)}: {summary}",
                    (N_("{test} {result} at {time}: {summary}"),
                     {"test": kind, "result": result, "time": rfc3339(t),
                      "summary": as_message(summary).as_data()}),
                ))  # fmt: skip
        if "daily" in spec.schedules:
            if last_pass is not None and last_pass >= day_start:
                due[kind] = rfc3339(next_day)
                released_since = max(released_since or last_pass, last_pass)
            else:
                due[kind] = rfc3339(day_start)
                pending = (
                    latest.result is not None and latest.result[0] >= day_start
                    and latest.result[1] == "pass"
                )  # fmt: skip
                why = "passed, awaiting signature" if pending else "not passed yet today"
                text = (N_("daily {test}: passed, awaiting signature") if pending
                        else N_("daily {test}: not passed yet today"))  # fmt: skip
                holds.append(Hold(HoldCause.NOT_PASSED_TODAY, day_start, f"daily {kind}: {why}",
                                  (text, {"test": kind})))  # fmt: skip
            continue
        periods = [SCHEDULE_PERIOD[s] for s in spec.schedules if s in SCHEDULE_PERIOD]
        due_t: datetime | None = None
        if last_pass is None:
            due_t = day_start if "installation" in spec.schedules or periods else None
        elif periods:
            due_t = last_pass + min(periods)
        if (
            "after_repair" in spec.schedules and repaired is not None
            and (last_pass is None or repaired > last_pass)
        ):  # fmt: skip
            due_t = repaired if due_t is None else min(due_t, repaired)
        if due_t is not None:
            due[kind] = rfc3339(due_t)
            if due_t <= now:
                holds.append(Hold(
                    HoldCause.OVERDUE, due_t, f"{kind} overdue since {rfc3339(due_t)}",
                    (N_("{test} overdue since {time}"), {"test": kind, "time": rfc3339(due_t)}),
                ))  # fmt: skip
    if holds:
        holds.sort(key=lambda h: (h.cause, h.since))
        return ReleaseState(
            Release.ON_HOLD, min(h.since for h in holds), tuple(holds), due
        )
    return ReleaseState(Release.RELEASED, released_since or now, (), due)


__all__ = ["Hold", "HoldCause", "Release", "ReleaseState", "TestHistory", "compute_release"]
