"""Property-based tests: arbitrary bytes into every dose calibrator parser.

No exception escapes, no NaN/inf comes out, and whatever a parser accepts is a finite value
with its raw text kept.
"""

from __future__ import annotations

import math
import re
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.dosecal.atomlab500.driver import parse_atomlab_line
from drivers.dosecal.capintec_crc15.driver import (
    FIRMWARE_UNITS,
    parse_crc15_reply,
    split_print_lines,
)
from drivers.dosecal.common import Measurement, parse_number
from drivers.dosecal.serial_line.driver import parse_line
from drivers.dosecal.vdc404.driver import parse_vdc404_line
from drivers.dosecal.vik202.driver import (
    parse_vik202_factor,
    parse_vik202_value,
    reply_problem,
)

SITE_PATTERN = re.compile(r"(?P<nuclide>\S+)\s+(?P<value>\S+)\s+(?P<unit>\S+)")
ANY_VALUE_PATTERN = re.compile(r"(?P<value>.*)")

# Bytes that look a bit like instrument output, so parsers get past their first checks.
text_like = st.text(
    alphabet=st.sampled_from(list("0123456789.,+-eE :FTcmIGaBqCiuMk-\t")), max_size=40
).map(str.encode)
any_bytes = st.binary(max_size=64)
lines = st.one_of(any_bytes, text_like)


def check(m: Measurement | None) -> None:
    if m is None:
        return
    assert isinstance(m.raw_text, str)
    if m.value is not None:
        assert isinstance(m.value, float)
        assert math.isfinite(m.value)
    if m.ok:
        assert m.reason is None
    else:
        assert m.value is None
        assert m.reason


@settings(max_examples=300, deadline=None)
@given(any_bytes)
def test_capintec_arbitrary_bytes(data):
    check(parse_crc15_reply(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=6, max_size=6), st.integers(0, 255), st.binary(min_size=4, max_size=4))
def test_capintec_any_eleven_byte_frame(name, unit, value):
    m = parse_crc15_reply(name + bytes([unit]) + value)
    check(m)
    (raw_float,) = struct.unpack("<f", value)
    if m.ok:
        assert m.unit in FIRMWARE_UNITS.values()
        assert math.isfinite(raw_float)
        assert m.raw_text == (name + bytes([unit]) + value).hex(" ")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=6, max_size=6),
    st.integers(0, 0x1F),  # a unit byte is a small number, never printable
    st.binary(min_size=4, max_size=4),
    any_bytes,
)
def test_capintec_print_line_after_any_frame_is_found_and_the_frame_kept(name, unit, value, after):
    frame = name.encode() + bytes([unit]) + value
    line = b"F 18  ,4,2,849790,390,047309,22.07.2013,10:21:26\r\n"
    rest, lines = split_print_lines(frame + line + after)
    assert lines[0] == line.rstrip(b"\r\n")
    assert rest.startswith(frame[:7])  # the name and unit byte are never taken into a line


@settings(max_examples=300, deadline=None)
@given(lines)
def test_vdc404_arbitrary_lines(data):
    check(parse_vdc404_line(data))


@settings(max_examples=300, deadline=None)
@given(lines)
def test_atomlab_arbitrary_lines(data):
    check(parse_atomlab_line(data))
    check(parse_atomlab_line(data, SITE_PATTERN))


@settings(max_examples=300, deadline=None)
@given(lines)
def test_vik202_arbitrary_lines(data):
    check(parse_vik202_value(data, "Bq"))
    factor = parse_vik202_factor(data)
    assert factor is None or factor >= 0
    for command in ("!R", "!BON"):
        problem = reply_problem(command, data)
        assert problem is None or problem.startswith(command)


@settings(max_examples=300, deadline=None)
@given(lines)
def test_serial_line_arbitrary_lines(data):
    check(parse_line(data, SITE_PATTERN, re.compile("^#")))
    check(parse_line(data, ANY_VALUE_PATTERN, unit="MBq"))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_numbers_are_finite_or_rejected(text):
    value = parse_number(text)
    assert value is None or math.isfinite(value)


def test_python_float_spellings_are_rejected():
    for text in ("nan", "inf", "-Infinity", "1_000", "1e999", "0x10", ""):
        assert parse_number(text) is None
