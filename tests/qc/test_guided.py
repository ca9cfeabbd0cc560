"""Guided runs: a step completes only on the instrument's own settled readings of its setting,
after the operator's go-ahead and (when asked) after the previous sample was taken out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.core.reading import Reading
from agent.qc.guided import (
    TestRun,
    advance,
    make_step,
    offer,
    overall_result,
    settle,
    worst_step,
)

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _reading(value: float, nuclide: str = "Tc-99m", second: int = 0) -> Reading:
    return Reading(device="dc1", channel="activity", t=T0 + timedelta(seconds=second),
                   value=value, unit="MBq", quality="good", raw_value=value, raw_unit="MBq",
                   nuclide=nuclide)


def _feed(run: TestRun, values, nuclide="Tc-99m") -> bool:
    """Offer readings to the current step; True when a reading settled it."""
    for i, value in enumerate(values):
        step = run.current
        assert step is not None
        reading = _reading(value, nuclide, i)
        if offer(run, step, reading, value) and settle(step, 3, 2.0, 0.0, reading.t):
            return True
    return False


def _run() -> TestRun:
    run = TestRun("r1", "dc1", "elution", T0, "tess")
    run.steps = [
        make_step(1, "Place the eluate on the {setting} setting", {"setting": "Tc-99m"},
                  "sample", setting="Tc-99m", expected_mbq=1000.0, confirm="Placed — measure"),
        make_step(2, "Put it in the canister on the {setting} setting", {"setting": "Mo-99"},
                  "sample", setting="Mo-99", expected_mbq=1.0, requires_removal=True),
    ]
    run.steps[0].state = "active"
    return run


def test_a_step_completes_on_settled_readings_of_its_setting_after_the_go_ahead():
    run = _run()
    first = run.steps[0]
    assert first.instruction == "Place the eluate on the Tc-99m setting"
    assert not _feed(run, [1000.0, 1000.0, 1000.0])  # the operator has not confirmed
    assert first.seen_mbq == 1000.0 and first.measured_mbq is None
    first.confirmed("tess", T0)
    assert not _feed(run, [1000.0, 1001.0, 1000.0], nuclide="F-18")  # wrong setting
    assert not _feed(run, [100.0, 100.0, 100.0])  # below half the expected: not in yet
    assert not _feed(run, [900.0, 1000.0, 1100.0])  # not settled: 20 % spread
    assert _feed(run, [1000.0, 1004.0, 996.0])
    assert first.state == "done"
    assert first.measured_mbq == 1000.0
    assert len(first.readings) == 3
    assert not advance(run)
    assert run.current is run.steps[1] and run.steps[1].state == "active"


def test_a_step_after_removal_waits_for_the_sample_to_be_taken_out():
    run = _run()
    run.steps[0].confirmed("tess", T0)
    assert _feed(run, [1000.0] * 3)
    advance(run)
    second = run.steps[1]
    assert not _feed(run, [1000.0, 1000.0, 1000.0, 1000.0], nuclide="Mo-99")  # still in
    assert not second.removal_seen
    assert not _feed(run, [0.5], nuclide="Mo-99")  # taken out: < 10 % of the first
    assert second.removal_seen
    assert _feed(run, [1.2, 1.2, 1.21], nuclide="Mo-99")
    assert advance(run)  # every step done
    run.steps[0].result, second.result = "pass", "action"
    second.deviation_pct = 20.0
    assert overall_result(run.steps) == "action"
    assert worst_step(run.steps) is second
