"""Biodex/Mirion Atomlab 500: ASCII command protocol.

What the manual says (Atomlab 500/500Plus manual, Appendix G "Serial Communications
Interface", p. 219): 19.2 kbaud, no parity, 1 stop bit, female/female null-modem cable.
Commands are ASCII, at most 7 letters, ended by CR, with a space or comma before a parameter.
Errors and all data sent as the result of a command are ASCII ended by CR LF. `^C` (0x03) or
`1` (0x31) sends the current activity reading and needs **no** carriage return after it (a
legacy of the Atomlab 100/200): the driver sends the single byte and reads one CR LF line. The
report's layout is described under the `DS` command (p. 220). `ISO` changes the isotope.
Inferred, not in the manual: 8 data bits, no handshake.

Not known: the reading layout. p. 220 could not be found in any public copy of the manual or
in public code, so the line is parsed with `reading_pattern`, a regular expression with named
groups `value` (required), `unit` and `nuclide`, whose shipped default is a guess:
`<nuclide> <value> <unit>` (e.g. `F-18      370.2 MBq`). A site checks it against a captured
line and overrides it (README.md in this folder, "Checking the layout"). A line the pattern
does not match is a BAD sample, never a misread value. Lines that match `error_pattern` (also
a guess) are instrument error replies (BAD samples with the reply as reason).

The agent stays read-only: it sends the poll and nothing else unless a command is listed in
`allowed_commands` (changing the isotope during a QA test would corrupt that test).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import Sample, SampleBatch
from drivers.dosecal.common import (
    NUMBER,
    Measurement,
    ReadingPatternSetting,
    RegexSetting,
    SerialDeviceConfig,
    SerialDoseCalibratorDriver,
    decode_text,
    malformed,
    parse_with_pattern,
)

DEFAULT_READING_PATTERN = (
    r"^\s*(?P<nuclide>[A-Za-z]{1,2}[- ]?\d{1,3}[mM]?)[\s,;:]+"
    rf"(?P<value>{NUMBER})\s*(?P<unit>[kMGT]?Bq|[uµμm]?Ci)\s*$"
)
"""A guess (the manual's layout, p. 220, could not be checked): `F-18      370.2 MBq`."""

DEFAULT_ERROR_PATTERN = r"^\s*(\?|ERR)"
"""A guess (the manual gives no error text): error replies start with `?` or `ERR`."""

_CTRL_C = "\x03"


def parse_atomlab_line(
    line: bytes,
    reading_pattern: re.Pattern[str] | None = None,
    error_pattern: re.Pattern[str] | None = None,
) -> Measurement:
    """Decode one reply line (without CR LF): a reading, an error reply, or malformed."""
    reading_pattern = reading_pattern or _DEFAULT_READING
    error_pattern = error_pattern or _DEFAULT_ERROR
    text = decode_text(line)
    if error_pattern.search(text):
        return malformed(text, f"instrument error reply: {text.strip()[:60]!r}")
    return parse_with_pattern(line, reading_pattern)


_DEFAULT_READING = re.compile(DEFAULT_READING_PATTERN)
_DEFAULT_ERROR = re.compile(DEFAULT_ERROR_PATTERN)


class Atomlab500Config(SerialDeviceConfig):
    """Biodex/Mirion Atomlab 500 on a serial port or serial device server."""

    type: Literal["atomlab500"]
    baudrate: int = Field(default=19200, ge=50, le=4_000_000)
    poll_command: Literal["ctrl-c", "1"] = Field(
        default="ctrl-c", description="The read-only reading request: ^C (0x03) or `1` (no CR)."
    )
    reading_pattern: ReadingPatternSetting = Field(
        default=DEFAULT_READING_PATTERN,
        description=(
            "Regex for the reading line; named groups value (required), unit, nuclide. "
            "The default is a guess: check it against a captured line (README)."
        ),
    )
    error_pattern: RegexSetting = Field(default=DEFAULT_ERROR_PATTERN)
    max_line_bytes: int = Field(default=128, ge=16, le=4096)


class Atomlab500Driver(SerialDoseCalibratorDriver):
    """Polls with ^C (or `1`) every `poll_interval_s`; one `activity` sample per reply line."""

    type = "atomlab500"
    read_only_commands: ClassVar[frozenset[str]] = frozenset({_CTRL_C, "1"})

    def __init__(self, config: Atomlab500Config) -> None:
        super().__init__(config)
        self.atomlab = config
        self._reading = re.compile(config.reading_pattern)
        self._error = re.compile(config.error_pattern)
        self._poll = _CTRL_C if config.poll_command == "ctrl-c" else "1"

    def encode_command(self, command: str) -> bytes:
        """^C and `1` go out as their single byte (no CR needed); others end with CR."""
        if command in (_CTRL_C, "1"):
            return command.encode("ascii")
        return command.encode("ascii") + b"\r"

    async def run_init_command(self, command: str) -> None:
        """Send an allowed command and log the instrument's reply (errors too)."""
        await self.transport.discard_input()
        await self.send_command(command)
        reply = await self.transport.read_line(self.cfg.timeout_s, self.atomlab.max_line_bytes)
        text = None if reply is None else decode_text(reply)
        if text is not None and self._error.search(text):
            self.log.warning("dosecal.command_rejected", command=command, reply=text)
        else:
            self.log.info("dosecal.command_sent", command=command, reply=text)

    async def poll_once(self) -> list[Sample]:
        """Request the current reading and parse the reply line."""
        dropped = await self.transport.discard_input()
        if dropped:
            self.log.debug("dosecal.stale_input_dropped", size=len(dropped))
        await self.send_command(self._poll)
        line = await self.transport.read_line(self.cfg.timeout_s, self.atomlab.max_line_bytes)
        if line is None:
            self.note_failure(f"no reply within {self.cfg.timeout_s:g} s")
            return []
        if len(line) > self.atomlab.max_line_bytes:
            limit = self.atomlab.max_line_bytes
            return [self.to_sample(malformed(decode_text(line), f"line longer than {limit} bytes"))]
        return [self.to_sample(parse_atomlab_line(line, self._reading, self._error))]

    def samples(self) -> AsyncIterator[Sample]:
        """Poll until the link fails."""
        return self.poll_loop()

    def batches(self) -> AsyncIterator[SampleBatch]:
        """One batch per poll cycle until the link fails."""
        return self.poll_batches()
