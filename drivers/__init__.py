"""Instrument drivers: each turns one device's wire protocol into `Sample`s.

Drivers know nothing of MQTT, signing or QC. Each driver is registered under its
configuration `type` in the `isoedge.drivers` entry-point group (`drivers.registry`), and
keeps its code, configuration model, README, sample configuration and test cases in one
folder.
"""

from drivers.base import (
    DeviceConfigBase,
    DeviceError,
    Driver,
    Quality,
    Sample,
    SampleKind,
)

__all__ = ["DeviceConfigBase", "DeviceError", "Driver", "Quality", "Sample", "SampleKind"]
