"""The reading item of a `readings` envelope (docs/contract.md §3), spelled once.

The pipeline builds items here (one at a time from a `Reading`, or a plain poll's batch at
once), reads them back here (QC gets a `Reading` of a plain item), and the central record
knows from `COLUMNS` which members have a column of their own (the rest of an item is kept
in its `extra`, and all of it in the signed evidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Every reading has these members, in this order.
REQUIRED = ("id", "device", "channel", "t", "value", "unit", "quality", "raw")
# Present only when they apply (`kind` for events of a device, `clock` when the agent's clock
# is not trusted, `ref_time`/`value_at_ref` for a decay-corrected activity).
OPTIONAL = ("kind", "reason", "nuclide", "ref_time", "value_at_ref", "clock")
# The members the central record stores in columns of their own (`raw`: in the evidence).
COLUMNS = frozenset({"id", "device", "channel", "t", "value", "unit", "quality", "nuclide",
                     "raw"})
QUALITIES = ("good", "uncertain", "bad")
CLOCK_UNTRUSTED = "untrusted"  # the value of `clock`


def raw_member(value: Any, unit: str | None, text: str | None = None) -> dict[str, Any]:
    """`raw`: the value and unit as the device gave them, its text line when there was one."""
    if text is None:
        return {"value": value, "unit": unit}
    return {"value": value, "unit": unit, "text": text}


def reading_item(*, item_id: str, device: str, channel: str, t: str, value: Any,
                 unit: str | None, quality: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The required members of one reading (the caller adds the optional ones that apply)."""
    return {"id": item_id, "device": device, "channel": channel, "t": t, "value": value,
            "unit": unit, "quality": quality, "raw": raw}


def plain_items(ids: Sequence[str], device: str, channels: Sequence[str], *,
                t: str | Sequence[str], values: Sequence[Any], units: Sequence[str | None],
                raw_values: Sequence[Any], raw_units: Sequence[str | None],
                raw_texts: Sequence[str | None] | None,
                clock_trusted: bool) -> list[dict[str, Any]]:
    """The items of a poll of good values (the hot path: no objects).

    `t`: the time stamp they share, or one per item.
    """
    texts = raw_texts or [None] * len(values)
    stamps = [t] * len(values) if isinstance(t, str) else t
    items = [
        {"id": item_id, "device": device, "channel": channel, "t": stamp, "value": value,
         "unit": unit, "quality": "good",
         "raw": {"value": raw, "unit": raw_unit} if text is None
         else {"value": raw, "unit": raw_unit, "text": text}}
        for item_id, channel, stamp, value, unit, raw, raw_unit, text in zip(
            ids, channels, stamps, values, units, raw_values, raw_units, texts, strict=True)
    ]
    if not clock_trusted:
        for item in items:
            item["clock"] = CLOCK_UNTRUSTED
    return items


def clock_trusted(item: dict[str, Any]) -> bool:
    """Whether the agent trusted its clock when it stamped this item."""
    return item.get("clock") != CLOCK_UNTRUSTED
