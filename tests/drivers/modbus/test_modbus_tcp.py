"""Modbus TCP driver against the real simulator on a loopback port."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from helpers import wait_for_condition
from supervised import Supervised

from agent.service.config import parse_config
from drivers.base import Quality
from drivers.numbers import float32_value
from simulators.modbus import ModbusSimulator

pytestmark = pytest.mark.timeout(60)


def device(sim: ModbusSimulator, device_id: str = "hc1", **extra):
    data = sim.device_config(device_id, **{"poll_interval_s": 0.1, "timeout_s": 0.5, **extra})
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": [data]}).devices[0]


@pytest.fixture
async def hotcell():
    sim = ModbusSimulator("hotcell", transport="tcp", seed=7)
    await sim.start()
    yield sim
    await sim.stop()


async def test_reads_are_coalesced(hotcell):
    # The hot-cell map has 8 points in 3 tables: input 0..13 fits one request within max_gap.
    async with Supervised(device(hotcell)) as run:
        await wait_for_condition(lambda: len(run.channel("door_closed")) >= 5)
    polls = len(run.channel("door_closed"))
    total = hotcell.requests.total(1)
    assert polls * 3 <= total <= (polls + 1) * 3
    assert {(fc, address, count) for _, fc, address, count in hotcell.requests.recent} == {
        (3, 0, 1),
        (4, 0, 14),
        (2, 0, 2),
    }


async def test_gap_and_request_limits_split_reads(hotcell):
    config = device(hotcell, max_gap=0, max_registers_per_request=4)
    async with Supervised(config) as run:
        await wait_for_condition(lambda: len(run.channel("door_closed")) >= 3)
    requests = {(fc, address, count) for _, fc, address, count in hotcell.requests.recent}
    # input 0..5 (6 registers) splits at the 4-register limit; input 10..13 is past the gap.
    assert requests == {(3, 0, 1), (4, 0, 4), (4, 4, 2), (4, 10, 4), (2, 0, 2)}


async def test_values_decode_in_every_byte_and_word_order(hotcell):
    hotcell.set_stuck(True)
    truth = hotcell.current_values(1)
    async with Supervised(device(hotcell)) as run:
        await wait_for_condition(lambda: len(run.channel("interlock_ok")) >= 1)
    latest = {s.channel: s for s in run.samples}
    assert all(s.quality is Quality.GOOD for s in latest.values())
    # float32 CDAB: the shortest decimal of the float32; float64 DCBA: in full, exactly.
    f32 = struct.unpack("<f", struct.pack("<f", truth["dose_rate_outside"]))[0]
    assert latest["dose_rate_outside"].value == float32_value(f32)
    assert latest["extract_flow"].value == truth["extract_flow"]
    # Integer registers quantise to their scale.
    assert latest["cell_pressure"].value == pytest.approx(truth["cell_pressure"], abs=0.05)
    assert latest["temperature"].value == pytest.approx(truth["temperature"], abs=0.05)
    assert latest["particles_0_5um"].value == round(truth["particles_0_5um"])
    assert latest["door_closed"].value is truth["door_closed"]
    assert latest["cell_pressure"].unit == "Pa"
    assert latest["cell_pressure"].raw_text.startswith("ir 0: ")


async def test_held_values_are_read_anew_every_poll_and_a_change_shows_at_once(hotcell):
    # The driver decodes a block once while its registers repeat: every poll is still a
    # reading of its own (its own time), and the first poll after a change has the new value.
    hotcell.set_stuck(True)
    held = hotcell.current_values(1)["cell_pressure"]
    async with Supervised(device(hotcell)) as run:
        await wait_for_condition(lambda: len(run.channel("cell_pressure")) >= 4)
        repeats = run.channel("cell_pressure")[:4]
        assert len({s.t for s in repeats}) == 4
        assert len({s.value for s in repeats}) == 1
        assert repeats[0].value == pytest.approx(held, abs=0.05)
        assert len({s.raw_text for s in repeats}) == 1
        seen = len(run.channel("cell_pressure"))
        hotcell.set_stuck(False)
        await wait_for_condition(
            lambda: any(s.value != repeats[0].value for s in run.channel("cell_pressure")[seen:])
        )
        changed = next(s for s in run.channel("cell_pressure")[seen:]
                       if s.value != repeats[0].value)
        assert changed.raw_text != repeats[0].raw_text
        assert changed.quality is Quality.GOOD


async def test_exception_response_becomes_bad_sample_with_its_name(hotcell):
    hotcell.set_exception(6)
    async with Supervised(device(hotcell)) as run:
        await wait_for_condition(lambda: len(run.channel("cell_pressure")) >= 2)
        bad = run.channel("cell_pressure")[-1]
        assert bad.quality is Quality.BAD
        assert bad.value is None
        assert bad.reason == "modbus exception 6 (DEVICE_BUSY)"
        hotcell.set_exception(None)
        await wait_for_condition(lambda: run.channel("cell_pressure")[-1].quality is Quality.GOOD)
    assert run.errors == []  # an exception response is an answer: the link is fine


async def test_readings_resume_after_server_restart(hotcell):
    async with Supervised(device(hotcell)) as run:
        await wait_for_condition(lambda: len(run.channel("cell_pressure")) >= 2)
        await hotcell.set_down(True)
        await wait_for_condition(lambda: len(run.errors) >= 1, timeout=5)
        await asyncio.sleep(1.0)
        count = len(run.samples)
        await hotcell.set_down(False)
        restarted = time.monotonic()
        await wait_for_condition(lambda: len(run.samples) > count + 8, timeout=10)
    assert time.monotonic() - restarted < 10
    assert run.samples[-1].quality is Quality.GOOD


async def test_slow_responses_time_out_then_recover(hotcell):
    hotcell.set_delay(0.8)  # longer than the 0.3 s timeout
    async with Supervised(device(hotcell, timeout_s=0.3, retries=0)) as run:
        await wait_for_condition(lambda: len(run.errors) >= 1, timeout=5)
        assert "not answering" in run.errors[0]
        hotcell.set_delay(0.0)
        count = len(run.samples)
        await wait_for_condition(lambda: len(run.samples) > count + 8, timeout=10)
    assert run.samples[-1].quality is Quality.GOOD
