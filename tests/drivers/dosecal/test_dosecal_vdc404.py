"""Veenstra/Comecer VDC-404 driver against its simulator over a real pty and real TCP."""

from __future__ import annotations

import asyncio

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition
from pydantic import ValidationError

from agent.physics import normalize_nuclide
from drivers.dosecal.vdc404.driver import VDC404Config, VDC404Driver, parse_vdc404_line
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator


def make_driver(device_id: str, address: str) -> VDC404Driver:
    config = VDC404Config(
        id=device_id,
        type="vdc404",
        port=address,
        timeout_s=0.4,
        idle_timeout_s=0.6,
        max_consecutive_failures=2,
    )
    return VDC404Driver(config)


@pytest.mark.parametrize(
    ("line", "nuclide", "value", "unit"),
    [
        (b"F18: 370.2 MBq", "F18", 370.2, "MBq"),
        (b"Tc-99m: 1,25 GBq", "Tc-99m", 1.25, "GBq"),
        (b"  I 131 :12.0 mCi  ", "I 131", 12.0, "mCi"),
        (b"Cs137: 2.5E+02 uCi", "Cs137", 250.0, "uCi"),
        (b"Ga68: 0.5 kBq", "Ga68", 0.5, "kBq"),
    ],
)
def test_parse_lines(line, nuclide, value, unit):
    m = parse_vdc404_line(line)
    assert m.ok, m.reason
    assert (m.nuclide, m.value, m.unit) == (nuclide, value, unit)
    assert m.raw_text == line.decode()
    assert normalize_nuclide(m.nuclide) is not None


@pytest.mark.parametrize(
    "line",
    [b"F18: 370.2", b"F18 370.2 MBq", b"F18: nan MBq", b"F18: inf MBq", b"F18: 1e999 MBq",
     b"F18: 3\xb70.2 MBq", b"F18: 370.2 MBq\x00", b": 370.2 MBq", b"F18: 370.2 Sv"],
)
def test_malformed_lines(line):
    m = parse_vdc404_line(line)
    assert not m.ok
    assert m.value is None
    assert m.reason


def test_config_defaults_and_registry():
    config = VDC404Config(id="v", type="vdc404", port="/dev/ttyUSB0")
    assert (config.baudrate, config.bytesize, config.parity, config.stopbits) == (9600, 8, "N", 1)
    assert isinstance(create_driver(config), VDC404Driver)
    with pytest.raises(ValidationError, match="unsupported URL scheme"):
        VDC404Config(id="v", type="vdc404", port="http://x:1")
    with pytest.raises(ValidationError, match="HOST:PORT"):
        VDC404Config(id="v", type="vdc404", port="socket://nohost")


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_pushed_lines_become_samples(transport):
    sim = DoseCalibratorSimulator(
        "vdc404", transport, nuclide="Tc-99m", activity_mbq=800.0, push_interval_s=0.05, seed=4
    )
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("vdc", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 3)
            sample = run.good()[0]
            assert sample.nuclide == "Tc99m"
            assert sample.unit == "MBq"
            assert sample.value == pytest.approx(800.0, rel=0.01)
            assert sample.raw_text == f"Tc99m: {sample.raw_text.split(': ')[1]}"
            sim.set_nuclide("I-131")
            mark = len(run.samples)
            await wait_for_condition(lambda: any(s.nuclide == "I131" for s in run.good(mark)))
        assert not run.bad()
        assert not run.errors
    finally:
        await sim.stop()


async def test_silence_is_normal_without_idle_timeout():
    sim = DoseCalibratorSimulator("vdc404", "pty", push_interval_s=0.05, seed=5)
    address = await sim.start()
    config = VDC404Config(id="vdc", type="vdc404", port=address, timeout_s=0.4)
    try:
        async with supervised(lambda: VDC404Driver(config)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 1)
            sim.set_fault("timeout")  # a push instrument that simply measures nothing
            await asyncio.sleep(0.2)  # let a line already in flight arrive
            mark = len(run.samples)
            await asyncio.sleep(1.0)  # several times timeout_s of silence
            assert len(run.samples) == mark
            sim.set_fault(None)
            await wait_for_condition(lambda: len(run.good(mark)) >= 1)
        assert not run.errors
        assert not run.statuses
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good_run, _logs = await fault_scenario("vdc404", transport, fault, make_driver)
    if fault in ("garbage", "wrong_length", "corrupt"):
        assert bad_run.bad(), "a malformed line should surface as a BAD sample"
    if fault == "truncated":
        # Half lines without terminators run together: a BAD over-long line, or silence
        # (no complete line) that trips idle_timeout_s first.
        assert bad_run.bad() or any("no data" in e for e in bad_run.errors)
