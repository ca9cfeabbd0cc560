"""Dose calibrator drivers: serial, serial-over-TCP (`socket://`) and RFC 2217 ports.

One module per instrument; each keeps its pure parsing functions apart from I/O so they can
be fuzzed. The failure policy shared by all of them is described in `drivers.dosecal.common`.
"""

from drivers.dosecal.atomlab import Atomlab500Config, Atomlab500Driver
from drivers.dosecal.capintec import CapintecCRC15Config, CapintecCRC15Driver
from drivers.dosecal.common import SerialDeviceConfig, SerialDoseCalibratorDriver
from drivers.dosecal.serial_line import SerialLineConfig, SerialLineDriver
from drivers.dosecal.vdc404 import VDC404Config, VDC404Driver
from drivers.dosecal.vik202 import VIK202Config, VIK202Driver

__all__ = [
    "Atomlab500Config",
    "Atomlab500Driver",
    "CapintecCRC15Config",
    "CapintecCRC15Driver",
    "SerialDeviceConfig",
    "SerialDoseCalibratorDriver",
    "SerialLineConfig",
    "SerialLineDriver",
    "VDC404Config",
    "VDC404Driver",
    "VIK202Config",
    "VIK202Driver",
]
