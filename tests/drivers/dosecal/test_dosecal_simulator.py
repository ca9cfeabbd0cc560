"""The dose calibrator simulator itself: CLI entry, physics, and lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math

import pytest
from helpers import wait_for_condition

from agent.physics import half_life_s
from drivers.dosecal.capintec_crc15.driver import CapintecCRC15Config, CapintecCRC15Driver
from simulators import SIMULATOR_MODULES
from simulators.dosecal import Chamber, DoseCalibratorSimulator, add_arguments, parse_activity, run


def test_registered():
    assert SIMULATOR_MODULES["dosecal"] == "simulators.dosecal"


def test_parse_activity():
    assert parse_activity("370 MBq") == 370.0
    assert parse_activity("10mCi") == pytest.approx(370.0)
    assert parse_activity("2") == 2.0
    with pytest.raises(ValueError):
        parse_activity("10 furlongs")


def test_chamber_decays_with_the_nuclide_half_life():
    chamber = Chamber("F-18", 1000.0, background_mbq=0.0, noise=False, time_scale=1.0)
    chamber.t0 -= half_life_s("F-18")  # loaded one half-life ago
    assert chamber.true_activity_mbq() == pytest.approx(500.0, rel=1e-4)
    assert chamber.displayed_mbq() == pytest.approx(500.0, rel=1e-4)


def test_chamber_selector_and_noise():
    chamber = Chamber("Cs-137", 10.0, background_mbq=0.05, noise=True)
    readings = [chamber.displayed_mbq() for _ in range(400)]
    mean = sum(readings) / len(readings)
    sd = math.sqrt(sum((r - mean) ** 2 for r in readings) / (len(readings) - 1))
    assert mean == pytest.approx(10.0, rel=0.01)
    assert 0.02 < sd < 0.1  # Poisson-like: sqrt(10.05 / 4000) ≈ 0.05 MBq
    chamber.noise = False
    chamber.selected_nuclide = "Tc-99m"  # wrong setting: the reading is visibly off
    assert chamber.displayed_mbq() > 2 * chamber.true_activity_mbq()


def test_bad_arguments():
    with pytest.raises(ValueError, match="model"):
        DoseCalibratorSimulator("crc25", "pty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fault"):
        DoseCalibratorSimulator("capintec_crc15", "pty", fault="melted")
    with pytest.raises(ValueError, match="nuclide"):
        DoseCalibratorSimulator("capintec_crc15", "pty", nuclide="Xx-999")


async def test_run_prints_address_and_serves(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--model", "capintec_crc15", "--transport", "tcp", "--activity", "10 mCi", "--unit", "mCi"]
    )
    printed: list[str] = []

    def address() -> str | None:
        printed.append(capsys.readouterr().out)
        for line in "".join(printed).splitlines():
            if line.startswith("dosecal capintec_crc15 listening on "):
                return line.rsplit(" ", 1)[1]
        return None

    task = asyncio.create_task(run(args))
    try:
        await wait_for_condition(lambda: address() is not None)
        url = address()
        assert url is not None
        assert url.startswith("socket://127.0.0.1:")
        config = CapintecCRC15Config(id="c", type="capintec_crc15", port=url, timeout_s=0.5)
        driver = CapintecCRC15Driver(config)
        await driver.connect()
        try:
            samples = driver.samples()
            sample = await anext(samples)
            await samples.aclose()
        finally:
            await driver.close()
        assert sample.unit == "mCi"
        assert sample.value == pytest.approx(10.0, rel=0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_stop_releases_pty_and_port():
    sim = DoseCalibratorSimulator("vdc404", "pty", push_interval_s=0.01)
    path = await sim.start()
    await asyncio.sleep(0.05)
    await sim.stop()
    await sim.stop()  # twice is fine
    tcp = DoseCalibratorSimulator("vik202", "tcp")
    url = await tcp.start()
    await tcp.stop()
    port = int(url.rsplit(":", 1)[1])
    reader_writer = asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(OSError):
        await reader_writer
    assert path.startswith("/dev/")
