"""Instrument drivers: each turns one device's wire protocol into `Sample`s.

Drivers know nothing of MQTT, signing or QC. A driver is registered in
`drivers.catalog` under its configuration `type` string.
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
