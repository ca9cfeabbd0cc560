"""Generic serial_line driver: push (CRC-55tR-style tickets) and poll, over pty and TCP."""

from __future__ import annotations

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition
from pydantic import ValidationError

from drivers.dosecal.serial_line.driver import SerialLineConfig, SerialLineDriver, decode_escapes
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator

# The pattern drivers/dosecal/serial_line/README.md shows for the simulator's ticket lines.
TICKET = (
    r"^(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}:\d{2})\s+(?P<nuclide>\S+)\s+"
    r"(?P<value>[-+]?\d+(?:\.\d+)?)\s+(?P<unit>[kMG]?Bq|[um]?Ci)\s*$"
)
ATOMLAB = r"^\s*(?P<nuclide>\S+)\s+(?P<value>\S+)\s+(?P<unit>\S+)\s*$"


def push_driver(device_id: str, address: str) -> SerialLineDriver:
    config = SerialLineConfig(
        id=device_id,
        type="serial_line",
        port=address,
        pattern=TICKET,
        ignore_pattern="^CAPINTEC",
        timeout_s=0.4,
        idle_timeout_s=0.6,
        max_consecutive_failures=2,
    )
    return SerialLineDriver(config)


def poll_driver(device_id: str, address: str) -> SerialLineDriver:
    config = SerialLineConfig(
        id=device_id,
        type="serial_line",
        port=address,
        mode="poll",
        poll_command="\\x03",
        pattern=ATOMLAB,
        baudrate=19200,
        poll_interval_s=0.05,
        timeout_s=0.4,
        max_consecutive_failures=2,
    )
    return SerialLineDriver(config)


def test_config_validation():
    config = SerialLineConfig(id="s", type="serial_line", port="/dev/ttyUSB1", pattern=TICKET)
    assert isinstance(create_driver(config), SerialLineDriver)
    with pytest.raises(ValidationError, match="poll_command"):
        SerialLineConfig(id="s", type="serial_line", port="/dev/x", pattern=TICKET, mode="poll")
    with pytest.raises(ValidationError, match="value"):
        SerialLineConfig(id="s", type="serial_line", port="/dev/x", pattern=r"(?P<unit>\w+)")
    with pytest.raises(ValidationError, match="poll_command"):
        SerialLineConfig(
            id="s", type="serial_line", port="/dev/x", pattern=TICKET, mode="poll", poll_command=r"\x"
        )
    assert decode_escapes(r"P\r\n") == b"P\r\n"
    assert decode_escapes(r"\x03") == b"\x03"


def test_non_activity_values_and_defaults():
    config = SerialLineConfig(
        id="s",
        type="serial_line",
        port="/dev/x",
        pattern=r"T=(?P<value>\S+)",
        unit="Cel",
        channel="temperature",
        activity=False,
    )
    driver = SerialLineDriver(config)
    measurement = driver.parse(b"T=21.5")
    assert measurement is not None
    sample = driver.to_sample(measurement)
    assert (sample.channel, sample.value, sample.unit, sample.quality.value) == (
        "temperature", 21.5, "Cel", "good"
    )
    assert driver.parse(b"   ") is None


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_push_tickets(transport):
    sim = DoseCalibratorSimulator(
        "serial_line", transport, nuclide="I-131", activity_mbq=370.0, push_interval_s=0.05, seed=10
    )
    address = await sim.start()
    try:
        async with supervised(lambda: push_driver("crc", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 12)  # past a ticket header
        sample = run.good()[0]
        assert (sample.nuclide, sample.unit) == ("I-131", "mCi")
        assert sample.value == pytest.approx(10.0, rel=0.01)
        assert set(sample.attrs) == {"date", "time"}
        assert not run.bad()
        assert not run.errors
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_poll(transport):
    sim = DoseCalibratorSimulator("atomlab500", transport, nuclide="F-18", seed=11)
    address = await sim.start()
    try:
        async with supervised(lambda: poll_driver("lab", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 3)
        assert run.good()[0].nuclide == "F-18"
        assert set(sim.commands) == {"\x03"}
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_push_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good, _logs = await fault_scenario("serial_line", transport, fault, push_driver)
    if fault in ("garbage", "wrong_length", "corrupt"):
        assert bad_run.bad()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_poll_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good, _logs = await fault_scenario("atomlab500", transport, fault, poll_driver)
    if fault in ("garbage", "wrong_length", "corrupt"):
        assert bad_run.bad()
