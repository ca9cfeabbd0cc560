"""Test harness for the dose calibrator drivers: a supervisor loop and the fault scenario.

The supervisor (`tests/supervised.py`) does what the agent's runtime does, minus backoff:
connect, iterate samples, and on `DeviceError` close and retry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from helpers import wait_for_condition
from structlog.testing import capture_logs
from supervised import Supervised

from drivers.base import Driver, Quality
from simulators.dosecal import DoseCalibratorSimulator


def supervised(make_driver: Callable[[], Driver]) -> Supervised:
    """Run a driver under a reconnecting supervisor for the duration of an `async with`."""
    return Supervised(make_driver, backoff_s=0.05)


def assert_good_samples_are_genuine(run: Supervised, simulator: DoseCalibratorSimulator) -> None:
    """Every GOOD sample is finite and is a frame the simulator sent well formed."""
    for sample in run.good():
        assert isinstance(sample.value, float | int), sample
        assert math.isfinite(sample.value), sample
        assert sample.raw_text is not None
        assert simulator.sent_valid(sample.raw_text), f"good sample from a damaged frame: {sample}"
    for sample in run.bad():
        assert sample.value is None
        assert sample.reason


async def fault_scenario(
    model: str,
    transport: str,
    fault: str,
    make_driver: Callable[[str, str], Driver],
    **simulator_options: Any,
) -> tuple[Supervised, Supervised, list[dict[str, Any]]]:
    """Two devices of a model, one faulted: the fault shows, the other flows, both recover."""
    options: dict[str, Any] = {"push_interval_s": 0.05, "slow_reply_s": 0.8}
    options.update(simulator_options)
    faulty = DoseCalibratorSimulator(model, transport, seed=1, **options)  # type: ignore[arg-type]
    healthy = DoseCalibratorSimulator(model, transport, seed=2, **options)  # type: ignore[arg-type]
    faulty_address = await faulty.start()
    healthy_address = await healthy.start()
    try:
        with capture_logs() as logs:
            async with (
                supervised(lambda: make_driver("faulty", faulty_address)) as bad_run,
                supervised(lambda: make_driver("healthy", healthy_address)) as good_run,
            ):
                await wait_for_condition(lambda: len(bad_run.good()) >= 2 and bool(good_run.good()))
                faulty.set_fault(fault)
                mark_samples = len(bad_run.samples)
                mark_status = len(bad_run.statuses)
                mark_errors = len(bad_run.errors)
                mark_healthy = len(good_run.good())
                await wait_for_condition(
                    lambda: len(bad_run.statuses) > mark_status or len(bad_run.errors) > mark_errors
                )
                # The other device keeps flowing while this one is faulted.
                await wait_for_condition(lambda: len(good_run.good(mark_healthy)) >= 3)
                during_fault = bad_run.samples[mark_samples:]
                faulty.set_fault(None)
                mark_recovered = len(bad_run.samples)
                await wait_for_condition(lambda: len(bad_run.good(mark_recovered)) >= 2)
        assert_good_samples_are_genuine(bad_run, faulty)
        assert_good_samples_are_genuine(good_run, healthy)
        assert not good_run.errors, good_run.errors
        assert not any(s.quality is Quality.BAD for s in good_run.samples)
        # Nothing read while the fault lasted is good unless it is a genuine frame.
        for sample in during_fault:
            assert sample.quality is Quality.BAD or faulty.sent_valid(sample.raw_text or "")
        faulty_warnings = [
            entry
            for entry in logs
            if entry.get("device") == "faulty" and entry.get("log_level") == "warning"
        ]
        assert faulty_warnings, "the fault left no warning in the log"
        healthy_warnings = [
            entry
            for entry in logs
            if entry.get("device") == "healthy" and entry.get("log_level") == "warning"
        ]
        assert not healthy_warnings, healthy_warnings
        return bad_run, good_run, logs
    finally:
        await faulty.stop()
        await healthy.stop()

