"""Register maps as data: one `ModbusPoint` per channel, decoding, and request coalescing.

A point names a channel and says where its value lives (table, address), how the registers
encode it (data type, byte and word order) and how the raw number becomes the published raw
value (`value = raw * scale + offset`, in `unit`). The pipeline converts units afterwards.

Byte and word order, for a 32-bit value whose big-endian bytes are A B C D:

| byte_order | word_order | registers on the wire | common name |
| --- | --- | --- | --- |
| big | big | AB CD | "ABCD", Modbus standard |
| big | little | CD AB | "CDAB", word-swapped (many PLCs, meters) |
| little | big | BA DC | "BADC", byte-swapped |
| little | little | DC BA | "DCBA", fully little-endian |
"""

from __future__ import annotations

import enum
import itertools
import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from drivers.base import JSONScalar


class Table(enum.StrEnum):
    """The four Modbus data tables."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"

    @property
    def is_bits(self) -> bool:
        """Coils and discrete inputs hold single bits; the others 16-bit registers."""
        return self in {Table.COIL, Table.DISCRETE}

    @property
    def short(self) -> str:
        """Short name used in raw text: hr, ir, co, di."""
        return _TABLE_SHORT[self]


_TABLE_SHORT = {Table.HOLDING: "hr", Table.INPUT: "ir", Table.COIL: "co", Table.DISCRETE: "di"}

DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32", "float64"]
Order = Literal["big", "little"]

# Registers per data type and the struct format of its big-endian byte string.
_WIDTH: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}
_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "float64": ">d",
}

MAX_ADDRESS = 0xFFFF


class ModbusPoint(BaseModel):
    """One channel of a register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    table: Table = Table.HOLDING
    address: int = Field(ge=0, le=MAX_ADDRESS, description="Zero-based protocol address.")
    data_type: DataType | None = Field(
        default=None, description="Default: bool for coil/discrete, uint16 for registers."
    )
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, description="Raw unit as the instrument publishes it.")
    nuclide: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        data_type = self.effective_type
        if self.table.is_bits and data_type != "bool":
            raise ValueError(
                f"point {self.channel!r}: table {self.table.value!r} holds single bits, "
                f"so data_type must be 'bool' (got {data_type!r})"
            )
        if not self.table.is_bits and data_type == "bool":
            raise ValueError(
                f"point {self.channel!r}: data_type 'bool' needs table 'coil' or 'discrete'"
            )
        if data_type == "bool" and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"point {self.channel!r}: scale/offset make no sense for a bit")
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)) or self.scale == 0:
            raise ValueError(f"point {self.channel!r}: scale must be finite and non-zero")
        if self.address + self.width - 1 > MAX_ADDRESS:
            raise ValueError(
                f"point {self.channel!r}: {data_type} at address {self.address} runs past "
                f"{MAX_ADDRESS} (needs {self.width} registers)"
            )
        return self

    @property
    def effective_type(self) -> DataType:
        """The data type, with the table's default filled in."""
        if self.data_type is not None:
            return self.data_type
        return "bool" if self.table.is_bits else "uint16"

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return _WIDTH[self.effective_type]

    @property
    def end(self) -> int:
        """One past the last address the point occupies."""
        return self.address + self.width

    def decode(self, words: Sequence[int]) -> int | float:
        """Raw number from this point's registers, honouring byte and word order."""
        data_type = self.effective_type
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        byteorder: Literal["big", "little"] = self.byte_order
        blob = b"".join((w & 0xFFFF).to_bytes(2, byteorder) for w in ordered)
        value: int | float = struct.unpack(_STRUCT[data_type], blob)[0]
        return value

    def encode(self, raw: float) -> list[int]:
        """Registers holding `raw` (the inverse of `decode`; used by simulators and tests)."""
        data_type = self.effective_type
        number: int | float = raw if data_type.startswith("float") else round(raw)
        blob = struct.pack(_STRUCT[data_type], number)
        words = [
            int.from_bytes(blob[i : i + 2], self.byte_order) for i in range(0, len(blob), 2)
        ]
        return words if self.word_order == "big" else list(reversed(words))

    def value(self, raw: float) -> float:
        """Published raw value: `raw * scale + offset` (ints stay ints when exact)."""
        if self.scale == 1.0 and self.offset == 0.0:
            return raw
        return raw * self.scale + self.offset

    def raw_for(self, value: float) -> float:
        """The raw number that `value` publishes as (inverse of `value`)."""
        return (value - self.offset) / self.scale


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: a contiguous span of one table, covering one or more points."""

    table: Table
    address: int
    count: int
    points: tuple[ModbusPoint, ...]


class BlockDecoder:
    """A register block's raw numbers and raw texts, decoded in one pass over its bytes.

    Points in the Modbus standard order (big byte and word order) are unpacked by one
    precompiled `struct` over the block's big-endian bytes; the others (word- or
    byte-swapped) are decoded point by point. Raw texts ("hr 12: 41C8 0000") are cut from
    one hex rendering of the block.
    """

    __slots__ = ("_fallback", "_prefixes", "_spans", "_struct", "channels", "last", "nuclides",
                 "points", "tidy", "units")

    def __init__(self, block: ReadBlock) -> None:
        self.points = block.points
        self.channels = [p.channel for p in block.points]
        self.units = [p.unit for p in block.points]
        self.nuclides = (
            [p.nuclide for p in block.points] if any(p.nuclide for p in block.points) else None
        )
        # Floats at their type's precision (drivers/numbers.py): float32 → the shortest
        # decimal that reads back the same, float64 in full. Scaled integers: 12 significant
        # digits, which drops the binary noise of the scale (123 * 0.1 → 12.3).
        self.tidy = [p.effective_type for p in block.points]
        # The last response's registers and what they decoded to (values, raw texts, indexes
        # of non-finite values): held values repeat from poll to poll, decoded once.
        self.last: tuple[list[int], list[JSONScalar], list[str], list[int]] | None = None
        short = block.table.short
        self._prefixes = [f"{short} {p.address}: " for p in block.points]
        self._spans = [
            (5 * (p.address - block.address), 5 * (p.end - block.address) - 1)
            for p in block.points
        ]
        fmt = [">"]
        cursor = block.address
        self._fallback: list[int] = []
        for index, p in enumerate(() if block.table.is_bits else block.points):
            if p.address > cursor:
                fmt.append(f"{2 * (p.address - cursor)}x")
            if p.byte_order == "big" and p.word_order == "big":
                fmt.append(_STRUCT[p.effective_type][1])
            else:
                fmt.append(f"{2 * p.width}x")  # decoded on its own below
                self._fallback.append(index)
            cursor = p.end
        self._struct = struct.Struct("".join(fmt))

    def raw_numbers(self, registers: Sequence[int] | bytes) -> tuple[list[int | float], str]:
        """Raw numbers of every point (before scale/offset) and the block's hex text.

        `registers` as integers, or as the response's big-endian bytes.
        """
        if isinstance(registers, bytes):
            blob = registers
            if self._fallback:
                registers = struct.unpack(f">{len(blob) // 2}H", blob)
        else:
            blob = struct.pack(f">{len(registers)}H", *registers)
        numbers: list[int | float] = list(self._struct.unpack_from(blob))
        if self._fallback:
            merged: list[int | float] = []
            standard = iter(numbers)
            fallback = set(self._fallback)
            base = self.points[0].address
            for index, p in enumerate(self.points):
                if index in fallback:
                    start = p.address - base
                    merged.append(p.decode(registers[start : start + p.width]))
                else:
                    merged.append(next(standard))
            numbers = merged
        return numbers, blob.hex(" ", 2).upper()

    def raw_texts(self, hex_text: str) -> list[str]:
        """"hr 12: 41C8 0000" for every point."""
        return [
            prefix + hex_text[start:end]
            for prefix, (start, end) in zip(self._prefixes, self._spans, strict=True)
        ]


def check_overlaps(points: Sequence[ModbusPoint]) -> list[str]:
    """Problems with a map: duplicate channels, points sharing registers."""
    problems: list[str] = []
    seen: set[str] = set()
    for point in points:
        if point.channel in seen:
            problems.append(f"channel {point.channel!r} appears twice")
        seen.add(point.channel)
    for table in Table:
        in_table = sorted((p for p in points if p.table is table), key=lambda p: p.address)
        for before, after in itertools.pairwise(in_table):
            if after.address < before.end:
                problems.append(
                    f"points {before.channel!r} ({table.value} {before.address}..{before.end - 1})"
                    f" and {after.channel!r} ({table.value} {after.address}..{after.end - 1})"
                    " overlap"
                )
    return problems


def plan_reads(
    points: Sequence[ModbusPoint], *, max_registers: int, max_bits: int, max_gap: int
) -> list[ReadBlock]:
    """Coalesce points into as few read requests as the limits allow.

    Points of one table are merged into one request while the span stays within
    `max_registers` (or `max_bits` for coils/discrete inputs) and the unused addresses read
    between two neighbours stay within `max_gap`. Reading a few unused registers is cheaper
    than another round trip, but some devices answer an exception for unmapped addresses:
    set `max_gap = 0` for those.
    """
    blocks: list[ReadBlock] = []
    for table in Table:
        limit = max_bits if table.is_bits else max_registers
        current: list[ModbusPoint] = []
        start = end = 0
        for point in sorted((p for p in points if p.table is table), key=lambda p: p.address):
            if current and point.address - end <= max_gap and point.end - start <= limit:
                current.append(point)
                end = max(end, point.end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [point], point.address, point.end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks
