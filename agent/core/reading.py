"""What the pipeline produces: a `Reading` (published item) and event items for alerts/audit."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from agent.core.items import CLOCK_UNTRUSTED, clock_trusted, raw_member, reading_item
from agent.core.values import JSONScalar, Quality, SampleKind

_last_stamp: tuple[datetime | None, str] = (None, "")
# Enum `.value` is a descriptor call; a dict lookup is seven times cheaper per reading.
_QUALITY_TEXT = {quality: quality.value for quality in Quality}


def rfc3339(t: datetime) -> str:
    """UTC time as RFC 3339 with microseconds and a `Z`, as every item carries it."""
    global _last_stamp  # noqa: PLW0603 - a one-entry cache on the hottest path
    last, text = _last_stamp
    if t is last:
        # The channels of one poll share their time stamp object: format it once.
        return text
    utc = t if t.tzinfo is UTC else t.astimezone(UTC)
    # isoformat is implemented in C; strftime is several times slower on the hot path.
    text = utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last_stamp = (t, text)
    return text


def rfc3339_from_epoch(epoch: float) -> str:
    """Epoch seconds as RFC 3339 UTC with a `Z`."""
    return rfc3339(datetime.fromtimestamp(epoch, UTC))


def rfc3339_now() -> str:
    """Now, as RFC 3339 UTC with a `Z`."""
    return rfc3339(datetime.now(UTC))


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_lock = threading.Lock()
_id_next = 1


def new_id() -> str:
    """A unique item id (consumers deduplicate on it).

    64 random bits drawn once per process, then a counter: unique across restarts and agents
    without a system call per reading.
    """
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """`n` unique item ids at once (one counter step per batch)."""
    global _id_next  # noqa: PLW0603 - the process-wide counter
    with _id_lock:
        first = _id_next
        _id_next += n
    prefix = _ID_PREFIX
    return [f"{prefix}{i:012x}" for i in range(first, first + n)]


@dataclass(slots=True, kw_only=True)
class Reading:
    """One converted, decay-corrected reading, as published in a `readings` envelope."""

    device: str
    channel: str
    t: datetime
    value: JSONScalar
    unit: str | None
    quality: Quality
    raw_value: JSONScalar
    raw_unit: str | None
    raw_text: str | None = None
    reason: str | None = None
    nuclide: str | None = None
    ref_time: datetime | None = None
    value_at_ref: float | None = None
    kind: SampleKind = SampleKind.READING
    clock_trusted: bool = True
    attrs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)

    def to_item(self) -> dict[str, Any]:
        """The JSON item of docs/contract.md §3."""
        item = reading_item(
            item_id=self.id, device=self.device, channel=self.channel, t=rfc3339(self.t),
            value=self.value, unit=self.unit, quality=_QUALITY_TEXT[self.quality],
            raw=raw_member(self.raw_value, self.raw_unit, self.raw_text),
        )
        if self.kind is not SampleKind.READING:
            item["kind"] = self.kind.value
        if self.reason is not None:
            item["reason"] = self.reason
        if self.nuclide is not None:
            item["nuclide"] = self.nuclide
        if self.ref_time is not None:
            item["ref_time"] = rfc3339(self.ref_time)
            item["value_at_ref"] = self.value_at_ref
        if not self.clock_trusted:
            item["clock"] = CLOCK_UNTRUSTED
        for key, value in self.attrs.items():
            item.setdefault(key, value)
        return item

    @classmethod
    def from_plain_item(cls, item: dict[str, Any]) -> Reading:
        """The `Reading` of a plain item (agent.core.items.plain_items: a good number)."""
        raw = item["raw"]
        return cls(
            device=item["device"], channel=item["channel"], t=datetime.fromisoformat(item["t"]),
            value=item["value"], unit=item["unit"], quality=Quality(item["quality"]),
            raw_value=raw["value"], raw_unit=raw["unit"], raw_text=raw.get("text"),
            clock_trusted=clock_trusted(item), id=item["id"],
        )


def event_item(event: str, **fields: Any) -> dict[str, Any]:
    """An item of the `alerts` or `audit` stream: unique id, time, event name, fields."""
    item: dict[str, Any] = {"id": new_id(), "t": rfc3339(datetime.now(UTC)), "event": event}
    item.update(fields)
    return item


def dumps_item(item: dict[str, Any]) -> str:
    """A stream item as JSON text, compact UTF-8 (orjson: this runs once per reading)."""
    return orjson.dumps(item, default=str).decode("utf-8")
