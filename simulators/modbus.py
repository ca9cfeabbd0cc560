"""Modbus simulators: a hot cell and an area monitor, over Modbus TCP, RTU-over-TCP or RTU on a pty.

The register maps are data (`PROFILES`), the same maps shipped in `config/maps/` for users to
paste into a device configuration. Values follow a simple physical story (a door cycle that
spoils the cell's negative pressure, vials passing an area monitor) so the demo and the QC
rules have something to react to. Fault injection covers what field buses do: the server
going down, slow answers, exception responses, a unit id that never answers, stuck values.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import random
import time
import tty
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus.points import ModbusPoint, Table

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from pymodbus.pdu import ModbusPDU

Transport = Literal["tcp", "rtu_tcp", "rtu_pty"]
ProfileName = Literal["hotcell", "area_monitor"]

# Addresses past the last mapped one that still read as zero (devices commonly expose a
# little unmapped space); beyond that the simulator answers ILLEGAL_ADDRESS like a device.
# Coils and discrete inputs are served in whole 16-bit words, so their limit is rounded up.
_SPARE_ADDRESSES = 32
_ANY_OTHER_UNIT = 0  # pymodbus routes requests for unit ids it does not know to device 0
_FUNCTION_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
_WRITE_TABLE = {5: Table.COIL, 15: Table.COIL, 6: Table.HOLDING, 16: Table.HOLDING}


def _p(channel: str, table: str, address: int, data_type: str, **kw: object) -> ModbusPoint:
    return ModbusPoint.model_validate(
        {"channel": channel, "table": table, "address": address, "data_type": data_type, **kw}
    )


# The maps exercise every data type and all four byte/word orders on purpose, so a user's
# device with any of them has a worked example.
HOTCELL_POINTS: tuple[ModbusPoint, ...] = (
    _p("cell_pressure", "input", 0, "int16", scale=0.1, unit="Pa"),
    _p("temperature", "input", 1, "uint16", scale=0.1, offset=-50.0, unit="Cel"),
    _p("dose_rate_outside", "input", 2, "float32", word_order="little", unit="uSv/h"),
    _p("particles_0_5um", "input", 4, "uint32", byte_order="little", unit="1/m3"),
    _p(
        "extract_flow",
        "input",
        10,
        "float64",
        byte_order="little",
        word_order="little",
        unit="m3/h",
    ),
    _p("pressure_setpoint", "holding", 0, "int16", scale=0.1, unit="Pa"),
    _p("door_closed", "discrete", 0, "bool"),
    _p("interlock_ok", "discrete", 1, "bool"),
)

AREA_MONITOR_POINTS: tuple[ModbusPoint, ...] = (
    _p("dose_rate", "input", 0, "float32", unit="uSv/h"),
    _p("dose_total", "input", 2, "uint32", scale=0.001, unit="uSv"),
    _p("status_word", "input", 4, "uint16"),
    _p("alarm_threshold", "holding", 0, "uint16", scale=0.01, unit="uSv/h"),
    _p("alarm_relay", "coil", 0, "bool"),
    _p("channel_ok", "discrete", 0, "bool"),
)


class _UnitModel:
    """Values of one simulated unit as a function of time."""

    points: tuple[ModbusPoint, ...] = ()

    def __init__(self, seed: int, time_scale: float) -> None:
        self.rng = random.Random(seed)
        self.time_scale = time_scale
        self.t0 = time.monotonic()
        self.holding_overrides: dict[str, float] = {}

    def elapsed(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self.t0) * self.time_scale

    def values(self) -> dict[str, float | bool]:
        """Current value of every channel, in the map's units."""
        raise NotImplementedError


class HotCellModel(_UnitModel):
    """A shielded hot cell: negative pressure spoiled while the door is open every 2 minutes."""

    points = HOTCELL_POINTS
    door_period_s = 120.0
    door_open_s = 10.0

    def values(self) -> dict[str, float | bool]:
        """Current values."""
        t, g = self.elapsed(), self.rng.gauss
        door_closed = (t % self.door_period_s) < self.door_period_s - self.door_open_s
        if door_closed:
            pressure = -85.0 + 2.5 * math.sin(2 * math.pi * t / 37.0) + g(0, 0.4)
        else:
            pressure = -8.0 + g(0, 1.0)
        dose = 0.30 + 0.05 * math.sin(2 * math.pi * t / 300.0) + g(0, 0.02)
        setpoint = self.holding_overrides.get("pressure_setpoint", -80.0)
        return {
            "cell_pressure": pressure,
            "temperature": 21.8 + 0.4 * math.sin(2 * math.pi * t / 600.0) + g(0, 0.05),
            "dose_rate_outside": max(0.0, dose + (1.5 if not door_closed else 0.0)),
            "particles_0_5um": max(0.0, 1500.0 + g(0, 150.0)),
            "extract_flow": 120.0 + g(0, 1.5),
            "pressure_setpoint": setpoint,
            "door_closed": door_closed,
            "interlock_ok": door_closed and pressure < setpoint / 4,
        }


class AreaMonitorModel(_UnitModel):
    """Ambient dose rate: background plus a spike each time a vial passes by."""

    points = AREA_MONITOR_POINTS
    background_usvh = 0.12
    vial_period_s = 45.0
    vial_peak_usvh = 25.0
    vial_width_s = 2.0

    def __init__(self, seed: int, time_scale: float) -> None:
        super().__init__(seed, time_scale)
        self._dose_total = 0.0
        self._last_t = 0.0
        self._phase = self.rng.uniform(0, self.vial_period_s)

    def values(self) -> dict[str, float | bool]:
        """Current values."""
        t = self.elapsed()
        # Counting statistics: the relative noise of a rate meter shrinks with the rate.
        rate = self.background_usvh * (1 + self.rng.gauss(0, 0.08))
        since_vial = (t + self._phase) % self.vial_period_s - self.vial_period_s / 2
        rate += self.vial_peak_usvh * math.exp(-0.5 * (since_vial / self.vial_width_s) ** 2)
        rate = max(0.0, rate)
        self._dose_total += rate * max(0.0, t - self._last_t) / 3600.0
        self._last_t = t
        threshold = self.holding_overrides.get("alarm_threshold", 10.0)
        return {
            "dose_rate": rate,
            "dose_total": self._dose_total,
            "status_word": 0,
            "alarm_threshold": threshold,
            "alarm_relay": rate > threshold,
            "channel_ok": True,
        }


PROFILES: dict[str, type[_UnitModel]] = {
    "hotcell": HotCellModel,
    "area_monitor": AreaMonitorModel,
}


@dataclass
class _Unit:
    model: _UnitModel
    silent: bool = False
    stuck: dict[str, float | bool] | None = None

    def current(self) -> dict[str, float | bool]:
        return self.stuck if self.stuck is not None else self.model.values()


@dataclass
class RequestLog:
    """What the server received: counts per (unit id, function code) and the recent requests."""

    counts: Counter[tuple[int, int]] = field(default_factory=Counter)
    recent: list[tuple[int, int, int, int]] = field(default_factory=list)

    def total(self, unit_id: int | None = None) -> int:
        """Requests received (for one unit id, or all)."""
        return sum(n for (unit, _), n in self.counts.items() if unit_id in (None, unit))


def _table_limit(points: Sequence[ModbusPoint], table: Table) -> int:
    """Addresses served in `table`: the map plus spare space (bits: whole 16-bit words)."""
    limit = max((p.end for p in points if p.table is table), default=0) + _SPARE_ADDRESSES
    return -(-limit // 16) * 16 if table.is_bits else limit


def _pack_bits(bits: list[bool]) -> list[int]:
    """Bits as pymodbus keeps coils/discrete inputs: 16 to a word, bit 0 first."""
    return [
        sum(1 << i for i, bit in enumerate(bits[start : start + 16]) if bit)
        for start in range(0, len(bits), 16)
    ]


class _PtyCable:
    """A null-modem cable between two pseudo-terminals (like `socat pty pty`).

    The server opens one end, the client the other; the event loop copies the bytes.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        self.server_path = ""
        self.client_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        for fd in (slave_a, slave_b):
            tty.setraw(fd)
        self.server_path, self.client_path = os.ttyname(slave_a), os.ttyname(slave_b)
        # The slave fds stay open so each side keeps a live tty while the peer reopens it.
        self._fds = [master_a, master_b, slave_a, slave_b]
        for fd in (master_a, master_b):
            os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master_a, self._copy, master_a, master_b)
        self._loop.add_reader(master_b, self._copy, master_b, master_a)

    def _copy(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO while nobody has the slave open: nothing to carry
        if data:
            with contextlib.suppress(OSError):
                os.write(dst, data)

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._fds[:2]:
                self._loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class ModbusSimulator:
    """A Modbus server simulating one or more units of a profile.

    `transport`: `tcp` (Modbus TCP), `rtu_tcp` (RTU frames over TCP, a serial gateway in
    transparent mode) or `rtu_pty` (RTU on a pseudo-terminal pair; `start()` returns the
    client-side tty path). Several `unit_ids` simulate several instruments on one bus.
    """

    def __init__(
        self,
        profile: ProfileName = "hotcell",
        *,
        transport: Transport = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        unit_ids: tuple[int, ...] = (1,),
        time_scale: float = 1.0,
        seed: int | None = None,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
        self.profile = profile
        self.transport = transport
        self.host = host
        self.port = port
        base_seed = seed if seed is not None else random.randrange(1 << 30)
        self.units: dict[int, _Unit] = {
            unit_id: _Unit(PROFILES[profile](base_seed + unit_id, time_scale))
            for unit_id in unit_ids
        }
        self.requests = RequestLog()
        self.delay_s = 0.0
        self.exception: ExcCodes | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._cable: _PtyCable | None = None

    @property
    def points(self) -> tuple[ModbusPoint, ...]:
        """The register map every unit of this simulator serves."""
        return PROFILES[self.profile].points

    @property
    def address(self) -> str:
        """`HOST:PORT`, `rtu+tcp://HOST:PORT` or the client tty path."""
        if self.transport == "rtu_pty":
            return self._cable.client_path if self._cable else ""
        if self.transport == "rtu_tcp":
            return f"rtu+tcp://{self.host}:{self.port}"
        return f"{self.host}:{self.port}"

    def device_config(
        self, device_id: str, unit_id: int | None = None, **extra: object
    ) -> dict[str, Any]:
        """A device configuration (as parsed TOML) that reads this simulator."""
        unit = unit_id if unit_id is not None else next(iter(self.units))
        config: dict[str, Any] = {"id": device_id, "unit_id": unit}
        if self.transport == "tcp":
            config.update(type="modbus_tcp", host=self.host, port=self.port)
        else:
            config.update(type="modbus_rtu", port=self.address)
        config["points"] = [_point_dict(p) for p in self.points]
        config.update(extra)
        return config

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        """Start serving; returns the address a device configuration uses."""
        if self._server is not None:
            return self.address
        framer = FramerType.SOCKET if self.transport == "tcp" else FramerType.RTU
        context = self._datastore()
        trace = cast("Callable[[bool, ModbusPDU], ModbusPDU]", self._trace_pdu)
        server: ModbusTcpServer | ModbusSerialServer
        if self.transport == "rtu_pty":
            if self._cable is None:
                self._cable = _PtyCable()
                self._cable.open()
            server = ModbusSerialServer(
                context,
                framer=framer,
                port=self._cable.server_path,
                baudrate=115200,
                ignore_missing_devices=True,
                trace_pdu=trace,
            )
        else:
            server = ModbusTcpServer(
                context,
                framer=framer,
                address=(self.host, self.port),
                # On a serial bus an absent unit is silent; a TCP gateway says so instead.
                ignore_missing_devices=self.transport == "rtu_tcp",
                trace_pdu=trace,
            )
        await server.serve_forever(background=True)
        if self.transport != "rtu_pty":
            listener = cast("asyncio.Server", server.transport)
            self.port = int(listener.sockets[0].getsockname()[1])
        self._server = server
        return self.address

    async def stop(self) -> None:
        """Stop serving and drop every client connection."""
        await self._stop_server()
        if self._cable is not None:
            self._cable.close()
            self._cable = None

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    # ---- fault injection -------------------------------------------------------------
    async def set_down(self, down: bool) -> None:
        """Server down (connections dropped, port closed) or back up on the same address."""
        if down:
            await self._stop_server()
        else:
            await self.start()

    def set_delay(self, seconds: float) -> None:
        """Answer every request `seconds` late (slow device or congested gateway)."""
        self.delay_s = max(0.0, seconds)

    def set_exception(self, code: int | None) -> None:
        """Answer every read with this Modbus exception code (e.g. 6 DEVICE_BUSY), or stop."""
        self.exception = ExcCodes(code) if code is not None else None

    def set_silent(self, unit_id: int, silent: bool = True) -> None:
        """A unit that never answers (powered off, wrong address, broken transceiver)."""
        self.units[unit_id].silent = silent

    def set_stuck(self, stuck: bool = True, unit_id: int | None = None) -> None:
        """Freeze values at what they are now (a hung instrument still answering)."""
        for uid, unit in self.units.items():
            if unit_id in (None, uid):
                unit.stuck = unit.model.values() if stuck else None

    def current_values(self, unit_id: int) -> dict[str, float | bool]:
        """The values the unit serves right now (stuck values if frozen)."""
        return self.units[unit_id].current()

    # ---- serving ---------------------------------------------------------------------
    def _datastore(self) -> list[SimDevice]:
        """One pymodbus `SimDevice` per unit, its values computed on every request.

        Each device holds the four tables (coils, discrete inputs, holding, input registers)
        sized to the map; its action writes the unit's current image into the registers
        pymodbus is about to answer from. Requests for any other unit id reach a catch-all
        device that answers as an absent unit does.
        """
        devices = [
            SimDevice(unit_id, simdata=self._tables(),
                      action=functools.partial(self._serve, unit_id))
            for unit_id in self.units
        ]
        if _ANY_OTHER_UNIT not in self.units:
            devices.append(
                SimDevice(_ANY_OTHER_UNIT, simdata=self._tables(), action=self._serve_absent_unit)
            )
        return devices

    def _tables(
        self,
    ) -> tuple[list[SimData], list[SimData], list[SimData], list[SimData]]:
        """Coils, discrete inputs, holding and input registers, each sized to the map."""

        def table(kind: Table) -> list[SimData]:
            limit = _table_limit(self.points, kind)
            if kind.is_bits:
                return [SimData(0, count=limit, values=False, datatype=DataType.BITS)]
            return [SimData(0, count=limit, values=0, datatype=DataType.REGISTERS)]

        return table(Table.COIL), table(Table.DISCRETE), table(Table.HOLDING), table(Table.INPUT)

    async def _serve(
        self,
        unit_id: int,
        func_code: int,
        _start_address: int,
        address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Serve one unit (the SimDevice action): refresh `registers` for a read, vet a write."""
        if set_values is not None:
            return await self.serve_write(unit_id, func_code, address, list(set_values))
        table = _FUNCTION_TABLE.get(func_code) or _WRITE_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        # The whole table is refreshed (it is small); for bits pymodbus passes a word count.
        image = await self.serve_read(unit_id, func_code, 0, _table_limit(self.points, table))
        if isinstance(image, ExcCodes):
            return image
        words = _pack_bits([bool(v) for v in image]) if table.is_bits else list(image)
        registers[: len(words)] = [int(w) for w in words]
        return None

    async def _serve_absent_unit(
        self,
        _func_code: int,
        _start_address: int,
        _address: int,
        _count: int,
        _registers: list[int],
        _set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """No such unit: pymodbus stays silent (serial bus) or answers GATEWAY_NO_RESPONSE."""
        raise NoSuchIdException("no such unit")

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        if sending:
            return pdu
        self.requests.counts[(pdu.dev_id, pdu.function_code)] += 1
        address = int(getattr(pdu, "address", 0))
        count = int(getattr(pdu, "count", 0))
        self.requests.recent = [
            *self.requests.recent[-199:],
            (pdu.dev_id, pdu.function_code, address, count),
        ]
        unit = self.units.get(pdu.dev_id)
        if unit is not None and unit.silent:
            return None  # pymodbus then sends nothing: the unit is silent on the bus
        return pdu

    def _image(self, unit: _Unit, table: Table, address: int, count: int) -> list[int] | ExcCodes:
        in_table = [p for p in self.points if p.table is table]
        if address + count > _table_limit(self.points, table):
            return ExcCodes.ILLEGAL_ADDRESS
        words = [0] * count
        values = unit.current()
        for point in in_table:
            if point.end <= address or point.address >= address + count:
                continue
            value = values[point.channel]
            if table.is_bits:
                encoded = [int(bool(value))]
            else:
                raw = point.raw_for(float(value))
                encoded = point.encode(raw)
            for i, word in enumerate(encoded):
                if address <= point.address + i < address + count:
                    words[point.address + i - address] = word
        return words

    async def serve_read(
        self, unit_id: int, func_code: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        """Answer a read request (called by the pymodbus server)."""
        unit = self.units.get(unit_id)
        if unit is None:
            raise NoSuchIdException(f"unit {unit_id}")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.exception is not None:
            return self.exception
        table = _FUNCTION_TABLE.get(func_code) or _WRITE_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        words = self._image(unit, table, address, count)
        if isinstance(words, ExcCodes) or not table.is_bits:
            return words
        return [bool(w) for w in words]

    async def serve_write(
        self, unit_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        """Accept writes to holding registers that are setpoints; refuse the rest."""
        unit = self.units.get(unit_id)
        if unit is None:
            raise NoSuchIdException(f"unit {unit_id}")
        if _WRITE_TABLE.get(func_code) is not Table.HOLDING:
            return ExcCodes.ILLEGAL_ADDRESS
        for point in self.points:
            if point.table is Table.HOLDING and point.address == address:
                if len(values) != point.width:
                    return ExcCodes.ILLEGAL_VALUE
                raw = point.decode([int(v) for v in values])
                unit.model.holding_overrides[point.channel] = point.value(raw)
                return None
        return ExcCodes.ILLEGAL_ADDRESS


def profile_toml(profile: ProfileName) -> str:
    """The profile's register map as `[[devices.points]]` TOML, as shipped in config/maps/."""
    lines: list[str] = []
    for point in PROFILES[profile].points:
        lines.append("[[devices.points]]")
        for key, value in _point_dict(point).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _point_dict(point: ModbusPoint) -> dict[str, Any]:
    """A point as configuration data: where it is always spelled out, the rest if not default."""
    where = {
        "channel": point.channel,
        "table": point.table.value,
        "address": point.address,
        "data_type": point.effective_type,
    }
    return where | point.model_dump(exclude_defaults=True, mode="json")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `isoedge simulate modbus`."""
    parser.add_argument("--profile", choices=sorted(PROFILES), default="hotcell")
    parser.add_argument(
        "--transport",
        choices=["tcp", "rtu_tcp", "rtu_pty"],
        default="tcp",
        help="tcp: Modbus TCP; rtu_tcp: RTU frames over TCP; rtu_pty: RTU on a pseudo-terminal",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=15020, help="TCP port (0: any free port)")
    parser.add_argument(
        "--unit-ids", default="1", help="comma-separated unit ids served (e.g. 1,2,3)"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated s per real s")
    parser.add_argument(
        "--print-map", action="store_true", help="print the register map as TOML and exit"
    )


async def run(args: argparse.Namespace) -> None:
    """Serve until cancelled, printing the address."""
    if args.print_map:
        print(profile_toml(args.profile))  # noqa: T201 (CLI output)
        return
    unit_ids = tuple(int(u) for u in str(args.unit_ids).split(",") if u.strip())
    sim = ModbusSimulator(
        profile=args.profile,
        transport=args.transport,
        host=args.host,
        port=args.port,
        unit_ids=unit_ids,
        time_scale=args.time_scale,
    )
    address = await sim.start()
    units = ", ".join(str(u) for u in unit_ids)
    print(  # noqa: T201 (CLI output)
        f"modbus {args.profile} listening on {address} (unit {units})", flush=True
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
