"""The release computation: a pure function of a calibrator's programme, history and the time,
to a typed state; hand-computed cases (Europe/Amsterdam, UTC+1 in December)."""

from __future__ import annotations

import dataclasses
import tomllib
from datetime import UTC, datetime

import pytest
from qc_harness import PROGRAMME

from agent.qc.programme import QCSection
from agent.qc.release import HoldCause, Release, TestHistory, compute_release

CONFIG = QCSection.model_validate(tomllib.loads(PROGRAMME))
DC1 = CONFIG.calibrators[0]
NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # 10:00 in Amsterdam
DAY_START = "2026-12-04T23:00:00.000000Z"  # local midnight


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 5, hour, minute, tzinfo=UTC)


def _compute(history, repaired=None, *, hold_on_action=True, now=NOW):
    return compute_release(DC1, history, repaired, now, CONFIG.zone, hold_on_action)


def test_nothing_passed_today_holds_since_local_midnight():
    state = _compute({})
    assert state.release is Release.ON_HOLD
    assert [(h.cause, h.text[1]["test"]) for h in state.holds] == [
        (HoldCause.NOT_PASSED_TODAY, "constancy"), (HoldCause.NOT_PASSED_TODAY, "background")]
    assert not state.failed
    status = state.as_status()
    assert status["since"] == DAY_START
    assert status["due"]["constancy"] == status["due"]["background"] == DAY_START
    assert status["due"]["accuracy"] == "2027-11-21T09:00:00.000000Z"  # last + 366 d
    assert status["reason"] == ("daily constancy: not passed yet today; "
                                "daily background: not passed yet today")
    assert "failed" not in status  # no hidden keys: the status is what the contract shows


def test_signed_passes_release_until_the_next_local_midnight():
    history = {
        "background": TestHistory((_at(8), "pass", "background pass"), _at(8)),
        "constancy": TestHistory((_at(8, 30), "pass", "constancy pass"), _at(8, 30)),
    }
    state = _compute(history)
    assert state.release is Release.RELEASED
    assert state.holds == ()
    assert state.since == _at(8, 30)
    assert state.as_status()["due"]["constancy"] == "2026-12-05T23:00:00.000000Z"
    # A pass not yet signed (no last_pass) still holds, saying so.
    history["constancy"] = TestHistory((_at(8, 30), "pass", "constancy pass"), None)
    assert _compute(history).reasons == [
        ["daily {test}: passed, awaiting signature", {"test": "constancy"}]]


def test_a_failure_after_the_pass_holds_first_and_is_an_alarm():
    history = {
        "background": TestHistory((_at(8), "pass", "bg"), _at(8)),
        "constancy": TestHistory((_at(8, 40), "fail", "constancy fail: +12 %"), _at(8, 30)),
    }
    state = _compute(history)
    assert state.release is Release.ON_HOLD
    assert state.failed
    assert state.holds[0].cause is HoldCause.FAILED
    assert state.since == _at(8, 40)
    assert state.reason.startswith("constancy fail at 2026-12-05T08:40:00.000000Z")
    # At action level the site's policy decides.
    history["constancy"] = TestHistory((_at(8, 40), "action", "constancy action"), _at(8, 30))
    assert _compute(history, hold_on_action=True).failed
    assert _compute(history, hold_on_action=False).release is Release.RELEASED


def test_a_repair_makes_after_repair_tests_due_at_once():
    history = {
        "background": TestHistory((_at(8), "pass", "bg"), _at(8)),
        "constancy": TestHistory((_at(8, 30), "pass", "c"), _at(8, 30)),
    }
    state = _compute(history, repaired=_at(8, 50))
    overdue = [h for h in state.holds if h.cause is HoldCause.OVERDUE]
    # accuracy, linearity, geometry: after_repair; constancy passed before the repair but is
    # daily (its daily pass today stands).
    assert sorted(h.text[1]["test"] for h in overdue) == ["accuracy", "geometry", "linearity"]
    assert all(h.since == _at(8, 50) for h in overdue)
    assert state.since == _at(8, 50)
    assert not state.failed


def test_pure_and_frozen():
    history = {"constancy": TestHistory((_at(8), "fail", "x"), None)}
    first, second = _compute(history), _compute(history)
    assert first == second
    assert history == {"constancy": TestHistory((_at(8), "fail", "x"), None)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.release = Release.RELEASED  # type: ignore[misc]
