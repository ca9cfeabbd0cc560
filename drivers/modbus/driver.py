"""Modbus TCP / RTU driver: polls a register map and yields one Sample per point."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, ClassVar

from pymodbus.constants import ExcCodes

from drivers.base import DeviceError, Driver, Quality, Sample, utc_now
from drivers.modbus.bus import LinkDown, ModbusBus, NoResponse, acquire_bus, release_bus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from pymodbus.pdu import ModbusPDU

    from drivers.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
    from drivers.modbus.points import ModbusPoint, ReadBlock


def exception_name(code: int) -> str:
    """`6` → `DEVICE_BUSY` (Modbus exception codes of the application protocol spec)."""
    try:
        return ExcCodes(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


def _tidy(value: float, data_type: str) -> float:
    """Drop binary noise a reader would never have meant (0.41999998 for float32 0.42)."""
    if data_type == "float32":
        return float(f"{value:.7g}")
    return float(f"{value:.12g}")


class ModbusDriver(Driver):
    """Polls one unit id's register map every `poll_interval_s`, coalescing reads.

    Failure handling:
    - exception response → `bad` samples for the points of that request, reason names it;
    - no answer to some requests while others are answered → `bad` samples "no response";
    - no answer at all (after `retries`) → `DeviceError`; the unit's next probe on the shared
      bus is delayed with capped exponential backoff so it never stalls the other units;
    - connection refused or lost → `DeviceError`.
    """

    type: ClassVar[str] = "modbus"

    def __init__(self, config: ModbusDeviceConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.plan: list[ReadBlock] = config.read_plan()
        self._bus: ModbusBus | None = None

    async def connect(self) -> None:
        """Join (and if needed open) the link this device is on."""
        if self._bus is None:
            self._bus = acquire_bus(self.cfg)
        try:
            await self._bus.ensure_connected()
        except LinkDown as exc:
            raise DeviceError(str(exc), device=self.cfg.id) from exc
        self.log.info(
            "modbus connected",
            bus=self._bus.key,
            unit_id=self.cfg.unit_id,
            requests_per_poll=len(self.plan),
        )

    async def samples(self) -> AsyncIterator[Sample]:
        """Poll forever; raise `DeviceError` when the link or the unit is gone."""
        bus = self._bus
        if bus is None:
            raise DeviceError("samples() before connect()", device=self.cfg.id)
        health = bus.unit(self.cfg.unit_id)
        # A unit that recently stayed silent is probed again only when its backoff expires.
        wait = health.next_probe_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        period = self.cfg.poll_interval_s
        next_due = time.monotonic()
        while True:
            batch: list[Sample] = []
            answered = 0
            for block in self.plan:
                try:
                    response = await self._read(bus, block, probing=health.failures > 0)
                except NoResponse as exc:
                    if answered == 0:
                        # Silent from the first request on: spend no more bus time on it.
                        break
                    batch.extend(self._bad(block.points, "no response", str(exc)))
                    continue
                answered += 1
                batch.extend(self._decode(block, response))
            if answered == 0:
                delay = health.record_silence(self.cfg.backoff.initial_s, self.cfg.backoff.max_s)
                self.report_status("degraded", f"unit {self.cfg.unit_id} not answering")
                raise DeviceError(
                    f"unit {self.cfg.unit_id} on {bus.key} not answering "
                    f"(next probe in {delay:.1f}s)",
                    device=self.cfg.id,
                )
            health.record_answer()
            for sample in batch:
                yield sample
            next_due += period
            now = time.monotonic()
            if next_due < now - period:
                # More than a poll behind (slow device, busy bus): drop the missed polls
                # rather than firing a burst to catch up.
                next_due = now
            await asyncio.sleep(max(0.0, next_due - now))

    async def _read(self, bus: ModbusBus, block: ReadBlock, *, probing: bool) -> ModbusPDU:
        """One request with retries; the bus is released between attempts."""
        attempts = 1 if probing else self.cfg.retries + 1
        last: NoResponse | None = None
        for _ in range(attempts):
            try:
                return await bus.read(block.table, block.address, block.count, self.cfg.unit_id)
            except LinkDown as exc:
                raise DeviceError(str(exc), device=self.cfg.id) from exc
            except NoResponse as exc:
                last = exc
        assert last is not None  # noqa: S101 (attempts >= 1)
        raise last

    def _bad(self, points: Sequence[ModbusPoint], reason: str, raw_text: str) -> list[Sample]:
        t = utc_now()
        return [
            self.sample(
                p.channel,
                None,
                p.unit,
                t=t,
                quality=Quality.BAD,
                reason=reason,
                raw_text=raw_text,
                nuclide=p.nuclide,
            )
            for p in points
        ]

    def _decode(self, block: ReadBlock, response: ModbusPDU) -> list[Sample]:
        t = utc_now()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = exception_name(code)
            reason = f"modbus exception {code} ({name})"
            text = f"{block.table.short} {block.address}+{block.count}: exception {code} {name}"
            return self._bad(block.points, reason, text)
        if block.table.is_bits:
            bits = [bool(b) for b in response.bits]
            out_bits: list[Sample] = []
            for p in block.points:
                bit = bits[p.address - block.address]
                text = f"{block.table.short} {p.address}: {int(bit)}"
                out_bits.append(
                    self.sample(p.channel, bit, p.unit, t=t, raw_text=text, nuclide=p.nuclide)
                )
            return out_bits
        registers: list[int] = list(response.registers)  # length checked by the bus
        out: list[Sample] = []
        for p in block.points:
            words = block.slice_for(p, registers)
            text = f"{block.table.short} {p.address}: " + " ".join(f"{w:04X}" for w in words)
            raw = p.decode(words)
            if isinstance(raw, float) and not math.isfinite(raw):
                out.extend(self._bad((p,), "not a finite number", text))
                continue
            value: float = p.value(raw)
            if isinstance(value, float):
                value = _tidy(value, p.effective_type)
            out.append(
                self.sample(p.channel, value, p.unit, t=t, raw_text=text, nuclide=p.nuclide)
            )
        return out

    async def close(self) -> None:
        """Leave the bus; the last device on it closes the link."""
        bus, self._bus = self._bus, None
        if bus is not None:
            release_bus(bus)


class ModbusTcpDriver(ModbusDriver):
    """Modbus TCP."""

    type: ClassVar[str] = "modbus_tcp"

    def __init__(self, config: ModbusTcpConfig) -> None:
        super().__init__(config)


class ModbusRtuDriver(ModbusDriver):
    """Modbus RTU on a serial line or over TCP (`rtu+tcp://`)."""

    type: ClassVar[str] = "modbus_rtu"

    def __init__(self, config: ModbusRtuConfig) -> None:
        super().__init__(config)
