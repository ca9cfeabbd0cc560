"""Modbus RTU: a shared bus on a real pseudo-terminal pair and RTU framing over TCP."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers import wait_for_condition
from supervised import Supervised

from agent.service.config import parse_config
from drivers.base import Quality
from simulators.modbus import ModbusSimulator

pytestmark = pytest.mark.timeout(60)


def devices(sim: ModbusSimulator, unit_ids, **extra):
    data = [
        sim.device_config(
            f"am-{unit}",
            unit_id=unit,
            **{"poll_interval_s": 0.2, "timeout_s": 0.2, "retries": 1, **extra},
        )
        for unit in unit_ids
    ]
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": data}).devices


@pytest.mark.parametrize("transport", ["rtu_pty", "rtu_tcp"])
async def test_rtu_reads_every_unit(transport):
    sim = ModbusSimulator("area_monitor", transport=transport, unit_ids=(1, 2), seed=5)
    address = await sim.start()
    try:
        if transport == "rtu_pty":
            assert address.startswith("/dev/pts/")
        else:
            assert address.startswith("rtu+tcp://127.0.0.1:")
        configs = devices(sim, (1, 2))
        async with Supervised(configs[0]) as one, Supervised(configs[1]) as two:
            await wait_for_condition(
                lambda: len(one.channel("dose_rate")) >= 3 and len(two.channel("dose_rate")) >= 3
            )
    finally:
        await sim.stop()
    for run in (one, two):
        assert run.errors == []
        assert all(s.quality is Quality.GOOD for s in run.samples)
        assert 0 < run.channel("dose_rate")[-1].value < 100
        assert run.channel("channel_ok")[-1].value is True
    assert sim.requests.total(1) > 0
    assert sim.requests.total(2) > 0


async def test_silent_unit_does_not_stall_the_others_on_a_shared_pty_bus():
    sim = ModbusSimulator("area_monitor", transport="rtu_pty", unit_ids=(1, 2, 3), seed=6)
    await sim.start()
    try:
        configs = devices(sim, (1, 2, 3))
        # Baseline rate of unit 1 with every unit answering.
        async with Supervised(configs[0]) as base:
            await wait_for_condition(lambda: len(base.channel("dose_rate")) >= 2)
            start, n0 = time.monotonic(), len(base.channel("dose_rate"))
            await asyncio.sleep(2.0)
            baseline = (len(base.channel("dose_rate")) - n0) / (time.monotonic() - start)

        sim.set_silent(3)
        async with (
            Supervised(configs[0], backoff_s=0.1) as one,
            Supervised(configs[1], backoff_s=0.1) as two,
            Supervised(configs[2], backoff_s=0.1) as dead,
        ):
            await wait_for_condition(lambda: len(one.channel("dose_rate")) >= 2)
            start = time.monotonic()
            n1, n2 = len(one.channel("dose_rate")), len(two.channel("dose_rate"))
            await asyncio.sleep(4.0)
            elapsed = time.monotonic() - start
            rate1 = (len(one.channel("dose_rate")) - n1) / elapsed
            rate2 = (len(two.channel("dose_rate")) - n2) / elapsed
            probes = sim.requests.total(3)
    finally:
        await sim.stop()
    assert baseline > 3.5  # 0.2 s poll interval
    # The answering units keep (nearly) their poll rate while unit 3 is silent ...
    assert rate1 > 0.75 * baseline
    assert rate2 > 0.75 * baseline
    assert one.errors == []
    assert two.errors == []
    # ... and the silent unit is reported and probed ever less often (backoff), not every poll.
    assert dead.errors
    assert all("not answering" in e for e in dead.errors)
    assert dead.samples == []
    assert probes < 20
