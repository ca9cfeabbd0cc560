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


def _as_float32(value: float) -> float:
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


def float32_value(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (`value` is one, widened).

    A normal float32 is 2^-24 apart from its neighbours (relative), finer than any decimal of
    six significant digits: a decimal of up to six digits that reads back as `value` is therefore
    `value` rounded to six digits, and `%g` drops its trailing zeros. When that one does not
    read back, seven, eight and then nine digits (always enough for a float32) are tried.
    Plain Python (no numpy, ~11 MB of memory for the agent), about as fast.
    """
    if not math.isfinite(value):
        return value
    # Subnormals are evenly spaced (1.4e-45 apart): fewer digits can suffice there.
    for digits in (6, 7, 8) if abs(value) >= _FLOAT32_NORMAL else range(1, 9):
        text = f"{value:.{digits}g}"
        try:
            if _as_float32(float(text)) == value:
                return float(text)
        except OverflowError:  # rounded up past the largest float32
            continue
    return float(f"{value:.9g}")


def rfc3339_z(value: datetime) -> str:
    """An instant as RFC 3339 in UTC with `Z` (`2026-12-04T15:04:05.123456Z`)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")
