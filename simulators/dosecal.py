"""Serial instrument simulators on a pseudo-terminal or a TCP port (a serial device server).

The server part is instrument-agnostic: a pty, a raw TCP or RFC 2217 device server, sessions,
fault injection on whatever the instrument sends. What the instrument says is its profile's
(the `simulator.py` in its driver folder): dose calibrators use the simulated chamber below,
other line instruments (`activity = False` profiles, e.g. `lb111`) make their own values.
`SerialInstrumentSimulator` is the same class under its general name.

Over TCP the device server is either raw (`tcp`: bytes as they are, `socket://HOST:PORT`) or
RFC 2217 (`rfc2217`: Telnet with the COM-PORT option, `rfc2217://HOST:PORT`), where the client
sets baud rate, framing and control lines; pyserial's own `PortManager` speaks that protocol
here, applied to the simulated instrument's line settings (`line`).

Models are the dose calibrator drivers' type names (`capintec_crc15`, `atomlab500`, `vdc404`,
`vik202`, `serial_line` — printer-style CRC-55tR tickets for the generic line driver, and any
installed driver package that declares a profile). Each model's wire behaviour (frame or line
format, default unit, command handling) is the `simulator.py` profile in its driver folder,
found through the driver registry (`drivers.registry`); this module holds what they share.

The simulated chamber holds a sample that decays with its nuclide's half-life (from the
agent's nuclide table), adds a background, and reads with Poisson-like noise. The operator
can load a new sample or turn the nuclide selector (`set_nuclide`): the displayed activity
then scales with the ratio of chamber responses, as on a real instrument. The responses used
here are illustrative, not vendor calibration data.

Faults (`set_fault`), applied to whatever the instrument sends while active:

- `unplugged`: on a pty nothing is sent or answered (a pulled RS-232 cable is silence); on
  TCP the device server drops every connection and closes new ones at once.
- `garbage`: random bytes instead of a reply or line.
- `truncated`: only the first part of a reply or line, without its terminator.
- `timeout`: polls are answered `slow_reply_s` late; push instruments fall silent.
- `wrong_length`: binary replies carry two extra bytes; lines overflow any sane length.
- `corrupt`: bit errors, as the instrument profile makes them (`SimulationProfile.corrupt`):
  the CRC-15's unit byte, name or value made invalid; by default the digits of a text reply
  with their high bit set (a checksummed protocol then fails its checksum).

QC faults (`set_qc_fault`) change what the chamber measures, for the QC programme's tests:

- `gain_drift`: the reading is 7 % high (an electrometer gain drift; constancy fails);
- `nonlinearity`: above 30 GBq the reading is 8 % low (ion recombination; linearity fails);
- `geometry`: a sample in a syringe reads 6 % low against the vial (a container effect).

Reference sources are placed in and taken out of the chamber (`place_source`, `empty`), the
operator turns the selector (`set_nuclide`), a sample moves between containers
(`set_container`). Besides the methods, a small control channel (`--control-port`: one JSON
object per line on 127.0.0.1, answered with the state) lets tests and the demo drive a
standalone simulator; stdin takes the same commands in words.

Everything runs on the caller's asyncio loop (no threads), so `isoedge demo` can start
several simulators in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import sys
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from serial import rfc2217

from agent.physics import half_life_s, normalize_nuclide
from agent.physics.units import ACTIVITY_TO_MBQ, activity_to, canonical_unit
from drivers.dosecal.simulation import CTRL_C, Session, SimulationProfile
from drivers.registry import registry

FAULTS = ("unplugged", "garbage", "truncated", "timeout", "wrong_length", "corrupt")
DEFAULT_MODEL = "capintec_crc15"
QC_FAULTS = ("gain_drift", "nonlinearity", "geometry")
GAIN_DRIFT = 1.07
NONLINEAR_ABOVE_MBQ = 30_000.0
NONLINEAR_FACTOR = 0.92
GEOMETRY_FACTORS: dict[str, float] = {"vial": 1.0, "syringe": 0.94}
CONTAINERS = ("vial", "syringe")


def models() -> list[str]:
    """Every registered driver type with a dose calibrator simulator profile."""
    return [spec.type for spec in registry().with_simulator()]


def profile_class(model: str) -> type[SimulationProfile]:
    """The simulator profile of a driver type (imported on first use)."""
    spec = registry().get(model)
    if spec is None or not spec.has_simulator:
        raise ValueError(f"unknown model {model!r}; expected one of {models()}")
    profile = spec.simulator_profile()
    if not (isinstance(profile, type) and issubclass(profile, SimulationProfile)):
        raise TypeError(f"driver {model!r}: simulator profile {profile!r} is no SimulationProfile")
    return profile

# Relative chamber response (ionisation current per MBq) of a few nuclides. Illustrative
# values for the simulation only: they make a wrong nuclide setting visibly wrong.
RESPONSE: dict[str, float] = {
    "F-18": 1.0, "C-11": 1.0, "N-13": 1.0, "O-15": 1.0, "Ga-68": 0.95, "Rb-82": 1.05,
    "Cu-64": 0.35, "Zr-89": 1.1, "Tc-99m": 0.22, "I-123": 0.3, "I-131": 0.62,
    "In-111": 0.55, "Lu-177": 0.07, "Y-90": 0.02, "Tl-201": 0.15, "Cs-137": 0.74,
    "Co-57": 0.2, "Ba-133": 0.68, "Ge-68": 0.95, "Mo-99": 0.5,
}

_CTRL_C = ord(CTRL_C)
_AMPERE_PER_MBQ = 2.5e-13  # chamber current per MBq of an F-18-like emitter (illustrative)
_COUNTS_PER_MBQ = 4000.0  # sets the Poisson-like noise: sd = sqrt(A / _COUNTS_PER_MBQ)


class Chamber:
    """The simulated ionisation chamber: a decaying sample, background, noise, selector."""

    def __init__(
        self,
        nuclide: str,
        activity_mbq: float,
        *,
        background_mbq: float = 0.01,
        noise: bool = True,
        time_scale: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.noise = noise
        self.time_scale = time_scale
        self.background_mbq = background_mbq
        self.background_subtraction = True
        self.zero_offset_mbq = 0.0
        self.sample_nuclide = _canonical(nuclide)
        self.selected_nuclide: str | None = self.sample_nuclide
        self.a0_mbq = activity_mbq
        self.t0 = self._now()
        self.container = "vial"
        self.qc_faults: set[str] = set()

    def _now(self) -> float:
        return time.monotonic() * self.time_scale

    def load_sample(self, nuclide: str, activity_mbq: float) -> None:
        """A new sample goes in; the operator selects its nuclide."""
        self.sample_nuclide = _canonical(nuclide)
        self.selected_nuclide = self.sample_nuclide
        self.a0_mbq = activity_mbq
        self.t0 = self._now()

    def empty(self) -> None:
        """Take the sample or source out: only background remains."""
        self.a0_mbq = 0.0
        self.t0 = self._now()

    def _measured_sample_mbq(self) -> float:
        """The sample's part of the signal, through the QC faults, in MBq of the setting."""
        response = RESPONSE.get(self.sample_nuclide, 0.5)
        selected = RESPONSE.get(self.selected_nuclide or "", response)
        value = self.true_activity_mbq() * response / selected
        faults = self.qc_faults
        if "geometry" in faults:
            value *= GEOMETRY_FACTORS.get(self.container, 1.0)
        if "nonlinearity" in faults and value > NONLINEAR_ABOVE_MBQ:
            value *= NONLINEAR_FACTOR
        if "gain_drift" in faults:
            value *= GAIN_DRIFT
        return value

    def true_activity_mbq(self) -> float:
        """The sample's activity now (decayed since it was loaded)."""
        elapsed = self._now() - self.t0
        return self.a0_mbq * math.exp(-math.log(2) * elapsed / half_life_s(self.sample_nuclide))

    def _signal_mbq(self) -> float:
        """Chamber signal in MBq of the selected nuclide, background included, with noise."""
        mean = self._measured_sample_mbq() + self.background_mbq
        if not self.noise:
            return mean
        return self.rng.gauss(mean, math.sqrt(max(mean, 0.0) / _COUNTS_PER_MBQ))

    def displayed_mbq(self) -> float:
        """What the display shows, in MBq."""
        value = self._signal_mbq() - self.zero_offset_mbq
        if self.background_subtraction:
            value -= self.background_mbq
        return value

    def current_a(self) -> float:
        """Chamber current (A), as the VIK-202 reports it."""
        response = RESPONSE.get(self.sample_nuclide, 0.5)
        return (self.true_activity_mbq() * response + self.background_mbq) * _AMPERE_PER_MBQ

    def autozero(self) -> float:
        """Null the electronics' offset (simulated as a tiny residual); return it in MBq."""
        self.zero_offset_mbq = self.rng.gauss(0.0, 1e-4) if self.noise else 0.0
        return self.zero_offset_mbq


def _canonical(nuclide: str) -> str:
    name = normalize_nuclide(nuclide)
    if name is None:
        raise ValueError(f"unknown nuclide {nuclide!r}")
    return name


def parse_activity(text: str) -> float:
    """`"370 MBq"`, `"10mCi"`, `"370"` (MBq) → MBq."""
    match = re.fullmatch(r"\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*([A-Za-zµμ]*)\s*", text)
    if match is None:
        raise ValueError(f"expected an activity like '370 MBq', got {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "MBq"
    canonical = canonical_unit(unit)
    if canonical not in ACTIVITY_TO_MBQ:
        raise ValueError(f"unknown activity unit {unit!r}")
    return value * ACTIVITY_TO_MBQ[canonical]


CONTROL_COMMANDS = (
    "place", "empty", "setting", "container", "key", "qc_fault", "fault", "status",
)
Transport = Literal["pty", "tcp", "rfc2217"]
TRANSPORTS = ("pty", "tcp", "rfc2217")


@dataclass
class LineSettings:
    """The instrument end of a serial line, as an RFC 2217 device server exposes it.

    pyserial's `PortManager` sets the framing and output lines the client asks for and reads
    the modem inputs; a powered instrument asserts CTS and DSR.
    """

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False
    break_condition: bool = False
    rts: bool = True
    dtr: bool = True
    cts: bool = True
    dsr: bool = True
    ri: bool = False
    cd: bool = False
    purges: int = 0

    def reset_input_buffer(self) -> None:
        """The client purged the server's receive buffer (nothing is buffered here)."""
        self.purges += 1

    def reset_output_buffer(self) -> None:
        """The client purged the server's transmit buffer (nothing is buffered here)."""
        self.purges += 1


@dataclass(eq=False)
class _Session:
    """One connected reader: the pty, or one TCP connection."""

    write: Callable[[bytes], None]
    close: Callable[[], None] | None = None
    buffer: bytearray = field(default_factory=bytearray)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()


class _TelnetWriter:
    """The `connection` pyserial's PortManager writes its Telnet answers to."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


def _escaping(
    telnet: rfc2217.PortManager, write: Callable[[bytes], None]
) -> Callable[[bytes], None]:
    """Instrument output on an RFC 2217 link: 0xFF bytes doubled so Telnet passes them."""

    def write_escaped(data: bytes) -> None:
        write(b"".join(telnet.escape(data)))

    return write_escaped


class DoseCalibratorSimulator:
    """One simulated dose calibrator on a pty, or a TCP device server (raw or RFC 2217).

    `start()` returns the address a driver's `port` setting uses: the pty path,
    `socket://HOST:PORT` or `rfc2217://HOST:PORT`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        transport: Transport = "pty",
        nuclide: str = "F-18",
        activity_mbq: float = 370.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: str | None = None,
        background_mbq: float = 0.01,
        noise: bool = True,
        push_interval_s: float = 2.0,
        slow_reply_s: float = 5.0,
        time_scale: float = 1.0,
        fault: str | None = None,
        seed: int | None = None,
    ) -> None:
        profile = profile_class(model)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.model = model
        self.transport = transport
        self.host = host
        self.port = port
        self.unit = profile.default_unit if unit is None or profile.fixed_unit else unit
        if profile.activity and canonical_unit(self.unit) not in ACTIVITY_TO_MBQ:
            raise ValueError(f"unknown activity unit {self.unit!r}")
        self.push_interval_s = push_interval_s
        self.slow_reply_s = slow_reply_s
        self.rng = random.Random(seed)
        self.chamber = Chamber(
            nuclide,
            activity_mbq,
            background_mbq=background_mbq,
            noise=noise,
            time_scale=time_scale,
            rng=self.rng,
        )
        self.fault: str | None = None
        self.address: str | None = None
        self.valid_frames: deque[str] = deque(maxlen=4096)
        """Raw text (hex for binary) of every well-formed reply/line sent, newest last."""
        self.commands: deque[str] = deque(maxlen=1024)
        """Commands received (ASCII models), newest last."""
        self.line = LineSettings()
        """Serial settings and control lines (what an RFC 2217 client set)."""
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._pty: tuple[int, int] | None = None
        self._push_task: asyncio.Task[None] | None = None
        self.profile = profile(self)
        """This model's behaviour (its driver folder's `simulator.py`)."""
        self.profile.on_start()
        self._control: asyncio.Server | None = None
        self.set_fault(fault)

    # -- control ----------------------------------------------------------------------------

    def set_fault(self, name: str | None) -> None:
        """Start a fault (see the module docstring), or end it with None."""
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; expected one of {FAULTS}")
        self.fault = name
        if name == "unplugged" and self.transport != "pty":
            for session in list(self._sessions):
                self._drop(session)

    def set_nuclide(self, name: str) -> None:
        """The operator turns the nuclide selector (the sample in the chamber stays)."""
        self.chamber.selected_nuclide = _canonical(name)
        self.profile.on_selector_change()

    def load_sample(self, nuclide: str, activity_mbq: float) -> None:
        """The operator puts a new sample in and selects its nuclide."""
        self.chamber.load_sample(nuclide, activity_mbq)
        self.profile.on_selector_change()

    def place_source(self, nuclide: str, activity_mbq: float, container: str = "vial") -> None:
        """A reference source (or sample) goes into the chamber; its nuclide is selected."""
        self.set_container(container)
        self.load_sample(nuclide, activity_mbq)

    def empty(self) -> None:
        """The source or sample is taken out of the chamber."""
        self.chamber.empty()

    def press_key(self, key: str) -> None:
        """The operator presses a front-panel key of the model (e.g. the CRC-15's `print`)."""
        keys = self.profile.keys
        if key not in keys:
            raise ValueError(f"model {self.model!r} has no key {key!r}; it has {list(keys)}")
        self.profile.on_key(key)

    def note_command(self, command: str) -> None:
        """Record a command received (models that frame commands themselves)."""
        self.commands.append(command)

    def broadcast(self, data: bytes, *, record: bool = False) -> None:
        """Send bytes unasked to every connected reader, through the active fault."""
        for session in list(self._sessions):
            self.reply(session, data, record=record)

    def set_container(self, container: str) -> None:
        """The sample is now in this container (vial or syringe)."""
        if container not in CONTAINERS:
            raise ValueError(f"unknown container {container!r}; expected one of {CONTAINERS}")
        self.chamber.container = container

    def set_qc_fault(self, name: str, on: bool = True) -> None:
        """Start (or end) a measurement fault: gain_drift, nonlinearity, geometry."""
        if name not in QC_FAULTS:
            raise ValueError(f"unknown QC fault {name!r}; expected one of {QC_FAULTS}")
        if on:
            self.chamber.qc_faults.add(name)
        else:
            self.chamber.qc_faults.discard(name)

    def state(self) -> dict[str, object]:
        """What is in the chamber and which faults are on (the control channel's answer)."""
        chamber = self.chamber
        return {
            "sample": chamber.sample_nuclide if chamber.a0_mbq > 0 else None,
            "activity_mbq": chamber.true_activity_mbq(),
            "setting": chamber.selected_nuclide,
            "container": chamber.container,
            "qc_faults": sorted(chamber.qc_faults),
            "fault": self.fault,
            "address": self.address,
        }

    def control(self, command: dict[str, object]) -> dict[str, object]:
        """Apply one control command (see `CONTROL_COMMANDS`); returns the new state."""
        verb = command.get("cmd")
        if verb == "place":
            self.place_source(
                str(command["nuclide"]), float(str(command["activity_mbq"])),
                str(command.get("container", "vial")),
            )  # fmt: skip
        elif verb == "empty":
            self.empty()
        elif verb == "setting":
            self.set_nuclide(str(command["nuclide"]))
        elif verb == "container":
            self.set_container(str(command["container"]))
        elif verb == "key":
            self.press_key(str(command["key"]))
        elif verb == "qc_fault":
            self.set_qc_fault(str(command["name"]), bool(command.get("on", True)))
        elif verb == "fault":
            name = command.get("name")
            self.set_fault(None if name in (None, "none") else str(name))
        elif verb != "status":
            raise ValueError(f"unknown command {verb!r}; expected one of {CONTROL_COMMANDS}")
        return self.state()

    async def start_control(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve the control channel (JSON lines) on `host:port`; returns the port."""
        self._control = await asyncio.start_server(self._on_control, host, port)
        return int(self._control.sockets[0].getsockname()[1])

    async def _on_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                answer = self._control_line(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _control_line(self, line: bytes) -> dict[str, object]:
        try:
            command = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        if not isinstance(command, dict):
            return {"ok": False, "error": "expected a JSON object"}
        try:
            return {"ok": True, **self.control(command)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    def sent_valid(self, raw_text: str) -> bool:
        """True if the simulator sent exactly this well-formed frame/line recently."""
        return raw_text in self.valid_frames

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        """Open the pty or TCP port; return the address for a driver's `port` setting."""
        loop = asyncio.get_running_loop()
        if self.transport == "pty":
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no CR/LF translation: a plain 8-bit line
            os.set_blocking(master, False)
            self._pty = (master, slave)
            session = _Session(write=self._pty_write)
            self._sessions.add(session)
            loop.add_reader(master, self._on_pty_readable, session)
            self.address = os.ttyname(slave)
        else:
            self._server = await asyncio.start_server(self._on_tcp_client, self.host, self.port)
            bound = self._server.sockets[0].getsockname()
            self.port = int(bound[1])
            scheme = "socket" if self.transport == "tcp" else "rfc2217"
            self.address = f"{scheme}://{self.host}:{self.port}"
        if self.profile.pushes:
            self._push_task = asyncio.create_task(self._push_loop(), name=f"dosecal-{self.model}")
        return self.address

    async def stop(self) -> None:
        """Close everything this simulator opened; safe to call twice."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
            self._push_task = None
        for session in list(self._sessions):
            self._drop(session)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None
        if self._pty is not None:
            master, slave = self._pty
            asyncio.get_running_loop().remove_reader(master)
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None

    def _drop(self, session: _Session) -> None:
        session.cancel_timers()
        if session.close is not None:
            session.close()
            self._sessions.discard(session)

    # -- transports -------------------------------------------------------------------------

    def _pty_write(self, data: bytes) -> None:
        if self._pty is None:
            return
        # Nobody reading the other end and its buffer full: a real line drops bytes too.
        with contextlib.suppress(OSError):
            os.write(self._pty[0], data)

    def _on_pty_readable(self, session: _Session) -> None:
        if self._pty is None:
            return
        try:
            data = os.read(self._pty[0], 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            self._on_input(session, data)

    async def _on_tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.fault == "unplugged":
            writer.close()
            return

        def write(data: bytes) -> None:
            if not writer.is_closing():
                writer.write(data)

        # RFC 2217: Telnet negotiation and COM-PORT commands are answered by pyserial's
        # PortManager; only the data bytes between them reach the instrument.
        telnet = (
            rfc2217.PortManager(self.line, _TelnetWriter(write))
            if self.transport == "rfc2217"
            else None
        )
        session = _Session(
            write=write if telnet is None else _escaping(telnet, write), close=writer.close
        )
        self._sessions.add(session)
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                if telnet is not None:
                    data = b"".join(telnet.filter(data))
                    if not data:
                        continue
                self._on_input(session, data)
        except (ConnectionError, OSError):
            pass
        finally:
            session.cancel_timers()
            self._sessions.discard(session)
            writer.close()

    # -- protocol ---------------------------------------------------------------------------

    def _on_input(self, session: _Session, data: bytes) -> None:
        if self.fault == "unplugged":
            return
        session.buffer += data
        self.profile.on_input(session)
        del session.buffer[:-256]  # never grow without bound on noise

    def displayed(self) -> float:
        """The displayed activity in the display unit."""
        return activity_to(self.chamber.displayed_mbq(), self.unit)

    def nuclide(self) -> str:
        """The nuclide the selector shows (the sample's when none is selected)."""
        return self.chamber.selected_nuclide or self.chamber.sample_nuclide

    def take_commands(self, session: Session, *, ctrl_c: bool) -> list[str]:
        """Complete commands in the buffer (CR ended; a lone ^C counts as one if `ctrl_c`)."""
        commands = []
        while session.buffer:
            if ctrl_c and session.buffer[0] == _CTRL_C:
                del session.buffer[:1]
                commands.append(CTRL_C)
                self.commands.append(CTRL_C)
                continue
            end = session.buffer.find(b"\r")
            if end < 0:
                break
            text = bytes(session.buffer[:end]).decode("latin-1").strip("\n ")
            del session.buffer[: end + 1]
            if text:
                commands.append(text)
                self.commands.append(text)
        return commands

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.push_interval_s)
            if self.fault in ("unplugged", "timeout"):
                continue  # silence
            lines = self.profile.push_lines()
            for session in list(self._sessions):
                for line, is_reading in lines:
                    self.reply(session, line, record=is_reading)

    # -- faults -----------------------------------------------------------------------------

    def reply(
        self, session: Session, frame: bytes, *, binary: bool = False, record: bool = True
    ) -> None:
        """Send a reply/line through the active fault."""
        if not isinstance(session, _Session):
            raise TypeError(f"not a session of this simulator: {session!r}")
        fault = self.fault
        if fault == "unplugged":
            return
        if fault == "timeout":
            loop = asyncio.get_running_loop()
            session.timers.append(
                loop.call_later(self.slow_reply_s, self._send, session, frame, binary, record)
            )
            return
        if fault is None:
            self._send(session, frame, binary, record)
            return
        session.write(self._damage(frame, fault, binary=binary))

    def _send(self, session: _Session, frame: bytes, binary: bool, record: bool) -> None:
        if record:
            if binary:
                self.valid_frames.append(frame.hex(" "))
            else:
                for line in re.split(rb"[\r\n]+", frame):
                    if line:
                        self.valid_frames.append(line.decode("latin-1"))
        session.write(frame)

    def _damage(self, frame: bytes, fault: str, *, binary: bool) -> bytes:
        rng = self.rng
        if fault == "garbage":
            size = rng.choice([n for n in range(3, 25) if n != len(frame)])
            noise = bytearray(rng.randrange(256) for _ in range(size))
            noise[rng.randrange(size)] = 0x01  # always some non-printable noise
            return bytes(noise) + (b"" if binary else b"\r\n")
        if fault == "truncated":
            return frame[: max(1, len(frame) // 2)]
        if fault == "wrong_length":
            if binary:
                return frame + bytes([rng.randrange(256), rng.randrange(256)])
            return frame.rstrip(b"\r\n") + b" " + b"#" * 600 + b"\r\n"
        # corrupt: the instrument profile knows which bit errors its format can show
        return self.profile.corrupt(frame, binary=binary)


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `isoedge simulate dosecal`."""
    known = models()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max((len(name) for name in known), default=0)
    parser.epilog = "models (driver types, from the driver registry):\n" + "\n".join(
        f"  {spec.type:<{width}}  {spec.summary}" for spec in registry().with_simulator()
    )
    parser.add_argument(
        "--model",
        choices=known,
        default=DEFAULT_MODEL,
        metavar="TYPE",
        help=f"the driver type to simulate: {', '.join(known)} (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="pty",
        help="pty, raw TCP (socket://) or an RFC 2217 device server (rfc2217://)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="TCP listen address")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--nuclide", default="F-18")
    parser.add_argument(
        "--activity", default="370 MBq", help="activity of the sample when loaded, e.g. '10 mCi'"
    )
    parser.add_argument("--unit", default=None, help="display unit (default per model)")
    parser.add_argument("--background", type=float, default=0.01, help="background in MBq")
    parser.add_argument("--no-noise", action="store_true", help="exact readings, no noise")
    parser.add_argument(
        "--push-interval", type=float, default=2.0, help="seconds between pushed lines"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="decay runs this much faster")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="start with this fault")
    parser.add_argument(
        "--qc-fault", choices=QC_FAULTS, action="append", default=[],
        help="measurement fault for the QC tests (repeatable): +7%% gain drift, -8%% above "
        "30 GBq, syringe geometry effect",
    )
    parser.add_argument(
        "--control-port", type=int, default=None,
        help="serve the JSON-lines control channel on 127.0.0.1:PORT (0: any free port)",
    )
    parser.add_argument("--seed", type=int, default=None)


_HELP = (
    "commands: nuclide NAME | load NAME ACTIVITY | empty | container vial|syringe | key NAME |"
    " qcfault NAME on|off | fault NAME|none | status"
)


async def run(args: argparse.Namespace) -> None:
    """Run one simulator until cancelled; stdin takes operator commands (see `_HELP`)."""
    simulator = DoseCalibratorSimulator(
        model=args.model,
        transport=args.transport,
        nuclide=args.nuclide,
        activity_mbq=parse_activity(args.activity),
        host=args.host,
        port=args.port,
        unit=args.unit,
        background_mbq=args.background,
        noise=not args.no_noise,
        push_interval_s=args.push_interval,
        time_scale=args.time_scale,
        fault=args.fault,
        seed=args.seed,
    )
    for name in args.qc_fault:
        simulator.set_qc_fault(name)
    address = await simulator.start()
    print(f"dosecal {args.model} listening on {address}", flush=True)  # noqa: T201
    if args.control_port is not None:
        port = await simulator.start_control(port=args.control_port)
        print(f"control channel on 127.0.0.1:{port} (JSON lines)", flush=True)  # noqa: T201
    print(_HELP, flush=True)  # noqa: T201
    loop = asyncio.get_running_loop()
    watching = False
    stdin_fd = -1
    # No usable stdin (a service, a test runner, a regular file): just simulate.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stdin_fd = sys.stdin.fileno()
        loop.add_reader(stdin_fd, _operator_command, simulator, loop, stdin_fd)
        watching = True
    try:
        await asyncio.Event().wait()
    finally:
        if watching:
            loop.remove_reader(stdin_fd)
        await simulator.stop()


def _operator_command(
    simulator: DoseCalibratorSimulator, loop: asyncio.AbstractEventLoop, fd: int
) -> None:
    line = sys.stdin.readline()
    if not line:  # end of input: stop listening, keep simulating
        loop.remove_reader(fd)
        return
    words = line.split()
    try:
        verb, arguments = (words[0], words[1:]) if words else ("", [])
        if verb == "nuclide" and len(arguments) == 1:
            simulator.set_nuclide(arguments[0])
        elif verb == "load" and len(arguments) > 1:
            simulator.load_sample(arguments[0], parse_activity(" ".join(arguments[1:])))
        elif verb == "empty" and not arguments:
            simulator.empty()
        elif verb in ("container", "key") and len(arguments) == 1:
            (simulator.set_container if verb == "container" else simulator.press_key)(
                arguments[0]
            )
        elif verb == "qcfault" and len(arguments) == 2 and arguments[1] in ("on", "off"):  # noqa: PLR2004
            simulator.set_qc_fault(arguments[0], arguments[1] == "on")
        elif verb == "fault" and len(arguments) == 1:
            simulator.set_fault(None if arguments[0] == "none" else arguments[0])
        elif verb != "status":
            print(_HELP, flush=True)  # noqa: T201
            return
    except ValueError as exc:
        print(f"error: {exc}", flush=True)  # noqa: T201
        return
    chamber = simulator.chamber
    print(  # noqa: T201
        f"sample {chamber.sample_nuclide} {chamber.true_activity_mbq():.4g} MBq, "
        f"selected {chamber.selected_nuclide}, fault {simulator.fault}",
        flush=True,
    )


SerialInstrumentSimulator = DoseCalibratorSimulator
"""The simulator under its general name: any serial line instrument with a profile."""
