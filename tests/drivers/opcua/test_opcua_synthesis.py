"""OPC UA driver against the real synthesis-module simulator on a loopback port."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from helpers import wait_for_condition
from supervised import Supervised

from agent.physics import half_life_s
from agent.service.config import parse_config
from drivers.base import Quality, SampleKind
from simulators.opcua import FDG_STEPS, FdgRun, SynthesisModuleSimulator

pytestmark = pytest.mark.timeout(60)


def device(sim: SynthesisModuleSimulator, **extra):
    settings = {"publishing_interval_ms": 100, "timeout_s": 2.0, **extra}
    data = sim.device_config("synth-1", **settings)
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": [data]}).devices[0]


def test_fdg_run_follows_f18_decay():
    run = FdgRun(__import__("random").Random(1))
    activity, yield_pct = run.eos()
    expected = run.a0 * yield_pct / 100 * 0.5 ** (run.total_s / half_life_s("F-18"))
    assert activity == pytest.approx(expected)
    assert [s.name for s in FDG_STEPS] == ["trap", "elute", "label", "hydrolyse", "purify"]
    later = run.activities(run.total_s)["activity_product"]
    assert later == pytest.approx(activity, rel=1e-9)


async def test_values_and_batch_events_of_a_whole_run(module):
    async with Supervised(device(module), backoff_s=0.5) as run:
        # Start a fresh batch once subscribed, so the whole run is seen from its start.
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 1)
        module.start_new_run()
        batch = module.batch_id

        def this_batch():
            return [s for s in run.channel("batch") if s.attrs.get("batch_id") == batch]

        await wait_for_condition(
            lambda: any(s.value == "EndOfSynthesis" for s in this_batch()), timeout=20
        )
    events = this_batch()
    assert all(s.kind is SampleKind.EVENT for s in events)
    names = [s.value for s in events]
    assert names[0] == "RunStarted"
    steps = [s.attrs["step"] for s in events if s.value == "StepChanged"]
    assert steps == ["trap", "elute", "label", "hydrolyse", "purify"]
    eos = next(s for s in events if s.value == "EndOfSynthesis")
    assert eos.attrs["batch_id"].startswith("FDG-")
    assert eos.attrs["eos_activity"] > 1000
    assert eos.attrs["eos_activity_unit"] == "MBq"
    assert 50 < eos.attrs["yield_pct"] < 80
    assert datetime.fromisoformat(eos.attrs["eos_time"]).tzinfo is not None
    assert eos.attrs["eos_time"].endswith("Z")  # RFC 3339 in UTC with Z, not +00:00
    assert eos.nuclide == "F-18"
    temps = run.channel("reactor_temperature")
    assert temps[-1].unit == "Cel"
    assert max(s.value for s in temps) > 80  # labelling / drying heat the reactor
    assert run.channel("reactor_pressure")[0].unit == "kPa"
    assert run.channel("activity_product")[-1].nuclide == "F-18"
    assert run.errors == []


async def test_status_codes_map_to_quality(module):
    module.set_status("reactor_pressure", "BadSensorFailure")
    module.set_status("reactor_temperature", "UncertainLastUsableValue")
    async with Supervised(device(module), backoff_s=0.5) as run:
        # The subscription's first notification may still carry the value from before the
        # fault took effect in the simulator: wait for the faulted notifications themselves.
        await wait_for_condition(
            lambda: (
                any(s.quality is Quality.BAD for s in run.channel("reactor_pressure"))
                and any(s.quality is Quality.UNCERTAIN for s in run.channel("reactor_temperature"))
                and bool(run.channel("supply_pressure"))
            )
        )
        bad = next(s for s in run.channel("reactor_pressure") if s.quality is Quality.BAD)
        assert (bad.quality, bad.value, bad.reason) == (Quality.BAD, None, "BadSensorFailure")
        uncertain = next(
            s for s in run.channel("reactor_temperature") if s.quality is Quality.UNCERTAIN
        )
        assert uncertain.quality is Quality.UNCERTAIN
        assert isinstance(uncertain.value, float)
        assert uncertain.reason == "UncertainLastUsableValue"
        assert run.channel("supply_pressure")[-1].quality is Quality.GOOD
        module.set_status("reactor_pressure", None)
        await wait_for_condition(
            lambda: run.channel("reactor_pressure")[-1].quality is Quality.GOOD
        )


async def test_deadband_suppresses_small_changes(module):
    config = device(module)
    nodes = [
        n.model_copy(update={"deadband": 1000.0, "sampling_interval_ms": 50})
        if n.channel == "supply_pressure"
        else n.model_copy(update={"sampling_interval_ms": 50})
        for n in config.nodes
    ]
    async with Supervised(config.model_copy(update={"nodes": nodes}), backoff_s=0.5) as run:
        await wait_for_condition(lambda: len(run.channel("reactor_pressure")) >= 10)
    # supply pressure wobbles by ~2 kPa: only the initial value passes a 1000 kPa deadband.
    assert len(run.channel("supply_pressure")) == 1


@pytest.mark.parametrize("timestamps", ["source", "server"])
async def test_timestamp_selection(timestamps):
    sim = SynthesisModuleSimulator(time_scale=1.0, source_lag_s=30.0, update_interval_s=0.1)
    await sim.start()
    try:
        async with Supervised(device(sim, timestamps=timestamps), backoff_s=0.5) as run:
            await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 2)
    finally:
        await sim.stop()
    lag = (datetime.now(UTC) - run.channel("supply_pressure")[-1].t).total_seconds()
    if timestamps == "source":
        assert 29 < lag < 35
    else:
        assert lag < 5


async def test_stuck_values_stop_notifications(module):
    async with Supervised(device(module), backoff_s=0.5) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 3)
        module.set_stuck(True)
        await asyncio.sleep(0.5)
        count = len(run.channel("supply_pressure"))
        await asyncio.sleep(1.0)
        assert len(run.channel("supply_pressure")) == count
        module.set_stuck(False)
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) > count)


@pytest.mark.slow
async def test_readings_resume_after_server_restart(module):
    async with Supervised(device(module, watchdog_interval_s=1.0), backoff_s=0.5) as run:
        await wait_for_condition(lambda: len(run.channel("supply_pressure")) >= 3)
        await module.set_down(True)
        down_at = time.monotonic()
        await wait_for_condition(lambda: len(run.errors) >= 1, timeout=8)
        detected = time.monotonic() - down_at
        await asyncio.sleep(1.0)
        await module.set_down(False)
        restarted = time.monotonic()
        count = len(run.channel("supply_pressure"))
        await wait_for_condition(
            lambda: len(run.channel("supply_pressure")) > count + 2, timeout=10
        )
    assert detected < 5
    assert time.monotonic() - restarted < 10
    assert run.channel("supply_pressure")[-1].quality is Quality.GOOD
