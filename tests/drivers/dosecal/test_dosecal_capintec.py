"""Capintec CRC-15 PET driver against its simulator over a real pty and real TCP."""

from __future__ import annotations

import struct

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition

from agent.physics import normalize_nuclide
from drivers.base import Quality
from drivers.dosecal.capintec_crc15.driver import (
    CapintecCRC15Config,
    CapintecCRC15Driver,
    crc15_name,
    encode_crc15_reply,
    parse_crc15_reply,
)
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator


def make_driver(device_id: str, address: str) -> CapintecCRC15Driver:
    config = CapintecCRC15Config(
        id=device_id,
        type="capintec_crc15",
        port=address,
        poll_interval_s=0.05,
        timeout_s=0.4,
        max_consecutive_failures=2,
        frame_gap_s=0.02,
    )
    return CapintecCRC15Driver(config)


def test_documented_example_frame():
    m = parse_crc15_reply(bytes.fromhex("46 20 31 38 20 20 05 cc 85 35 40"))
    assert m.ok
    assert m.nuclide == "F 18"
    assert normalize_nuclide(m.nuclide) == "F-18"
    assert m.unit == "MBq"
    assert m.value == pytest.approx(2.836291)
    assert m.raw_text == "46 20 31 38 20 20 05 cc 85 35 40"


@pytest.mark.parametrize(
    ("index", "unit"), [(2, "uCi"), (3, "mCi"), (4, "Ci"), (5, "MBq"), (6, "GBq")]
)
def test_unit_table(index, unit):
    frame = b"Tc99m " + bytes([index]) + struct.pack("<f", 12.5)
    m = parse_crc15_reply(frame)
    assert (m.unit, m.value, m.nuclide) == (unit, 12.5, "Tc99m")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "no reply"),
        (b"F 18  \x05\xcc\x85\x35", "wrong frame length"),
        (b"F 18  \x05\xcc\x85\x35\x40\x00", "wrong frame length"),
        (b"F 18  \x00\xcc\x85\x35\x40", "unknown unit index 0"),
        (b"F 18  \x01\xcc\x85\x35\x40", "unknown unit index 1"),
        (b"F 18  \x07\xcc\x85\x35\x40", "unknown unit index 7"),
        (b"F\x0018  \x05\xcc\x85\x35\x40", "not printable"),
        (b"      \x05\xcc\x85\x35\x40", "blank"),
        (b"F 18  \x05" + struct.pack("<f", float("nan")), "not a finite"),
        (b"F 18  \x05" + struct.pack("<f", float("inf")), "not a finite"),
    ],
)
def test_malformed_frames(frame, reason):
    m = parse_crc15_reply(frame)
    assert not m.ok
    assert m.value is None
    assert reason in (m.reason or "")


def test_names_and_encoding_round_trip():
    assert crc15_name("F-18") == "F 18"
    assert crc15_name("Tc-99m") == "Tc99m"
    assert crc15_name("I-131") == "I 131"
    for nuclide in ("F-18", "Tc-99m", "I-131", "Cs-137", "Ga-68", "Lu-177"):
        frame = encode_crc15_reply(crc15_name(nuclide), "mCi", 10.25)
        m = parse_crc15_reply(frame)
        assert normalize_nuclide(m.nuclide) == nuclide
        assert (m.value, m.unit) == (10.25, "mCi")


def test_implausible_activity_is_bad():
    driver = make_driver("c", "/dev/null")
    sample = driver.to_sample(parse_crc15_reply(encode_crc15_reply("F 18", "GBq", 5e7)))
    assert sample.quality is Quality.BAD
    assert "implausible" in (sample.reason or "")


def test_registered_in_registry():
    config = CapintecCRC15Config(id="c", type="capintec_crc15", port="socket://127.0.0.1:4001")
    assert isinstance(create_driver(config), CapintecCRC15Driver)
    assert config.baudrate == 4800


@pytest.mark.parametrize("transport", ["pty", "tcp", "rfc2217"])
async def test_readings_decay_and_follow_the_selector(transport):
    sim = DoseCalibratorSimulator(
        "capintec_crc15", transport, nuclide="F-18", activity_mbq=1000.0, time_scale=600.0, seed=3
    )
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("cal", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 3)
            first = run.good()[0]
            assert first.nuclide == "F 18"
            assert first.unit == "MBq"
            assert first.raw_text is not None
            assert len(bytes.fromhex(first.raw_text)) == 11
            # 600x time: F-18 (109.77 min) loses ~6 % per real second.
            mark = len(run.samples)
            await wait_for_condition(lambda: len(run.good(mark)) >= 1)
            await wait_for_condition(
                lambda: run.good()[-1].value < 0.93 * first.value, timeout=5.0
            )
            sim.set_nuclide("Tc-99m")  # operator turns the selector
            mark = len(run.samples)
            await wait_for_condition(lambda: any(s.nuclide == "Tc99m" for s in run.good(mark)))
            sim.load_sample("Ga-68", 200.0)
            await wait_for_condition(lambda: any(s.nuclide == "Ga68" for s in run.good(mark)))
        assert not run.errors
        assert not run.bad()
    finally:
        await sim.stop()


async def test_rfc2217_device_server_gets_the_configured_line_settings():
    """Through an RFC 2217 converter the driver sets the instrument's baud rate and framing,
    and binary frames containing 0xFF (Telnet's IAC byte) arrive intact."""
    activity = struct.unpack("<f", b"\xff\x00\x80\x43")[0]  # 257.0 MBq, encoded with 0xFF
    sim = DoseCalibratorSimulator(
        "capintec_crc15", "rfc2217", "Cs-137", activity, background_mbq=0.0, noise=False
    )
    address = await sim.start()
    assert address.startswith("rfc2217://127.0.0.1:")
    sim.line.baudrate, sim.line.parity = 115200, "E"  # whatever the converter was left at
    try:
        async with supervised(lambda: make_driver("cal", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 2)
        assert (sim.line.baudrate, sim.line.bytesize, sim.line.parity, sim.line.stopbits) == (
            4800, 8, "N", 1,
        )  # fmt: skip
        sample = run.good()[0]
        assert sample.value == pytest.approx(activity, rel=1e-6)
        assert b"\xff" in bytes.fromhex(sample.raw_text or "")
        assert not run.errors
    finally:
        await sim.stop()


@pytest.mark.parametrize("fault", ["unplugged", "corrupt"])
async def test_rfc2217_fault_is_visible_and_recovered(fault):
    bad_run, _good_run, _logs = await fault_scenario("capintec_crc15", "rfc2217", fault, make_driver)
    if fault == "corrupt":
        assert bad_run.bad(), "a damaged frame should surface as a BAD sample"
    else:
        assert bad_run.errors, "a device server that drops the link is a device error"
    assert bad_run.connects >= 2 or fault == "corrupt"


async def test_display_unit_mci():
    sim = DoseCalibratorSimulator("capintec_crc15", "tcp", activity_mbq=370.0, unit="mCi", noise=False)
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("cal", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 1)
        sample = run.good()[0]
        assert sample.unit == "mCi"
        assert sample.value == pytest.approx(10.0, rel=1e-3)
    finally:
        await sim.stop()


async def test_port_that_does_not_exist_is_a_device_error():
    driver = make_driver("cal", "/dev/does-not-exist-isoedge")
    with pytest.raises(Exception, match="does-not-exist") as info:
        await driver.connect()
    await driver.close()
    assert type(info.value).__name__ == "DeviceError"


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good_run, _logs = await fault_scenario("capintec_crc15", transport, fault, make_driver)
    if fault in ("garbage", "truncated", "wrong_length", "corrupt"):
        assert bad_run.bad(), "a malformed frame should surface as a BAD sample"
    assert ("online", None) in bad_run.statuses or bad_run.errors
