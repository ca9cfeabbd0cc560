"""Capintec CRC-15 PET driver against its simulator over a real pty and real TCP."""

from __future__ import annotations

import struct

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition

from agent.physics import normalize_nuclide
from drivers.base import Quality, SampleKind
from drivers.dosecal.capintec_crc15.driver import (
    CapintecCRC15Config,
    CapintecCRC15Driver,
    crc15_name,
    encode_crc15_reply,
    parse_crc15_reply,
    split_print_lines,
)
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator


def make_driver(device_id: str, address: str, **options) -> CapintecCRC15Driver:
    settings = {
        "poll_interval_s": 0.05,
        "timeout_s": 0.4,
        "max_consecutive_failures": 2,
        "frame_gap_s": 0.02,
    }
    settings.update(options)
    config = CapintecCRC15Config(id=device_id, type="capintec_crc15", port=address, **settings)
    return CapintecCRC15Driver(config)


MCI_FRAME = bytes.fromhex("46 20 31 38 20 20 02") + struct.pack("<f", 25.0)
"""Unit byte 2 and 25.0: by Capintec's firmware enum 25 mCi (925 MBq); the community table
the driver used before read it as 0.925 MBq."""
PRINT_LINE = b"F 18  ,4,2,849790,390,047309,22.07.2013,10:21:26\r\n"
"""The Print key's line as published (README), sent unasked on the poll port."""


def test_documented_example_frame():
    m = parse_crc15_reply(bytes.fromhex("46 20 31 38 20 20 05 cc 85 35 40"))
    assert m.ok
    assert m.nuclide == "F 18"
    assert normalize_nuclide(m.nuclide) == "F-18"
    assert m.unit == "MBq"
    assert m.value == pytest.approx(2.836291)
    assert m.raw_text == "46 20 31 38 20 20 05 cc 85 35 40"


def test_golden_mci_frame_is_25_mci_and_uncertain_until_commissioned():
    m = parse_crc15_reply(MCI_FRAME)
    assert (m.value, m.unit, m.nuclide) == (25.0, "mCi", "F 18")
    driver = make_driver("c", "/dev/null")
    sample = driver.reading(MCI_FRAME)
    # Never published as good while the site has not confirmed byte 2 on the display.
    assert sample.quality is Quality.UNCERTAIN
    assert (sample.value, sample.unit) == (25.0, "mCi")
    assert "unit byte 2" in (sample.reason or "")
    assert "not confirmed" in (sample.reason or "")
    confirmed = make_driver(
        "c", "/dev/null",
        confirmed_units={"2": "2026-11-30 J. Doe: display 25.00 mCi, reading 25.0 mCi"},
    )  # fmt: skip
    sample = confirmed.reading(MCI_FRAME)
    assert sample.quality is Quality.GOOD
    assert (sample.value, sample.unit) == (25.0, "mCi")


def test_golden_captured_mbq_frame_is_good_by_default():
    sample = make_driver("c", "/dev/null").reading(
        bytes.fromhex("46 20 31 38 20 20 05 cc 85 35 40")
    )
    assert sample.quality is Quality.GOOD
    assert (sample.value, sample.unit) == (pytest.approx(2.836291), "MBq")
    assert sample.attrs["unit_byte"] == 5


def test_unit_map_and_confirmation_are_validated():
    with pytest.raises(ValueError, match="not an activity unit"):
        make_driver("c", "/dev/null", unit_map={"2": "mSv"})
    with pytest.raises(ValueError, match="not in unit_map"):
        make_driver("c", "/dev/null", confirmed_units={"9": "someone"})
    with pytest.raises(ValueError, match="commissioning record"):
        make_driver("c", "/dev/null", confirmed_units={"2": " "})
    site = make_driver("c", "/dev/null", unit_map={"2": "MBq"}, confirmed_units={"2": "x"})
    assert site.reading(MCI_FRAME).unit == "MBq"


def test_golden_print_line_between_frames():
    frame = bytes.fromhex("46 20 31 38 20 20 05 cc 85 35 40")
    for stream in (PRINT_LINE + frame, frame + PRINT_LINE, PRINT_LINE):
        rest, lines = split_print_lines(stream)
        assert lines == [PRINT_LINE.rstrip(b"\r\n")]
        assert rest in (frame, b"")
    # A frame whose float ends in a printable byte, right before the line: the frame stays whole.
    frame_c = b"F 18  \x05\x00\x00\xb9C"
    rest, lines = split_print_lines(frame_c + PRINT_LINE)
    assert rest == frame_c
    assert lines[0].startswith(b"F 18  ,4,2,")
    driver = make_driver("c", "/dev/null")
    event = driver.print_event(lines[0])
    assert event.kind is SampleKind.EVENT
    assert event.channel == "print"
    assert event.value == "F 18  ,4,2,849790,390,047309,22.07.2013,10:21:26"
    assert event.attrs["date"] == "22.07.2013"
    assert event.attrs["time"] == "10:21:26"
    assert event.nuclide == "F 18"


@pytest.mark.parametrize("transport", ["pty", "tcp"])
async def test_print_key_between_polls_is_an_event_and_loses_no_frame(transport):
    sim = DoseCalibratorSimulator("capintec_crc15", transport, noise=False, seed=4)
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("cal", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 2)
            for _ in range(3):
                mark = len(run.samples)
                sim.press_key("print")
                await wait_for_condition(
                    lambda mark=mark: any(s.kind is SampleKind.EVENT for s in run.samples[mark:])
                )
                await wait_for_condition(lambda mark=mark: len(run.good(mark)) >= 2)
        events = [s for s in run.samples if s.kind is SampleKind.EVENT]
        assert len(events) == 3
        assert all(e.channel == "print" and e.attrs["event"] == "print" for e in events)
        assert not run.bad(), run.bad()
        assert not run.errors
        assert not run.statuses, "a print line must not degrade the device"
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("index", "unit"), [(1, "uCi"), (2, "mCi"), (3, "Ci"), (4, "kBq"), (5, "MBq"), (6, "GBq")]
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
        (b"F 18  \x00\xcc\x85\x35\x40", "unknown unit byte 0"),
        (b"F 18  \x07\xcc\x85\x35\x40", "unknown unit byte 7"),
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
            await wait_for_condition(lambda: len(run.samples) >= 1)
        sample = run.samples[0]
        # 10 mCi, not 0.01 MBq; uncertain until the site confirms unit byte 2.
        assert (sample.unit, sample.quality) == ("mCi", Quality.UNCERTAIN)
        assert sample.value == pytest.approx(10.0, rel=1e-3)
        assert bytes.fromhex(sample.raw_text or "")[6] == 2
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
