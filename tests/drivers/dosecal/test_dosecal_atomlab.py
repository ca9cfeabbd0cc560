"""Atomlab 500 driver against its simulator over a real pty and real TCP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition
from pydantic import ValidationError

from agent.physics import normalize_nuclide
from drivers.base import DeviceError, Quality
from drivers.dosecal.atomlab500 import driver as atomlab_driver
from drivers.dosecal.atomlab500.driver import Atomlab500Config, Atomlab500Driver, parse_atomlab_line
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator


def make_config(device_id: str, address: str, **options) -> Atomlab500Config:
    settings = {"poll_interval_s": 0.05, "timeout_s": 0.4, "max_consecutive_failures": 2}
    settings.update(options)
    return Atomlab500Config(id=device_id, type="atomlab500", port=address, **settings)


def make_driver(device_id: str, address: str) -> Atomlab500Driver:
    return Atomlab500Driver(make_config(device_id, address))


@pytest.mark.parametrize(
    ("line", "nuclide", "value", "unit"),
    [
        (b"F-18       370.2 MBq", "F-18", 370.2, "MBq"),
        (b"Tc99m 25.00 mCi", "Tc99m", 25.0, "mCi"),
        (b"I 131, 1.5E+03 kBq", "I 131", 1500.0, "kBq"),
    ],
)
def test_default_pattern(line, nuclide, value, unit):
    m = parse_atomlab_line(line)
    assert m.ok, m.reason
    assert (m.nuclide, m.value, m.unit) == (nuclide, value, unit)
    assert normalize_nuclide(m.nuclide) is not None


@pytest.mark.parametrize("line", [b"ERROR", b"?", b"ERR 12", b"F-18 MBq", b"F-18 12.0", b"\x00\x01"])
def test_errors_and_noise_are_malformed(line):
    m = parse_atomlab_line(line)
    assert not m.ok
    assert m.value is None


def test_error_reply_reason():
    assert "instrument error reply" in (parse_atomlab_line(b"ERROR").reason or "")


def test_site_pattern():
    pattern = re.compile(r"A=(?P<value>\S+)\s+(?P<unit>\S+)\s+ISO=(?P<nuclide>\S+)")
    m = parse_atomlab_line(b"A=12.5 mCi ISO=F18", pattern)
    assert (m.value, m.unit, m.nuclide) == (12.5, "mCi", "F18")


def test_config_validation():
    config = make_config("a", "socket://127.0.0.1:4001")
    assert config.baudrate == 19200
    assert isinstance(create_driver(config), Atomlab500Driver)
    with pytest.raises(ValidationError, match="allowed_commands"):
        make_config("a", "/dev/ttyS0", init_commands=["ISO F18"])
    with pytest.raises(ValidationError, match="value"):
        make_config("a", "/dev/ttyS0", reading_pattern=r"(?P<unit>\w+)")
    with pytest.raises(ValidationError, match="invalid regular expression"):
        make_config("a", "/dev/ttyS0", reading_pattern=r"(?P<value>")
    allowed = make_config("a", "/dev/ttyS0", init_commands=["iso  f18"], allowed_commands=["ISO F18"])
    assert allowed.init_commands == ["iso  f18"]


def test_iso_is_refused_at_run_time_unless_allowed():
    driver = make_driver("a", "/dev/ttyS0")
    driver.check_command("\x03")
    with pytest.raises(DeviceError, match="refusing"):
        driver.check_command("ISO F18")


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("poll", ["ctrl-c", "1"])
async def test_polling_is_read_only(transport, poll):
    sim = DoseCalibratorSimulator("atomlab500", transport, nuclide="F-18", activity_mbq=500.0, seed=6)
    address = await sim.start()
    try:
        config = make_config("lab", address, poll_command=poll)
        async with supervised(lambda: Atomlab500Driver(config)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 3)
            sim.set_nuclide("Ga-68")  # the operator, not the agent, changes the isotope
            mark = len(run.samples)
            await wait_for_condition(lambda: any(s.nuclide == "Ga-68" for s in run.good(mark)))
        sample = run.good()[0]
        assert (sample.nuclide, sample.unit) == ("F-18", "MBq")
        assert sample.value == pytest.approx(500.0, rel=0.01)
        assert sample.raw_text is not None
        assert sim.sent_valid(sample.raw_text)
        assert set(sim.commands) == {"\x03" if poll == "ctrl-c" else "1"}
        assert not run.bad()
    finally:
        await sim.stop()


async def test_allowed_iso_init_command_is_sent():
    sim = DoseCalibratorSimulator("atomlab500", "tcp", nuclide="F-18", seed=7)
    address = await sim.start()
    try:
        config = make_config(
            "lab", address, init_commands=["ISO Tc-99m"], allowed_commands=["ISO Tc-99m"]
        )
        async with supervised(lambda: Atomlab500Driver(config)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 1)
        assert "ISO Tc-99m" in sim.commands
        assert run.good()[0].nuclide == "Tc-99m"
    finally:
        await sim.stop()


async def test_instrument_error_reply_is_bad():
    sim = DoseCalibratorSimulator("atomlab500", "pty", seed=8)
    address = await sim.start()
    try:
        # A site pattern that expects something else than the instrument says: every line
        # becomes a BAD sample and, after the configured failures, a DeviceError.
        config = make_config("lab", address, reading_pattern=r"^ACT (?P<value>\S+)$")
        async with supervised(lambda: Atomlab500Driver(config)) as run:
            await wait_for_condition(lambda: len(run.errors) >= 1)
        assert run.bad()
        assert not run.good()
        assert all(s.quality is Quality.BAD and s.value is None for s in run.samples)
        assert ("degraded", "line does not match the configured pattern") in run.statuses
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good_run, _logs = await fault_scenario("atomlab500", transport, fault, make_driver)
    if fault in ("garbage", "wrong_length", "corrupt"):
        assert bad_run.bad(), "a malformed reply should surface as a BAD sample"


def test_golden_manual_reading_request_has_no_carriage_return():
    """Manual, Appendix G p. 219: `^C` (0x03) and `1` (0x31) need no CR; others end in CR."""
    driver = Atomlab500Driver(make_config("a", "/dev/ttyS0", poll_command="1"))
    assert driver.encode_command("1") == b"1"
    assert driver.encode_command("\x03") == b"\x03"
    assert driver.encode_command("ISO F18") == b"ISO F18\r"
    assert (driver.cfg.baudrate, driver.cfg.parity, driver.cfg.stopbits) == (19200, "N", 1)


README = Path(atomlab_driver.__file__).with_name("README.md")


def test_readme_override_example():
    """The README's documented override works: its example line parses with its pattern."""
    text = README.read_text(encoding="utf-8")
    line = re.search(r"captured line were `([^`]+)`", text)
    pattern = re.search(r"override would be:\s*```toml\s*reading_pattern = '([^']+)'", text)
    assert line is not None and pattern is not None, "README override example not found"
    config = make_config("a", "/dev/ttyS0", reading_pattern=pattern.group(1))
    m = parse_atomlab_line(line.group(1).encode(), re.compile(config.reading_pattern))
    assert m.ok, m.reason
    assert (m.value, m.unit, m.nuclide) == (370.2, "MBq", "F-18")
    # The shipped default does not read that layout: the line is BAD, not misread.
    default = parse_atomlab_line(line.group(1).encode())
    assert not default.ok
    assert default.reason == "line does not match the configured pattern"


def test_readme_and_sample_show_the_shipped_default():
    """The pattern the README and sample.toml show is the driver's real default."""
    for path in (README, README.with_name("sample.toml")):
        text = path.read_text(encoding="utf-8")
        shown = re.search(r"^reading_pattern = '([^']+)'$", text, re.MULTILINE)
        assert shown is not None, path
        assert shown.group(1) == atomlab_driver.DEFAULT_READING_PATTERN, path
