"""The dose calibrator simulator's QC side: sources in and out, settings, QC faults, and its
JSON-lines control channel, through the real Capintec driver on a pty."""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers import wait_for_condition
from supervised import Supervised

from drivers.dosecal.capintec_crc15 import CapintecCRC15Config, CapintecCRC15Driver
from simulators.dosecal import DoseCalibratorSimulator


async def _ask(port: int, *commands: dict) -> list[dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for command in commands:
            writer.write(json.dumps(command).encode() + b"\n")
            await writer.drain()
            async with asyncio.timeout(5):
                answers.append(json.loads(await reader.readline()))
    finally:
        writer.close()
    return answers


async def test_control_channel_places_sources_switches_settings_and_injects_faults():
    simulator = DoseCalibratorSimulator("capintec_crc15", "pty", "F-18", 370.0, noise=False)
    address = await simulator.start()
    port = await simulator.start_control()
    config = CapintecCRC15Config(id="dc1", type="capintec_crc15", port=address,
                                 poll_interval_s=0.05, timeout_s=0.5)  # fmt: skip
    try:
        async with Supervised(lambda: CapintecCRC15Driver(config)) as run:
            placed, = await _ask(port, {"cmd": "place", "nuclide": "Cs-137", "activity_mbq": 7.0})
            assert placed["ok"] and placed["sample"] == "Cs-137" and placed["setting"] == "Cs-137"

            def last_value() -> float:
                good = run.good()
                return float(good[-1].value) if good else -1.0

            await wait_for_condition(lambda: abs(last_value() - 7.0) < 0.01)
            drift, setting = await _ask(
                port, {"cmd": "qc_fault", "name": "gain_drift"}, {"cmd": "setting", "nuclide": "F-18"}
            )
            assert drift["qc_faults"] == ["gain_drift"] and setting["setting"] == "F-18"
            # Cs-137 on the F-18 setting reads 0.74 x, and the gain drift adds 7 %.
            await wait_for_condition(lambda: abs(last_value() - 7.0 * 0.74 * 1.07) < 0.01)
            empty, bad = await _ask(port, {"cmd": "empty"}, {"cmd": "qc_fault", "name": "x"})
            assert empty["sample"] is None
            assert not bad["ok"] and "unknown QC fault" in bad["error"]
            await wait_for_condition(lambda: abs(last_value()) < 0.001)
    finally:
        await simulator.stop()


@pytest.mark.parametrize(("mbq", "expected"), [(40_000.0, 40_000.0 * 0.92), (20_000.0, 20_000.0)])
def test_nonlinearity_fault_lowers_only_readings_above_30_gbq(mbq, expected):
    simulator = DoseCalibratorSimulator("capintec_crc15", "pty", "Tc-99m", mbq, noise=False,
                                        background_mbq=0.0)  # fmt: skip
    simulator.set_qc_fault("nonlinearity")
    assert simulator.chamber.displayed_mbq() == pytest.approx(expected, rel=1e-4)
