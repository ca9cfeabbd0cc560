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

from datetime import UTC, datetime

import numpy as np

_FLOAT32 = np.float32


def float32_value(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (`value` is one, widened).

    numpy prints a float32 scalar with the shortest round-trip digits (Dragon4, "unique");
    about as fast as the fixed 7-digit formatting it replaces (docs/benchmarks.md).
    """
    return float(str(_FLOAT32(value)))


def rfc3339_z(value: datetime) -> str:
    """An instant as RFC 3339 in UTC with `Z` (`2026-12-04T15:04:05.123456Z`)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")
