"""The serial transport moved to `drivers/serial/transport.py` (every line instrument uses it)."""

from drivers.serial.transport import SerialTransport, take_delimited

__all__ = ["SerialTransport", "take_delimited"]
