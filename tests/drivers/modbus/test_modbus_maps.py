"""Register maps as data: decoding, byte/word order, coalescing plans, validation."""

from __future__ import annotations

import struct
import tomllib

import pytest
from helpers import REPO
from hypothesis import given
from hypothesis import strategies as st

from agent.service.config import ConfigError, parse_config
from drivers.modbus import ModbusPoint, Table, plan_reads
from simulators.modbus import PROFILES, profile_toml


def point(**kw):
    return ModbusPoint.model_validate({"channel": "x", "address": 0, **kw})


# float32 12.5 is 0x41480000: bytes A B C D = 41 48 00 00.
@pytest.mark.parametrize(
    ("byte_order", "word_order", "words"),
    [
        ("big", "big", [0x4148, 0x0000]),
        ("big", "little", [0x0000, 0x4148]),
        ("little", "big", [0x4841, 0x0000]),
        ("little", "little", [0x0000, 0x4841]),
    ],
)
def test_float32_orders(byte_order, word_order, words):
    p = point(data_type="float32", byte_order=byte_order, word_order=word_order)
    assert p.decode(words) == 12.5
    assert p.encode(12.5) == words


def test_integer_types_and_scaling():
    assert point(data_type="int16").decode([0xFFFE]) == -2
    assert point(data_type="uint16").decode([0xFFFE]) == 0xFFFE
    assert point(data_type="int32").decode([0xFFFF, 0xFFFF]) == -1
    assert point(data_type="uint32", word_order="little").decode([0x0002, 0x0001]) == 0x00010002
    temperature = point(data_type="uint16", scale=0.1, offset=-50.0)
    assert temperature.value(718) == pytest.approx(21.8)
    assert temperature.raw_for(21.8) == pytest.approx(718)


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["big", "little"]),
    st.sampled_from(["big", "little"]),
)
def test_float64_roundtrip(value, byte_order, word_order):
    p = point(data_type="float64", byte_order=byte_order, word_order=word_order)
    words = p.encode(value)
    assert len(words) == 4
    assert p.decode(words) == value
    if byte_order == word_order == "big":
        assert b"".join(w.to_bytes(2, "big") for w in words) == struct.pack(">d", value)


def test_plan_coalesces_within_gap_and_limit():
    points = [
        point(channel="a", table="input", address=0, data_type="int16"),
        point(channel="b", table="input", address=2, data_type="float32"),
        point(channel="c", table="input", address=20, data_type="uint16"),
        point(channel="d", table="holding", address=5),
        point(channel="e", table="coil", address=3),
        point(channel="f", table="coil", address=9),
    ]
    plan = plan_reads(points, max_registers=125, max_bits=2000, max_gap=8)
    assert [(b.table, b.address, b.count) for b in plan] == [
        (Table.HOLDING, 5, 1),
        (Table.INPUT, 0, 4),
        (Table.INPUT, 20, 1),
        (Table.COIL, 3, 7),
    ]
    wide = plan_reads(points, max_registers=125, max_bits=2000, max_gap=100)
    assert [(b.table, b.address, b.count) for b in wide][1] == (Table.INPUT, 0, 21)
    limited = plan_reads(points, max_registers=3, max_bits=2000, max_gap=100)
    assert [(b.address, b.count) for b in limited if b.table is Table.INPUT] == [
        (0, 1),
        (2, 2),
        (20, 1),
    ]


def _config(points, **extra):
    device = {"id": "hc-9", "type": "modbus_tcp", "host": "127.0.0.1", "points": points, **extra}
    return parse_config({"agent": {"site": "s", "id": "a"}, "devices": [device]})


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        (
            [
                {"channel": "a", "address": 0, "data_type": "float32"},
                {"channel": "b", "address": 1},
            ],
            "overlap",
        ),
        ([{"channel": "a", "address": 65535, "data_type": "uint32"}], "runs past"),
        ([{"channel": "a", "table": "coil", "address": 0, "data_type": "int16"}], "bool"),
        ([{"channel": "a", "table": "input", "address": 0, "data_type": "bool"}], "coil"),
        ([{"channel": "a", "address": 0}, {"channel": "a", "address": 1}], "twice"),
    ],
)
def test_invalid_maps_name_the_device(points, expected):
    with pytest.raises(ConfigError) as info:
        _config(points)
    text = str(info.value)
    assert expected in text
    assert "devices[0]" in text


def test_map_wider_than_request_limit_is_rejected():
    with pytest.raises(ConfigError, match="max_registers_per_request"):
        _config(
            [{"channel": "a", "address": 0, "data_type": "float64"}], max_registers_per_request=2
        )


def test_rtu_port_forms():
    base = {"id": "am", "type": "modbus_rtu", "points": [{"channel": "a", "address": 0}]}
    for port in ("/dev/ttyUSB0", "rtu+tcp://127.0.0.1:5020"):
        parse_config({"agent": {"site": "s", "id": "a"}, "devices": [{**base, "port": port}]})
    with pytest.raises(ConfigError, match="rtu\\+tcp"):
        parse_config(
            {"agent": {"site": "s", "id": "a"}, "devices": [{**base, "port": "tcp://h:1"}]}
        )


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_shipped_maps_match_the_simulators(profile):
    shipped = (REPO / "config" / "maps" / f"{profile}.toml").read_text(encoding="utf-8")
    data = tomllib.loads(shipped)
    devices = data["devices"]
    assert len(devices) == 1
    parse_config({"agent": {"site": "s", "id": "a"}, "devices": devices})
    generated = tomllib.loads(profile_toml(profile))
    assert devices[0]["points"] == generated["devices"]["points"]
