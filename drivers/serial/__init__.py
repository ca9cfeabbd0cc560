"""The serial layer every line instrument shares (RS-232, USB CDC, serial device servers).

- `transport.py`: one pyserial port per device (local path, `socket://`, `rfc2217://`) on its
  own thread, every wait with a deadline; lines, delimited frames and fixed-length frames.
- `instrument.py`: `SerialInstrumentConfig` (port, line control, code page, command policy)
  and `SerialInstrumentDriver` (command policy, failure policy, poll and push loops), plus the
  parsing helpers. A driver adds its parser and its channels.

Dose calibrators add their activity checks on top (`drivers/dosecal/common.py`); other line
instruments (e.g. the area monitor in `lb111/`) use this layer directly.
"""
