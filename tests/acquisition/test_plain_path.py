"""A poll of plain values takes the pipeline's fast path and publishes what the general path
would: item for item the same, but for the ids (coils and discrete inputs are booleans)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.acquisition.pipeline import Pipeline
from agent.acquisition.state import LiveState
from drivers.base import DeviceConfigBase, SampleBatch


class RecordingOutbox:
    """What the pipeline hands over, as items (the outbox's own tests cover the rest)."""

    batch_max_items = 500

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def submit_batch(self, stream: str, device: str, n_items: int, items_json: str) -> None:
        assert (stream, device) == ("readings", "plc-1")
        batch = json.loads(f"[{items_json}]")
        assert len(batch) == n_items
        self.items.extend(batch)


def batch(values: list[Any], units: list[str | None]) -> SampleBatch:
    channels = [f"ch{i}" for i in range(len(values))]
    t = datetime(2026, 12, 6, 3, 50, 1, 250_000, tzinfo=UTC)
    raw_texts = [f"co {i}: 0001" for i in range(len(values))]
    return SampleBatch("plc-1", t, channels, values, units, raw_texts)


def items_of(polls: list[SampleBatch], *, one_by_one: bool) -> list[dict[str, Any]]:
    outbox = RecordingOutbox()
    config = DeviceConfigBase(id="plc-1", type="scripted")
    pipeline = Pipeline(outbox, LiveState(), {"plc-1": config})  # type: ignore[arg-type]
    for poll in polls:
        if one_by_one:
            for sample in poll.samples():
                pipeline.process(sample)
        else:
            pipeline.process_batch(poll)
    return [{k: v for k, v in item.items() if k != "id"} for item in outbox.items]


def test_a_poll_of_booleans_and_numbers_publishes_the_general_paths_items():
    several_requests = batch([1.5, 2.5, True, 9], ["Pa", "Pa", None, "1/m3"])
    start = several_requests.t
    # A poll of several requests: each request's values have its own time stamp.
    several_requests.times = [start, start, start + timedelta(milliseconds=3),
                              start + timedelta(milliseconds=7)]  # fmt: skip
    polls = [
        batch([12.5, True, 7, False, 0.25], ["uSv/h", None, "Pa", "1", "mSv/h"]),
        batch([False, True], [None, None]),
        several_requests,
    ]
    fast = items_of(polls, one_by_one=False)
    general = items_of(polls, one_by_one=True)
    assert fast == general
    by_channel = {item["channel"]: item for item in fast[:5]}
    assert by_channel["ch1"]["value"] is True and by_channel["ch1"]["raw"]["value"] is True
    assert by_channel["ch3"] == {**by_channel["ch3"], "value": False, "unit": "1"}
    assert by_channel["ch4"]["value"] == 250.0 and by_channel["ch4"]["raw"]["unit"] == "mSv/h"
    stamps = [item["t"] for item in fast[-4:]]
    assert stamps[0] == stamps[1] == "2026-12-06T03:50:01.250000Z"
    assert stamps[2:] == ["2026-12-06T03:50:01.253000Z", "2026-12-06T03:50:01.257000Z"]
