"""One rule for floats and time stamps in the typed drivers (OPC UA, Modbus)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.numbers import float32_value, rfc3339_z


def widened(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_float32_shortest_round_trip():
    assert float32_value(widened(45.3)) == 45.3  # not 45.29999923706055
    assert float32_value(widened(0.1)) == 0.1
    assert float32_value(widened(0.123456789)) == 0.12345679  # all the digits it takes
    assert float32_value(widened(16777217.0)) == 16777216.0


@settings(max_examples=500, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_value_reads_back_as_the_same_float32(x):
    published = float32_value(x)
    assert widened(published) == x
    assert len(repr(published)) <= len(repr(x))


def test_rfc3339_with_z():
    t = datetime(2026, 12, 4, 15, 4, 5, 123456, tzinfo=UTC)
    assert rfc3339_z(t) == "2026-12-04T15:04:05.123456Z"
    assert rfc3339_z(t.astimezone(timezone(timedelta(hours=1)))) == "2026-12-04T15:04:05.123456Z"
    naive = datetime(2026, 12, 4, 15, 4, 5)  # noqa: DTZ001 - asyncua's older naive UTC values
    assert rfc3339_z(naive) == "2026-12-04T15:04:05Z"
