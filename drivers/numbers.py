"""How drivers publish floating-point values: at the precision of the instrument's type.

One rule for every driver that reads typed values (OPC UA, Modbus):

- a **float32** (OPC UA `Float`, Modbus `float32`) is published as the shortest decimal that
  reads back as the same float32: `45.3f` → `45.3`, not the float64 expansion
  `45.29999923706055`, and never fewer digits than it takes (`0.123456789f` →
  `0.12345679`);
- a **float64** (OPC UA `Double`, Modbus `float64`) is published in full: Python's shortest
  round-trip repr, `2.718281828459045` stays `2.718281828459045`.

Time stamps are RFC 3339 in UTC with `Z` (`rfc3339_z`).
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

_FLOAT32 = struct.Struct("<f")
_FLOAT32_NORMAL = 2.0**-126  # the smallest normal float32


_pack = _FLOAT32.pack
_unpack = _FLOAT32.unpack


def float32_value(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (`value` is one, widened).

    A normal float32 is 2^-24 apart from its neighbours (relative), finer than any decimal of
    six significant digits: a decimal of up to six digits that reads back as `value` is
    therefore `value` rounded to six digits, and `%g` drops its trailing zeros. When that one
    does not read back, seven, eight and then nine digits (always enough) are tried; near zero
    (subnormals, evenly spaced) from one digit. Plain Python: the agent does not load numpy
    (~11 MB) to read a float.
    """
    number = float(f"{value:.6g}")
    if _unpack(_pack(number))[0] == value and not -_FLOAT32_NORMAL < value < _FLOAT32_NORMAL:
        return number
    return _longer(value)


def _longer(value: float) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    for digits in (7, 8) if abs(value) >= _FLOAT32_NORMAL else range(1, 9):
        number = float(f"{value:.{digits}g}")
        try:
            if _unpack(_pack(number))[0] == value:
                return number
        except OverflowError:  # rounded up past the largest float32
            continue
    return float(f"{value:.9g}")


def rfc3339_z(value: datetime) -> str:
    """An instant as RFC 3339 in UTC with `Z` (`2026-12-04T15:04:05.123456Z`)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")
