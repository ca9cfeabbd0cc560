"""Veenstra VIK-202 driver against its simulator over a real pty and real TCP."""

from __future__ import annotations

import asyncio

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition
from pydantic import ValidationError

from drivers.base import DeviceError
from drivers.dosecal.vik202.driver import (
    VIK202Config,
    VIK202Driver,
    parse_vik202_factor,
    parse_vik202_value,
    split_reply,
)
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator

READ_ONLY = {"!R", "!GF", "!GQ", "!V", "!GV", "!A"}


def make_config(device_id: str, address: str, **options) -> VIK202Config:
    settings = {
        "poll_interval_s": 0.05,
        "timeout_s": 0.4,
        "max_consecutive_failures": 2,
        "status_interval_s": None,
    }
    settings.update(options)
    return VIK202Config(id=device_id, type="vik202", port=address, **settings)


def make_driver(device_id: str, address: str) -> VIK202Driver:
    return VIK202Driver(make_config(device_id, address))


def test_golden_published_replies():
    """The byte strings of public working code: `!R` → `>370200000` CR, `!GF` → `>762` CR,
    `!BOFF` / `!F<n>` / `!Z` → `>OK` CR (no `>OK` after data)."""
    m = parse_vik202_value(b">370200000", "Bq")
    assert (m.value, m.unit, m.raw_text) == (370200000.0, "Bq", ">370200000")
    assert parse_vik202_factor(b">762") == 762
    assert split_reply(b">OK") == b"OK"
    assert split_reply(b">370200000") == b"370200000"
    assert split_reply(b"370200000") is None


def test_reply_parsing():
    assert parse_vik202_value(b">1.5E-11", "A").value == 1.5e-11
    assert not parse_vik202_value(b">\xb3.\xb70E+08", "Bq").ok
    assert not parse_vik202_value(b">NaN", "Bq").ok
    assert not parse_vik202_value(b">1e400", "Bq").ok
    assert not parse_vik202_value(b">OK", "Bq").ok
    assert parse_vik202_factor(b">76x") is None


def test_config_validation():
    config = make_config("v", "rfc2217://10.0.0.5:4001")
    assert (config.baudrate, config.parity, config.stopbits) == (9600, "N", 1)
    assert config.calibration_factors["762"] == "F-18"
    assert config.calibration_factors["618"] == "I-123"
    assert config.calibration_factors["902"] == "Y-90"
    assert isinstance(create_driver(config), VIK202Driver)
    with pytest.raises(ValidationError, match="allowed_commands"):
        make_config("v", "/dev/ttyS0", init_commands=["!BON"])
    with pytest.raises(ValidationError, match="stopbits"):
        make_config("v", "/dev/ttyS0", stopbits=3)


def test_state_changing_commands_refused_at_run_time():
    driver = make_driver("v", "/dev/ttyS0")
    for command in READ_ONLY:
        driver.check_command(command)
    for command in ("!BON", "!BOFF", "!Z", "!F762"):
        with pytest.raises(DeviceError, match="refusing"):
            driver.check_command(command)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_activity_nuclide_and_status_channels(transport):
    sim = DoseCalibratorSimulator("vik202", transport, nuclide="F-18", activity_mbq=370.0, seed=9)
    address = await sim.start()
    try:
        config = make_config("vik", address, status_interval_s=0.2)
        async with supervised(lambda: VIK202Driver(config)) as run:
            await wait_for_condition(lambda: len([s for s in run.good() if s.channel == "activity"]) >= 2)
            await wait_for_condition(lambda: {s.channel for s in run.good()} >= {"chamber_current", "hv_battery"})
            sim.set_nuclide("Tc-99m")
            mark = len(run.samples)
            await wait_for_condition(lambda: any(s.nuclide == "Tc-99m" for s in run.good(mark)))
            sim.set_nuclide("Ga-68")  # no calibration factor mapped for it
            mark = len(run.samples)
            await wait_for_condition(
                lambda: any(
                    s.channel == "activity" and s.nuclide is None for s in run.good(mark)
                )
            )
        activity = next(s for s in run.good() if s.channel == "activity")
        assert (activity.unit, activity.nuclide) == ("Bq", "F-18")
        assert activity.attrs == {"calibration_factor": "762"}
        # Background subtraction is off by default on the chamber: background is included.
        assert activity.value == pytest.approx(370.01e6, rel=0.01)
        current = next(s for s in run.good() if s.channel == "chamber_current")
        assert current.unit == "A"
        assert 0 < current.value < 1e-6
        battery = next(s for s in run.good() if s.channel == "hv_battery")
        assert battery.unit == "V"
        assert set(sim.commands) <= READ_ONLY
        assert not run.bad()
    finally:
        await sim.stop()


async def test_golden_r_reply_from_the_wire_is_read(tmp_path):
    """A chamber answering exactly as published (`>762` CR, `>370200000` CR) over a pty."""
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    received = bytearray()
    replies = {b"!GF": b">762\r", b"!R": b">370200000\r"}

    def on_readable() -> None:
        received.extend(os.read(master, 1024))
        while b"\r" in received:
            command, _, rest = bytes(received).partition(b"\r")
            received[:] = rest
            os.write(master, replies.get(command, b">ERR\r"))

    loop.add_reader(master, on_readable)
    try:
        config = make_config("vik", os.ttyname(slave))
        async with supervised(lambda: VIK202Driver(config)) as run:
            await wait_for_condition(lambda: len(run.samples) >= 2)
        sample = run.samples[0]
        assert sample.quality.value == "good", sample
        assert (sample.value, sample.unit, sample.nuclide) == (370200000.0, "Bq", "F-18")
        assert sample.raw_text == ">370200000"
        assert not run.errors and not run.statuses
    finally:
        loop.remove_reader(master)
        os.close(master)
        os.close(slave)


async def test_allowed_background_subtraction_is_switched_on():
    sim = DoseCalibratorSimulator("vik202", "pty", background_mbq=5.0, noise=False)
    address = await sim.start()
    try:
        config = make_config("vik", address, init_commands=["!BON"], allowed_commands=["!bon"])
        async with supervised(lambda: VIK202Driver(config)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 1)
        assert "!BON" in sim.commands
        assert sim.chamber.background_subtraction
        assert run.good()[0].value == pytest.approx(370.0e6, rel=1e-3)
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good_run, _logs = await fault_scenario("vik202", transport, fault, make_driver)
    if fault in ("garbage", "wrong_length", "corrupt"):
        assert bad_run.bad() or bad_run.statuses, "a malformed reply must not pass unnoticed"
