"""Cost of publishing a float32 at its precision (drivers/numbers.py) on the Modbus hot path.

Prints µs per value for the shortest round-trip float32 (numpy), a pure-Python search over
6..9 digits, and the fixed 7-digit formatting the drivers used before (which dropped digits a
float32 has and kept float64 noise for OPC UA). Usage: .venv/bin/python bench/float_publish.py
"""

from __future__ import annotations

import random
import struct
import timeit

from drivers.numbers import float32_value

_F32 = struct.Struct("<f")


def _pure(value: float) -> float:
    for digits in (6, 7, 8, 9):
        candidate = float(f"{value:.{digits}g}")
        if _F32.unpack(_F32.pack(candidate))[0] == value:
            return candidate
    return value


def main() -> None:
    """Time each way over 10 000 float32 sensor-like values."""
    rng = random.Random(1)
    values = [_F32.unpack(_F32.pack(rng.uniform(0, 1000)))[0] for _ in range(10_000)]
    runs = 5
    ways = {
        "float32_value (numpy shortest)": lambda: [float32_value(v) for v in values],
        "pure Python 6..9 digits": lambda: [_pure(v) for v in values],
        "old: format .7g": lambda: [float(format(v, ".7g")) for v in values],
    }
    for name, way in ways.items():
        seconds = min(timeit.repeat(way, number=1, repeat=runs)) / len(values)
        print(f"{name:32s} {seconds * 1e6:6.2f} µs/value")
    assert [float32_value(v) for v in values] == [_pure(v) for v in values]  # noqa: S101


if __name__ == "__main__":
    main()
