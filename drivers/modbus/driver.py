"""Modbus TCP / RTU driver: polls a register map and yields one batch per poll."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, ClassVar

from pymodbus.constants import ExcCodes

from drivers.base import DeviceError, Driver, JSONScalar, Quality, SampleBatch, utc_now
from drivers.modbus.bus import LinkDown, ModbusBus, NoResponse, acquire_bus, release_bus
from drivers.modbus.points import BlockDecoder
from drivers.numbers import float32_value

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


def _merge(parts: list[SampleBatch]) -> SampleBatch:
    """The batches of one poll's requests as the poll's one batch (time stamps kept)."""
    n = sum(len(p) for p in parts)
    merged = SampleBatch(
        parts[0].device,
        parts[0].t,
        [c for p in parts for c in p.channels],
        [v for p in parts for v in p.values],
        [u for p in parts for u in p.units],
        [x for p in parts for x in (p.raw_texts or [None] * len(p))],
        times=[p.t for p in parts for _ in range(len(p))],
    )
    if any(p.qualities is not None for p in parts):
        merged.qualities = [q for p in parts for q in (p.qualities or [Quality.GOOD] * len(p))]
        merged.reasons = [r for p in parts for r in (p.reasons or [None] * len(p))]
    if any(p.nuclides is not None for p in parts):
        merged.nuclides = [x for p in parts for x in (p.nuclides or [None] * len(p))]
    assert len(merged.channels) == n  # noqa: S101
    return merged


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
        self.decoders = [BlockDecoder(block) for block in self.plan]
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

    async def batches(self) -> AsyncIterator[SampleBatch]:
        """Poll forever, one batch per poll; raise `DeviceError` when the link or unit is gone."""
        bus = self._bus
        if bus is None:
            raise DeviceError("batches() before connect()", device=self.cfg.id)
        health = bus.unit(self.cfg.unit_id)
        # A unit that recently stayed silent is probed again only when its backoff expires.
        wait = health.next_probe_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        period = self.cfg.poll_interval_s
        next_due = time.monotonic()
        while True:
            parts: list[SampleBatch] = []
            answered = 0
            for block, decoder in zip(self.plan, self.decoders, strict=True):
                try:
                    response = await self._read(bus, block, probing=health.failures > 0)
                except NoResponse as exc:
                    if answered == 0:
                        # Silent from the first request on: spend no more bus time on it.
                        break
                    parts.append(self._bad(block.points, "no response", str(exc)))
                    continue
                answered += 1
                parts.append(self._decode_block(block, decoder, response))
            if answered == 0:
                delay = health.record_silence(self.cfg.backoff.initial_s, self.cfg.backoff.max_s)
                self.report_status("degraded", f"unit {self.cfg.unit_id} not answering")
                raise DeviceError(
                    f"unit {self.cfg.unit_id} on {bus.key} not answering "
                    f"(next probe in {delay:.1f}s)",
                    device=self.cfg.id,
                )
            health.record_answer()
            yield parts[0] if len(parts) == 1 else _merge(parts)
            next_due += period
            now = time.monotonic()
            if next_due < now - period:
                # More than a poll behind (slow device, busy bus): drop the missed polls
                # rather than firing a burst to catch up.
                next_due = now
            await asyncio.sleep(max(0.0, next_due - now))

    async def _read(
        self, bus: ModbusBus, block: ReadBlock, *, probing: bool
    ) -> ModbusPDU:
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

    def _bad(self, points: Sequence[ModbusPoint], reason: str, raw_text: str) -> SampleBatch:
        n = len(points)
        return SampleBatch(
            self.cfg.id,
            utc_now(),
            [p.channel for p in points],
            [None] * n,
            [p.unit for p in points],
            [raw_text] * n,
            qualities=[Quality.BAD] * n,
            reasons=[reason] * n,
            nuclides=[p.nuclide for p in points],
        )

    def _decode_block(
        self, block: ReadBlock, decoder: BlockDecoder, response: ModbusPDU
    ) -> SampleBatch:
        """A whole response as one batch: one unpack over the block's bytes."""
        t = utc_now()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = exception_name(code)
            reason = f"modbus exception {code} ({name})"
            text = f"{block.table.short} {block.address}+{block.count}: exception {code} {name}"
            return self._bad(block.points, reason, text)
        if block.table.is_bits:
            bits = [bool(b) for b in response.bits]
            picked = [bits[p.address - block.address] for p in block.points]
            texts = [
                f"{block.table.short} {p.address}: {int(bit)}"
                for p, bit in zip(block.points, picked, strict=True)
            ]
            values: list[JSONScalar] = list(picked)
            return SampleBatch(self.cfg.id, t, decoder.channels, values, decoder.units, texts,
                               nuclides=decoder.nuclides)  # fmt: skip
        registers = response.registers
        last = decoder.last
        if last is not None and last[0] == registers:
            # The same registers as the last poll: the same values (a held value, an idle
            # sensor, a status word); copies, so no two batches share a list.
            out, texts, bad = list(last[1]), list(last[2]), last[3]
        else:
            out, texts, bad = self._decode_registers(block, decoder, registers)
            decoder.last = (list(registers), list(out), list(texts), bad)
        batch = SampleBatch(self.cfg.id, t, decoder.channels, out, decoder.units, texts,
                            nuclides=decoder.nuclides)  # fmt: skip
        if bad:
            qualities = [Quality.GOOD] * len(out)
            reasons: list[str | None] = [None] * len(out)
            for index in bad:
                qualities[index] = Quality.BAD
                reasons[index] = "not a finite number"
            batch.qualities, batch.reasons = qualities, reasons
        return batch

    @staticmethod
    def _decode_registers(
        block: ReadBlock, decoder: BlockDecoder, registers: Sequence[int]
    ) -> tuple[list[JSONScalar], list[str], list[int]]:
        """Values, raw texts and the indexes of non-finite values of a register response."""
        numbers, hex_text = decoder.raw_numbers(registers)
        texts = decoder.raw_texts(hex_text)
        out: list[JSONScalar] = []
        bad: list[int] = []
        for index, (p, raw, kind) in enumerate(zip(block.points, numbers, decoder.tidy,
                                                   strict=True)):  # fmt: skip
            if type(raw) is float:
                if not math.isfinite(raw):
                    out.append(None)
                    bad.append(index)
                    continue
                number = float32_value(raw) if kind == "float32" else raw
                out.append(number if p.scale == 1.0 and p.offset == 0.0 else p.value(number))
            elif p.scale == 1.0 and p.offset == 0.0:
                out.append(raw)
            else:
                out.append(float(format(p.value(raw), ".12g")))
        return out, texts, bad

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
