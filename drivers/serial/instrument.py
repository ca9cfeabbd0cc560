"""What every serial line instrument shares: line settings, parsed values, failure policy.

The serial layer: `SerialInstrumentConfig` (port, line control, framing, command policy),
`SerialInstrumentDriver` (transport, command policy, failure accounting, poll and push loops)
and the parsing helpers. An instrument driver adds its parser and its channel; dose
calibrators (`drivers/dosecal/common.py`) add their activity checks on top.

Failure policy (the same for every instrument):

- A reply or line that is malformed (wrong length, garbage, unknown unit, not a number, NaN,
  implausible value, instrument error reply, checksum mismatch) becomes a `Sample` with
  `quality=bad`, `value=None` and a `reason`; the raw bytes/line are kept in `raw_text`.
- A readable value whose meaning is not established becomes `quality=uncertain` with a reason.
- A poll that gets no (complete) reply within `timeout_s` yields no sample.
- Each of these counts as a failure: the driver logs a warning (`dosecal.failure`) and reports
  the device `degraded` through `Driver.report_status`. The first good reading afterwards
  reports `online` again and logs `dosecal.recovered`.
- `max_consecutive_failures` failures in a row raise `DeviceError`: the supervisor closes the
  driver and reconnects, which also resynchronises a byte stream that lost its framing.
- A dead link (port vanished, socket closed, write timeout) raises `DeviceError` at once.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from drivers.base import (
    DeviceConfigBase,
    DeviceError,
    Driver,
    Quality,
    Sample,
    SampleBatch,
    closing,
)
from drivers.serial.transport import SerialTransport

NUMBER = r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d{1,3})?"
"""A decimal number as instruments print it (decimal point or comma, optional exponent)."""

_NUMBER_RE = re.compile(rf"\s*({NUMBER})\s*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # ANSI CSI sequences (ESC [ ... final byte)
    rb"|\x1b[@-Z\\-_]"  # two-byte ESC sequences (ESC @: printer initialise, ...)
    rb"|[\x1b\x1c\x1d][!-~][\x00-\xff]"  # ESC/POS commands with one parameter byte
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # other control bytes (tab, CR, LF stay)
)
_URL_SCHEMES = ("socket", "rfc2217")
_MAX_TCP_PORT = 65535


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a parser made of one frame or line. `reason` set means malformed (a BAD sample)."""

    raw_text: str
    value: float | None = None
    unit: str | None = None
    nuclide: str | None = None
    reason: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    caution: str | None = None
    """Set when the value is readable but its meaning is not established (e.g. a unit byte
    the site has not confirmed at commissioning): the sample is `uncertain` with this reason."""

    @property
    def ok(self) -> bool:
        """True when the frame was well formed and gave a finite value."""
        return self.reason is None and self.value is not None


LineParser = Callable[[bytes], "Measurement | None"]
"""Parses one line; None means the line is to be ignored (e.g. a ticket header)."""


def malformed(raw_text: str, reason: str) -> Measurement:
    """A measurement that could not be read."""
    return Measurement(raw_text=raw_text, reason=reason)


def decode_text(data: bytes) -> str:
    """Bytes of an ASCII protocol as text: UTF-8 when valid, else Latin-1 (lossless)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_number(text: str) -> float | None:
    """A finite float from instrument text (`370.5`, `370,5`, `3.7E+02`); None otherwise.

    Stricter than `float()`, which would also accept `nan`, `inf` and `1_000`.
    """
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        return None
    number = match.group(1)
    if "," in number:
        number = number.replace(",", ".")
    try:
        value = float(number)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def has_control_chars(text: str) -> bool:
    """True when a line holds control characters other than tab (noise on the line)."""
    return _CONTROL.search(text) is not None


def decode_escapes(text: str) -> bytes:
    r"""`"\x03"`, `"P\r\n"` as written in TOML (backslash escapes) → bytes on the wire."""
    return codecs.decode(text, "unicode_escape").encode("latin-1")


def _valid_escapes(value: str | None) -> str | None:
    if value is not None:
        try:
            wire = decode_escapes(value)
        except (UnicodeError, ValueError) as exc:
            raise ValueError(f"invalid escape: {exc}") from None
        if not wire:
            raise ValueError("empty")
    return value


BytesSetting = Annotated[str, AfterValidator(_valid_escapes)]
"""Bytes written in TOML with backslash escapes (`"\r"`, `"#"`, `"\x03"`), checked at load."""


def strip_escapes(data: bytes) -> bytes:
    """Remove ESC/POS and ANSI escape sequences and stray control bytes (printer streams)."""
    return _ESCAPES.sub(b"", data)


def parse_with_pattern(
    line: bytes,
    pattern: re.Pattern[str],
    *,
    default_unit: str | None = None,
    default_nuclide: str | None = None,
) -> Measurement:
    """Parse one text line with a regex holding named groups `value`, `unit`, `nuclide`, ...

    Other named groups that matched are kept as attributes.
    """
    text = decode_text(line)
    if has_control_chars(text):
        return malformed(text, "control characters in line")
    match = pattern.search(text)
    if match is None:
        return malformed(text, "line does not match the configured pattern")
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    raw_value = groups.pop("value", None)
    if raw_value is None:
        return malformed(text, "pattern matched without a value")
    value = parse_number(raw_value)
    if value is None:
        return malformed(text, f"value {raw_value.strip()!r} is not a finite number")
    unit = groups.pop("unit", "").strip() or default_unit
    nuclide = groups.pop("nuclide", "").strip() or default_nuclide
    attrs = {k: v.strip() for k, v in groups.items()}
    return Measurement(raw_text=text, value=value, unit=unit, nuclide=nuclide, attrs=attrs)


def normalize_command(command: str) -> str:
    """Commands compare case-insensitively with runs of blanks folded."""
    return " ".join(command.split()).upper()


class SerialInstrumentConfig(DeviceConfigBase):
    """Port, line control and command policy every serial line instrument has."""

    @property
    def channels(self) -> list[str]:
        """Channels this instrument's readings use (shown by `isoedge check-config`)."""
        return [self.channel]

    channel: str = Field(
        default="value",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
        description="Channel of the instrument's main reading.",
    )
    port: str = Field(
        min_length=1,
        description="Serial device (/dev/ttyUSB0), socket://HOST:PORT or rfc2217://HOST:PORT.",
    )
    baudrate: int = Field(default=9600, ge=50, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    rtscts: bool = Field(default=False, description="RTS/CTS hardware flow control.")
    xonxoff: bool = Field(default=False, description="XON/XOFF software flow control.")
    dtr: bool | None = Field(
        default=None, description="Drive DTR on (true) or off (false); unset: pyserial's default."
    )
    rts: bool | None = Field(
        default=None,
        description="Drive RTS on (true) or off (false) when rtscts is off; unset: the default.",
    )
    terminator: BytesSetting | None = Field(
        default=None,
        description=r"End of a line or frame, with escapes ('\r', '#', '\x03'); "
        "unset: CR, LF or CR LF.",
    )
    start_delimiter: BytesSetting | None = Field(
        default=None, description="Start of a frame (with `terminator`); bytes before it are noise."
    )
    strip_escapes: bool = Field(
        default=False,
        description="Remove ESC/POS and ANSI escape sequences and control bytes from each line "
        "(printer streams).",
    )
    encoding: str = Field(
        default="utf-8",
        description="Code page of text lines (utf-8 falls back to latin-1 on invalid bytes).",
    )
    max_consecutive_failures: int = Field(
        default=3, ge=1, le=1000, description="Failed polls/lines in a row before a DeviceError."
    )
    allowed_commands: list[str] = Field(
        default_factory=list,
        description="State-changing commands the agent may send (exact text), e.g. ['!BON'].",
    )
    init_commands: list[str] = Field(
        default_factory=list,
        description="Sent once after each connect; each must also be in allowed_commands.",
    )

    @field_validator("stopbits")
    @classmethod
    def _check_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("expected 1, 1.5 or 2")
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: str) -> str:
        if "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme not in _URL_SCHEMES:
                raise ValueError(
                    f"unsupported URL scheme {scheme!r}; expected one of {_URL_SCHEMES}"
                )
            host, _, port = rest.partition("?")[0].rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) <= _MAX_TCP_PORT:
                raise ValueError(f"expected {scheme}://HOST:PORT")
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        try:
            "".encode(value)
        except LookupError:
            raise ValueError(f"unknown code page {value!r}") from None
        return value

    @model_validator(mode="after")
    def _check_commands(self) -> SerialInstrumentConfig:
        allowed = {normalize_command(c) for c in self.allowed_commands}
        for command in self.init_commands:
            if normalize_command(command) not in allowed:
                raise ValueError(
                    f"init command {command!r} may change the instrument's state; "
                    "list it in allowed_commands to allow it"
                )
        return self

    def serial_settings(self) -> dict[str, Any]:
        """Keyword arguments for pyserial (`dtr`/`rts` are applied after opening)."""
        settings: dict[str, Any] = {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "rtscts": self.rtscts,
            "xonxoff": self.xonxoff,
        }
        if self.dtr is not None:
            settings["dtr"] = self.dtr
        if self.rts is not None and not self.rtscts:
            settings["rts"] = self.rts
        return settings

    def decode(self, data: bytes) -> str:
        """Bytes of a text line in the configured code page (never raises)."""
        if self.encoding.replace("-", "").lower() == "utf8":
            return decode_text(data)
        return data.decode(self.encoding, errors="replace")


class SerialInstrumentDriver(Driver):
    """Base of the serial line instrument drivers: transport, command policy, failures.

    A driver gives its parser(s) and, for a poll protocol, `poll_once`; `check_value` adds
    the instrument's plausibility checks (dose calibrators: activity unit and bounds).
    """

    read_only_commands: ClassVar[frozenset[str]] = frozenset()
    """Commands that only read; anything else must be in `allowed_commands`."""

    def __init__(self, config: SerialInstrumentConfig) -> None:
        super().__init__(config)
        self.cfg: SerialInstrumentConfig = config
        self.transport = SerialTransport(
            config.port,
            device=config.id,
            settings=config.serial_settings(),
            timeout_s=config.timeout_s,
            log=self.log,
        )
        self._allowed = {normalize_command(c) for c in config.allowed_commands}
        self._failures = 0
        self._degraded = False

    # -- link -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the port, drop stale input, send the configured (allowed) init commands."""
        try:
            await self.transport.open()
            self.log.info("dosecal.connected", port=self.cfg.port)
            dropped = await self.transport.discard_input()
            if dropped:
                self.log.debug("dosecal.stale_input_dropped", size=len(dropped))
            for command in self.cfg.init_commands:
                await self.run_init_command(command)
        except DeviceError as exc:
            self.log.warning("dosecal.link_error", port=self.cfg.port, error=str(exc))
            raise

    async def close(self) -> None:
        """Close the port (never raises)."""
        await self.transport.close()

    def check_command(self, command: str) -> None:
        """Refuse a command that may change the instrument's state unless configured."""
        key = normalize_command(command)
        if key not in self.read_only_commands and key not in self._allowed:
            raise DeviceError(
                f"refusing to send {command!r}: not read-only and not in allowed_commands",
                device=self.device_id,
            )

    def encode_command(self, command: str) -> bytes:
        """Wire form of a command (ASCII ended by CR unless the protocol says otherwise)."""
        return command.encode("ascii") + b"\r"

    async def send_command(self, command: str) -> None:
        """Send one command after checking the command policy."""
        self.check_command(command)
        await self.transport.write(self.encode_command(command))

    async def run_init_command(self, command: str) -> None:
        """Send an init command; protocols with acknowledgements override this to check them."""
        await self.send_command(command)
        self.log.info("dosecal.command_sent", command=command)

    async def read_record(self, timeout_s: float, max_bytes: int) -> bytes | None:
        """The next line or frame, framed as configured, without its delimiters.

        `terminator` unset: a line ended by CR, LF or CR LF. Set: a frame up to it (from
        `start_delimiter` when set). With `strip_escapes`, escape sequences and control
        bytes are removed; text in another code page (`encoding`) is handed on as UTF-8.
        None when nothing complete arrived within `timeout_s`; a record longer than
        `max_bytes` is returned `max_bytes + 1` long (the caller rejects it).
        """
        cfg = self.cfg
        if cfg.terminator is None:
            record = await self.transport.read_line(timeout_s, max_bytes)
        else:
            end = decode_escapes(cfg.terminator)
            start = decode_escapes(cfg.start_delimiter) if cfg.start_delimiter else b""
            taken = await self.transport.read_delimited(end, timeout_s, max_bytes, start=start)
            if taken is None:
                return None
            skipped, frame = taken
            if skipped:
                self.log.debug("serial.noise_skipped", raw=decode_text(skipped))
            record = frame[len(start) :].removesuffix(end)
        if record is not None and cfg.strip_escapes:
            record = strip_escapes(record)
        if record is not None and cfg.encoding.replace("-", "").lower() != "utf8":
            record = record.decode(cfg.encoding, errors="replace").encode("utf-8")
        return record

    # -- outcome accounting -----------------------------------------------------------------

    def note_failure(self, reason: str, raw_text: str | None = None) -> None:
        """Count a failed poll/line: warn, report `degraded`."""
        self._failures += 1
        self._degraded = True
        self.log.warning("dosecal.failure", reason=reason, raw=raw_text, consecutive=self._failures)
        self.report_status("degraded", reason)

    def note_success(self) -> None:
        """A good reading: reset the failure count and report recovery once."""
        self._failures = 0
        if self._degraded:
            self._degraded = False
            self.log.info("dosecal.recovered")
            self.report_status("online", None)

    def raise_if_exhausted(self) -> None:
        """Raise DeviceError once `max_consecutive_failures` failures happened in a row."""
        if self._failures >= self.cfg.max_consecutive_failures:
            raise DeviceError(
                f"{self._failures} consecutive failed readings; reconnecting", device=self.device_id
            )

    def check_value(self, measurement: Measurement, channel: str) -> str | None:  # noqa: ARG002 - the hook's signature; instruments override it
        """Why a parsed value cannot be right (instrument-specific checks), or None."""
        return None

    def to_sample(
        self,
        measurement: Measurement,
        channel: str | None = None,
        *,
        checked: bool = True,
    ) -> Sample:
        """A GOOD sample from a valid measurement, else a BAD one (and count the failure).

        `channel` defaults to the configured main channel; `checked` applies `check_value`.
        A measurement with a `caution` is UNCERTAIN with it as the reason.
        """
        if channel is None:
            channel = self.cfg.channel
        reason = measurement.reason
        if reason is None and measurement.value is None:
            reason = "no value"
        if reason is None and checked:
            reason = self.check_value(measurement, channel)
        if reason is not None:
            self.note_failure(reason, measurement.raw_text)
            return self.sample(
                channel,
                None,
                measurement.unit,
                quality=Quality.BAD,
                reason=reason,
                raw_text=measurement.raw_text,
                nuclide=measurement.nuclide,
            )
        self.note_success()
        if measurement.caution is not None:
            return self.sample(
                channel,
                measurement.value,
                measurement.unit,
                quality=Quality.UNCERTAIN,
                reason=measurement.caution,
                raw_text=measurement.raw_text,
                nuclide=measurement.nuclide,
                attrs=dict(measurement.attrs),
            )
        return self.sample(
            channel,
            measurement.value,
            measurement.unit,
            raw_text=measurement.raw_text,
            nuclide=measurement.nuclide,
            attrs=dict(measurement.attrs),
        )

    # -- loops ------------------------------------------------------------------------------

    async def poll_once(self) -> list[Sample]:
        """One poll cycle (poll protocols override this)."""
        raise NotImplementedError

    async def poll_loop(self) -> AsyncIterator[Sample]:
        """Call `poll_once` every `poll_interval_s` (never faster, skipping missed slots)."""
        try:
            async with contextlib.aclosing(self._poll_loop()) as inner:
                async for sample in inner:
                    yield sample
        except DeviceError as exc:
            self.log.warning("dosecal.link_error", port=self.cfg.port, error=str(exc))
            raise

    async def _poll_loop(self) -> AsyncGenerator[Sample, None]:
        async with contextlib.aclosing(self._polls()) as polls:
            async for samples in polls:
                for sample in samples:
                    yield sample

    async def _polls(self) -> AsyncGenerator[list[Sample], None]:
        interval = self.cfg.poll_interval_s
        next_due = time.monotonic()
        while True:
            delay = next_due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_due = max(next_due + interval, time.monotonic())
            samples = await self.poll_once()
            if samples:
                yield samples
            self.raise_if_exhausted()

    async def poll_batches(self) -> AsyncIterator[SampleBatch]:
        """`poll_loop` with the samples of one poll cycle handed over as one batch."""
        try:
            async with contextlib.aclosing(self._polls()) as polls:
                async for samples in polls:
                    yield SampleBatch.from_samples(samples)
        except DeviceError as exc:
            self.log.warning("dosecal.link_error", port=self.cfg.port, error=str(exc))
            raise

    async def push_batches(
        self, parse: LineParser, idle_timeout_s: float | None, max_line_bytes: int
    ) -> AsyncIterator[SampleBatch]:
        """`push_loop` with each pushed line (one measurement) handed over as a batch."""
        lines = self.push_loop(parse, idle_timeout_s, max_line_bytes)
        async with closing(lines) as inner:
            async for sample in inner:
                yield SampleBatch.from_samples([sample])

    async def push_loop(
        self, parse: LineParser, idle_timeout_s: float | None, max_line_bytes: int
    ) -> AsyncIterator[Sample]:
        """Read lines the instrument pushes; `parse(line: bytes) -> Measurement | None`.

        Silence is normal for a push instrument (it sends after each measurement), so it is
        only an error when `idle_timeout_s` is configured.
        """
        try:
            lines = self._push_loop(parse, idle_timeout_s, max_line_bytes)
            async with contextlib.aclosing(lines) as inner:
                async for sample in inner:
                    yield sample
        except DeviceError as exc:
            self.log.warning("dosecal.link_error", port=self.cfg.port, error=str(exc))
            raise

    async def _push_loop(
        self, parse: LineParser, idle_timeout_s: float | None, max_line_bytes: int
    ) -> AsyncGenerator[Sample, None]:
        last_line = time.monotonic()
        wait_s = idle_timeout_s if idle_timeout_s is not None else 5.0
        while True:
            line = await self.read_record(wait_s, max_line_bytes)
            if line is None:
                idle = time.monotonic() - last_line
                if idle_timeout_s is not None and idle >= idle_timeout_s:
                    self.note_failure(f"no data for {idle:.1f} s")
                    raise DeviceError(
                        f"no data for {idle:.1f} s (idle_timeout_s)", device=self.device_id
                    )
                continue
            last_line = time.monotonic()
            if not line.strip():
                continue  # a record left empty (e.g. only escape sequences)
            if len(line) > max_line_bytes:
                yield self.to_sample(
                    malformed(decode_text(line), f"line longer than {max_line_bytes} bytes")
                )
            else:
                measurement = parse(line)
                if measurement is None:  # a line the configuration says to ignore
                    continue
                yield self.to_sample(measurement)
            self.raise_if_exhausted()


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a configured regular expression; a bad one is a configuration error."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


def compile_reading_pattern(pattern: str) -> re.Pattern[str]:
    """A configured reading pattern: valid, and with the named group `value` it must fill."""
    compiled = compile_pattern(pattern)
    if "value" not in compiled.groupindex:
        raise ValueError("the pattern needs a named group (?P<value>...)")
    return compiled


def _valid_pattern(value: str) -> str:
    compile_pattern(value)
    return value


def _valid_reading_pattern(value: str) -> str:
    compile_reading_pattern(value)
    return value


RegexSetting = Annotated[str, AfterValidator(_valid_pattern)]
"""A configured regular expression, checked when the configuration is loaded."""

ReadingPatternSetting = Annotated[str, AfterValidator(_valid_reading_pattern)]
"""A configured reading pattern: a valid regex with the named group `value`."""
