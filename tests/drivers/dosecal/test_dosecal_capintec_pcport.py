"""Capintec CRC-25R / CRC-55t(R) PC port driver: golden frames and its simulator over pty/TCP."""

from __future__ import annotations

import pytest
from dosecal_harness import fault_scenario, supervised
from helpers import wait_for_condition

from drivers.base import DeviceError, Quality
from drivers.dosecal.capintec_pcport.driver import (
    CapintecPCPortConfig,
    CapintecPCPortDriver,
    checksum,
    encode_command,
    parse_read_reply,
)
from drivers.registry import create_driver
from simulators.dosecal import FAULTS, DoseCalibratorSimulator

R1_GOOD = b"$SDR1F-18     370.05Q#"
"""`R1` answered: DR, chamber 1, `F-18    `, `370.0` right aligned, unit 5 (MBq), checksum
`Q` = (0x53 + sum of `DR1F-18     370.05`) folded by 0x7E."""


def make_driver(device_id: str, address: str, **options) -> CapintecPCPortDriver:
    settings = {"poll_interval_s": 0.05, "timeout_s": 0.4, "max_consecutive_failures": 2}
    settings.update(options)
    config = CapintecPCPortConfig(id=device_id, type="capintec_pcport", port=address, **settings)
    return CapintecPCPortDriver(config)


def test_golden_command_frame():
    # 'C' (len 2 + 0x41) + 'R' + '1' = 0xC6 → 0xC6 - 0x7E = 0x48 'H'
    assert encode_command("R1") == b"$CR1H#"
    assert checksum(b"\x01") == 0x27  # lifted by 0x26 below 0x26
    assert checksum(bytes([0x7E, 0x7E, 0x7E])) == 0x7E
    for n in range(1, 9):
        cs = encode_command(f"R{n}")[-2]
        assert 0x26 <= cs <= 0x7E
        assert cs not in b"$#"


def test_golden_r1_reply_good_checksum():
    m = parse_read_reply(R1_GOOD, 1)
    assert m.ok, m.reason
    assert (m.value, m.unit, m.nuclide) == (370.0, "MBq", "F-18")
    assert m.raw_text == R1_GOOD.decode()
    assert m.attrs == {"chamber": 1, "status": "done", "unit_digit": "5"}
    assert m.caution is None


def test_golden_r1_reply_bad_checksum():
    damaged = R1_GOOD[:-2] + b"R#"
    m = parse_read_reply(damaged, 1)
    assert not m.ok
    assert m.value is None
    assert "checksum mismatch: got 0x52, computed 0x51" in (m.reason or "")
    # A flipped digit with the original checksum: caught too.
    m = parse_read_reply(R1_GOOD.replace(b"370.0", b"870.0"), 1)
    assert "checksum mismatch" in (m.reason or "")


def test_golden_r1_reply_over_range():
    body = b"S" + b"DR1" + b"F-18    " + b"      " + b"0"
    frame = b"$" + body + bytes([checksum(body)]) + b"#"
    m = parse_read_reply(frame, 1)
    assert not m.ok
    assert m.value is None
    assert "over range" in (m.reason or "")
    sample = make_driver("c", "/dev/null").to_sample(m)
    assert sample.quality is Quality.BAD


def test_golden_r1_reply_frozen():
    body = b"S" + b"BR1" + b"F-18    " + b" 370.0" + b"5"
    frame = b"$" + body + bytes([checksum(body)]) + b"#"
    sample = make_driver("c", "/dev/null").to_sample(parse_read_reply(frame, 1))
    assert sample.quality is Quality.UNCERTAIN
    assert sample.value == 370.0
    assert "frozen" in (sample.reason or "")


def test_golden_error_reply():
    m = parse_read_reply(b"$e4    #", 2)
    assert not m.ok
    assert "no such chamber" in (m.reason or "")
    assert "checksum" in (parse_read_reply(b"$e1    #", 1).reason or "")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (R1_GOOD[:-1], "wrong frame length"),
        (R1_GOOD.replace(b"DR1", b"DR2"), "checksum"),
        (b"$S" + R1_GOOD[2:].replace(b"370.05", b"370.09"), "checksum"),
    ],
)
def test_malformed_replies(frame, reason):
    m = parse_read_reply(frame, 1)
    assert not m.ok
    assert reason in (m.reason or "")


def test_only_read_commands_are_ever_sent():
    driver = make_driver("c", "/dev/null", allowed_commands=["M2", "I11"])
    driver.check_command("R1")
    for command in ("M2", "I11", "D", "B", "R"):
        with pytest.raises(DeviceError, match="only reads"):
            driver.check_command(command)
    config = CapintecPCPortConfig(id="c", type="capintec_pcport", port="socket://127.0.0.1:4001")
    assert isinstance(create_driver(config), CapintecPCPortDriver)


@pytest.mark.parametrize("transport", ["pty", "tcp", "rfc2217"])
async def test_reads_the_simulated_calibrator(transport):
    sim = DoseCalibratorSimulator(
        "capintec_pcport", transport, nuclide="F-18", activity_mbq=370.0, noise=False,
        background_mbq=0.0,
    )  # fmt: skip
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("cal", address)) as run:
            await wait_for_condition(lambda: len(run.good()) >= 2)
            sim.profile.on_key("freeze")
            mark = len(run.samples)
            await wait_for_condition(
                lambda: any(s.quality is Quality.UNCERTAIN for s in run.samples[mark:])
            )
            sim.profile.on_key("freeze")
            sim.load_sample("F-18", 3.7e7)  # 37 TBq: more than six characters of MBq
            mark = len(run.samples)
            await wait_for_condition(lambda: any(s.quality is Quality.BAD for s in run.samples[mark:]))
        good = run.good()[0]
        assert (good.value, good.unit, good.nuclide) == (370.0, "MBq", "F-18")
        assert good.raw_text == R1_GOOD.decode()
        assert "over range" in (run.bad()[0].reason or "")
        # Only the handshake and R1 reached the instrument.
        assert set(sim.commands) == {"@", "R1"}
    finally:
        await sim.stop()


async def test_chamber_that_does_not_exist_is_named():
    sim = DoseCalibratorSimulator("capintec_pcport", "pty", noise=False)
    address = await sim.start()
    try:
        async with supervised(lambda: make_driver("cal", address, chamber=2)) as run:
            await wait_for_condition(lambda: bool(run.bad()))
        assert "no such chamber" in (run.bad()[0].reason or "")
        assert not run.good()
    finally:
        await sim.stop()


@pytest.mark.parametrize("transport", ["pty", "tcp"])
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_is_visible_and_recovered(transport, fault):
    bad_run, _good_run, _logs = await fault_scenario("capintec_pcport", transport, fault, make_driver)
    if fault in ("garbage", "truncated", "wrong_length", "corrupt"):
        assert bad_run.bad() or bad_run.statuses, "a damaged frame must not pass unnoticed"
